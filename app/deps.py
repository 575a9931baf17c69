"""FastAPI dependencies shared by the routers."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from app.services import Services


# Both are ``async def`` although they never await: FastAPI runs a plain ``def`` dependency in
# its thread pool, a hop to another thread and back on every request (5 % of an accepted
# webhook's CPU in the profile, docs/benchmarks.md).
async def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


async def require_admin(request: Request, services: ServicesDep) -> None:
    """Operator endpoints: ``Authorization: Bearer <ADMIN_TOKEN>``, compared in constant time."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    expected = services.settings.admin_token.get_secret_value()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "admin token missing or wrong",
                            headers={"WWW-Authenticate": "Bearer"})


AdminDep = Depends(require_admin)
