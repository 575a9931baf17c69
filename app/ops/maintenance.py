"""Retention: purge what the bridge no longer needs, never what keeps it correct.

Done deliveries and inbound records older than ``RETENTION_DAYS`` go. Never touched: ``id_map``
(what User.com knows), ``business_facts`` (what fired once must never fire again), the consent
state and its audit log, and any delivery still pending, in flight or dead (an inbound record
keeps as long as one of its deliveries is not done).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import structlog
from fastapi import APIRouter, Query
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.delivery import repository
from app.deps import AdminDep, ServicesDep
from app.models import utcnow

log = structlog.get_logger("app.ops.maintenance")


@dataclass
class PurgeReport:
    cutoff: datetime
    dry_run: bool
    deliveries: int
    inbound_events: int

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "cutoff": self.cutoff.isoformat()}


async def purge(
    sessions: async_sessionmaker[AsyncSession], *, retention_days: float, dry_run: bool = False,
    now: datetime | None = None, batch: int = 5000,
) -> PurgeReport:
    """Delete in batches (short transactions, so the workers are never held up for long)."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    if dry_run:
        async with sessions() as session:
            counts = await repository.count_purgeable(session, cutoff)
        return PurgeReport(cutoff, True, counts["deliveries"], counts["inbound_events"])
    deliveries = inbound = 0
    while True:
        async with sessions.begin() as session:
            removed = await repository.purge_done_deliveries(session, cutoff, batch=batch)
        deliveries += removed
        if removed < batch:
            break
    while True:
        async with sessions.begin() as session:
            removed = await repository.purge_inbound_events(session, cutoff, batch=batch)
        inbound += removed
        if removed < batch:
            break
    log.info("purged", deliveries=deliveries, inbound_events=inbound, cutoff=cutoff.isoformat())
    return PurgeReport(cutoff, False, deliveries, inbound)


router = APIRouter(tags=["operators"], dependencies=[AdminDep])


@router.post("/maintenance/purge")
async def purge_now(
    services: ServicesDep,
    older_than_days: float | None = Query(None, gt=0, le=36500, description="default: RETENTION_DAYS"),
    dry_run: bool = False,
) -> dict[str, object]:
    """Delete done deliveries and inbound records older than the retention (or ``older_than_days``)."""
    days = older_than_days if older_than_days is not None else services.settings.retention_days
    report = await purge(services.sessions, retention_days=days, dry_run=dry_run)
    return report.as_dict()
