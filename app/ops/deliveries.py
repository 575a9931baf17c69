"""Operator API on the outbox."""

from __future__ import annotations

from fastapi import APIRouter

from app.delivery import repository
from app.deps import AdminDep, ServicesDep

router = APIRouter(tags=["operators"], dependencies=[AdminDep])


@router.get("/deliveries/summary")
async def deliveries_summary(services: ServicesDep) -> dict[str, object]:
    """Counts by state, and the age of the oldest delivery still to make."""
    async with services.sessions() as session:
        by_state = await repository.counts_by_state(session)
        oldest = await repository.oldest_open_created_at(session)
    return {"by_state": by_state, "oldest_open_created_at": oldest.isoformat() if oldest else None}
