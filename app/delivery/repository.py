"""Every query on the outbox. Callers own the transaction unless a function says otherwise."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.delivery.plan import PlannedDelivery, target_of
from app.models import BusinessFact, Delivery, utcnow

OPEN_STATES = ("pending", "in_flight")


def _insert_ignoring_conflicts(session: AsyncSession, table: Any, values: dict[str, Any]) -> Any:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return insert(table).values(**values).on_conflict_do_nothing()


async def claim_fact(session: AsyncSession, key: str) -> bool:
    """Record a business fact; False when it was already recorded (it must not fire again)."""
    result = await session.execute(_insert_ignoring_conflicts(session, BusinessFact, {"key": key}))
    return bool(result.rowcount)


async def enqueue(
    session: AsyncSession,
    planned: Sequence[PlannedDelivery],
    *,
    inbound_id: int | None = None,
    now: datetime | None = None,
) -> list[Delivery]:
    """Add planned deliveries to the outbox, dropping business facts that already fired."""
    now = now or utcnow()
    added: list[Delivery] = []
    for item in planned:
        if item.dedupe_key and not await claim_fact(session, item.dedupe_key):
            continue
        delivery = Delivery(
            inbound_id=inbound_id,
            kind=item.kind,
            target=target_of(item.kind),
            lane=item.lane,
            payload=item.payload,
            state="pending",
            attempts=0,
            throttled=0,
            created_at=now,
            next_attempt_at=now,
            updated_at=now,
        )
        session.add(delivery)
        added.append(delivery)
    await session.flush()
    return added


def _claimable(now: datetime, target: str | None) -> Any:
    older = aliased(Delivery)
    blocked_by_older = exists().where(
        and_(older.lane == Delivery.lane, older.id < Delivery.id, older.state.in_(OPEN_STATES))
    )
    due = (Delivery.state == "pending") & (Delivery.next_attempt_at <= now)
    lease_expired = (Delivery.state == "in_flight") & (Delivery.lease_until < now)
    condition = (due | lease_expired) & ~blocked_by_older
    if target:
        condition = condition & (Delivery.target == target)
    return condition


async def claim(
    session: AsyncSession,
    *,
    worker_id: str,
    limit: int,
    lease_seconds: float,
    target: str | None = None,
    now: datetime | None = None,
) -> list[Delivery]:
    """Lease up to ``limit`` due deliveries, at most one per lane, in one statement.

    On PostgreSQL the candidate rows are locked with FOR UPDATE SKIP LOCKED, so concurrent
    workers never claim the same row. On SQLite the single UPDATE runs under the database's one
    writer lock, which gives the same guarantee. The caller commits.
    """
    now = now or utcnow()
    candidates = (
        select(Delivery.id).where(_claimable(now, target)).order_by(Delivery.id).limit(limit)
    )
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    statement = (
        update(Delivery)
        .where(Delivery.id.in_(candidates.scalar_subquery()))
        .values(state="in_flight", leased_by=worker_id, lease_until=now + timedelta(seconds=lease_seconds), updated_at=now)
        .returning(Delivery)
        .execution_options(synchronize_session=False)
    )
    rows = (await session.execute(statement)).scalars().all()
    # A lane whose older delivery is leased in this very statement is excluded by the NOT EXISTS
    # above, because both rows were pending when the statement started.
    return sorted(rows, key=lambda d: d.id)


def _owned(delivery_id: int, worker_id: str) -> Any:
    # Fencing: only the worker that holds the lease may settle a delivery.
    return (Delivery.id == delivery_id) & (Delivery.leased_by == worker_id) & (Delivery.state == "in_flight")


async def mark_done(session: AsyncSession, delivery_id: int, worker_id: str, outcome: str, status: int | None) -> bool:
    now = utcnow()
    result = await session.execute(
        update(Delivery)
        .where(_owned(delivery_id, worker_id))
        .values(
            state="done", outcome=outcome, done_at=now, updated_at=now, lease_until=None,
            last_status=status, attempts=Delivery.attempts + 1,
        )
    )
    return bool(result.rowcount)


async def schedule_retry(
    session: AsyncSession,
    delivery_id: int,
    worker_id: str,
    *,
    delay_seconds: float,
    counts_attempt: bool,
    status: int | None,
    error: str,
) -> bool:
    now = utcnow()
    values: dict[str, Any] = {
        "state": "pending",
        "next_attempt_at": now + timedelta(seconds=delay_seconds),
        "lease_until": None,
        "leased_by": None,
        "last_status": status,
        "last_error": error[:4000],
        "updated_at": now,
    }
    if counts_attempt:
        values["attempts"] = Delivery.attempts + 1
    else:
        values["throttled"] = Delivery.throttled + 1
    result = await session.execute(update(Delivery).where(_owned(delivery_id, worker_id)).values(**values))
    return bool(result.rowcount)


async def park_dead(session: AsyncSession, delivery_id: int, worker_id: str, *, status: int | None, error: str) -> bool:
    now = utcnow()
    result = await session.execute(
        update(Delivery)
        .where(_owned(delivery_id, worker_id))
        .values(
            state="dead", last_status=status, last_error=error[:4000], lease_until=None,
            updated_at=now, attempts=Delivery.attempts + 1,
        )
    )
    return bool(result.rowcount)


async def release(session: AsyncSession, delivery_ids: Sequence[int], worker_id: str) -> int:
    """Give leased deliveries back untouched (graceful shutdown)."""
    if not delivery_ids:
        return 0
    result = await session.execute(
        update(Delivery)
        .where(Delivery.id.in_(list(delivery_ids)), Delivery.leased_by == worker_id, Delivery.state == "in_flight")
        .values(state="pending", lease_until=None, leased_by=None, updated_at=utcnow())
    )
    return int(result.rowcount or 0)


async def counts_by_state(session: AsyncSession) -> dict[str, int]:
    rows = (await session.execute(select(Delivery.state, func.count()).group_by(Delivery.state))).all()
    return {state: count for state, count in rows}


async def oldest_open_created_at(session: AsyncSession) -> datetime | None:
    return (
        await session.execute(select(func.min(Delivery.created_at)).where(Delivery.state.in_(OPEN_STATES)))
    ).scalar_one_or_none()


async def next_due_at(session: AsyncSession) -> datetime | None:
    return (
        await session.execute(select(func.min(Delivery.next_attempt_at)).where(Delivery.state == "pending"))
    ).scalar_one_or_none()


