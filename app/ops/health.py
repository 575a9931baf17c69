"""The orchestrator's probes: liveness and readiness."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.deps import ServicesDep
from app.migrate import current_revision, head_revision

router = APIRouter(tags=["probes"])


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(services: ServicesDep) -> JSONResponse:
    try:
        async with asyncio.timeout(5):
            async with services.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            current = await current_revision(services.engine)
    except Exception as exc:  # any failure to reach the database means not ready
        return JSONResponse({"status": "not ready", "reason": f"database unreachable: {type(exc).__name__}"}, 503)
    head = head_revision(services.settings.database_url)
    if current != head:
        return JSONResponse(
            {"status": "not ready", "reason": f"database at migration {current}, code expects {head}"}, 503
        )
    return JSONResponse({"status": "ready", "migration": current})
