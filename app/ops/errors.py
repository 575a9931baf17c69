"""The store being away is not the client's fault, nor a bug: answer 503 with Retry-After.

Caterings (and User.com's automation) then send the webhook again later; nothing was stored, so
nothing is lost and nothing happens twice. Integrity and programming errors are bugs and stay 500.
"""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc

log = structlog.get_logger("app.ops.errors")

RETRY_AFTER_SECONDS = 5
_BUGS = (sa_exc.IntegrityError, sa_exc.DataError, sa_exc.ProgrammingError, sa_exc.NotSupportedError)


def store_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, _BUGS):
        return False
    return isinstance(exc, (sa_exc.DBAPIError, sa_exc.TimeoutError, ConnectionError))


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    if not store_unavailable(exc):
        raise exc
    log.warning("store unavailable: answered 503", path=request.url.path, error=type(exc).__name__)
    return JSONResponse(
        {"detail": "the store is unavailable; try again later"}, status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def install(app: FastAPI) -> None:
    for error in (sa_exc.DBAPIError, sa_exc.TimeoutError, ConnectionError):
        app.add_exception_handler(error, _store_unavailable)
