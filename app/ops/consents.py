"""Operator API on the consent audit log: ``GET /consents?user_id=``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from app import consents
from app.deps import AdminDep, ServicesDep
from app.models import ConsentLog

router = APIRouter(tags=["operators"], dependencies=[AdminDep])


def _row(entry: ConsentLog) -> dict[str, Any]:
    return {
        "id": entry.id,
        "user_id": entry.user_id,
        "marketing": entry.marketing,
        "source": entry.source,
        "occurred_at": entry.occurred_at.isoformat() if entry.occurred_at else None,
        "recorded_at": entry.recorded_at.isoformat() if entry.recorded_at else None,
        "status": entry.status,
        "delivery_id": entry.delivery_id,
        "detail": entry.detail,
    }


@router.get("/consents")
async def consent_log(
    services: ServicesDep,
    user_id: str | None = Query(None, max_length=255, description="a Caterings user id; all users when absent"),
    status: str | None = Query(None, max_length=16, description="only entries in this status"),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    """Every consent message, newest first; with ``user_id``, also the value the bridge knows now."""
    async with services.sessions() as session:
        entries = await consents.history(session, user_id, limit, status)
        current = await consents.known(session, user_id) if user_id is not None else None
    answer: dict[str, Any] = {"items": [_row(e) for e in entries]}
    if user_id is not None:
        answer["user_id"] = user_id
        answer["current"] = None if current is None else {
            "marketing": current.marketing, "changed_at": current.changed_at.isoformat(), "source": current.source,
        }
    return answer
