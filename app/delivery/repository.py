"""Every query on the outbox. Callers own the transaction unless a function says otherwise."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    String,
    and_,
    bindparam,
    delete,
    exists,
    func,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased
from sqlalchemy.sql.selectable import Alias

from app.db import dialect_of, insert_for
from app.delivery.plan import PlannedDelivery, target_of
from app.models import BusinessFact, Delivery, InboundEvent, utcnow

OPEN_STATES = ("pending", "in_flight")


async def claim_fact(session: AsyncSession, key: str) -> bool:
    """Record a business fact; False when it was already recorded (it must not fire again)."""
    return key in await claim_facts(session, [key])


async def claim_facts(session: AsyncSession, keys: Sequence[str]) -> set[str]:
    """Record several business facts in one statement; returns those recorded now (the others had
    fired already). Sorted, so two transactions claiming the same facts take them in one order."""
    wanted = sorted(set(keys))
    if not wanted:
        return set()
    # One statement with a list of parameters: SQLAlchemy compiles it once (cached) and sends the
    # rows as one multi-row INSERT ("insertmanyvalues"); .values([...]) would compile every time.
    now = utcnow()
    result = await session.execute(_claim_facts_statement(dialect_of(session)),
                                   [{"key": key, "created_at": now} for key in wanted])
    return set(result.scalars().all())


@functools.cache
def _claim_facts_statement(dialect: str) -> Any:
    table = BusinessFact.__table__
    return insert_for(dialect)(table).on_conflict_do_nothing().returning(table.c.key)


async def enqueue(
    session: AsyncSession,
    planned: Sequence[PlannedDelivery],
    *,
    inbound_id: int | None = None,
    now: datetime | None = None,
) -> list[Delivery]:
    """Add planned deliveries to the outbox, dropping business facts that already fired.

    On PostgreSQL the transaction first takes a lock per lane (held until it commits), so the ids
    of one lane are handed out in commit order: whoever sees a delivery also sees every older one
    of its lane. The claim relies on that. Call it once per transaction (or with lanes in the
    same order every time) so two transactions never wait on each other's lanes.
    """
    return await enqueue_groups(session, [(inbound_id, planned)], now=now)


async def enqueue_groups(
    session: AsyncSession,
    groups: Sequence[tuple[int | None, Sequence[PlannedDelivery]]],
    *,
    now: datetime | None = None,
) -> list[Delivery]:
    """``enqueue`` for several inbound records at once (each with its planned deliveries), in
    order: a business fact planned by two of them fires for the first."""
    now = now or utcnow()
    await lock_lanes(session, {item.lane for _inbound, planned in groups for item in planned})
    # All facts in one statement, before any delivery is added (one at a time, each claim was a
    # statement of its own and made the session flush the deliveries added so far one by one).
    fresh = await claim_facts(
        session, [item.dedupe_key for _inbound, planned in groups for item in planned if item.dedupe_key]
    )
    rows: list[dict[str, Any]] = []
    for inbound_id, planned in groups:
        for item in planned:
            if item.dedupe_key:
                if item.dedupe_key not in fresh:
                    continue
                fresh.discard(item.dedupe_key)  # a fact planned twice in one batch fires once
            rows.append({
                "inbound_id": inbound_id, "kind": item.kind, "target": target_of(item.kind), "lane": item.lane,
                "payload": item.payload, "state": "pending", "attempts": 0, "throttled": 0,
                "created_at": now, "next_attempt_at": now, "updated_at": now,
            })
    if dialect_of(session) == "sqlite":
        return await _insert_on_sqlite(session, rows)
    added = [Delivery(**row) for row in rows]
    session.add_all(added)  # one INSERT for all of them on PostgreSQL (insertmanyvalues)
    await session.flush()
    return added


async def _insert_on_sqlite(session: AsyncSession, rows: list[dict[str, Any]]) -> list[Delivery]:
    """The deliveries in one multi-row ``INSERT``; the returned objects are not in the session.

    The ORM inserts row by row on SQLite, because SQLite does not promise the order of the rows
    ``RETURNING`` gives back: three statements more for an ``order.paid`` of one item. One
    statement inserts its rows in ``VALUES`` order, under the database's single write lock, each
    with the next rowid: sorted, the ids it returns match the rows in order.
    """
    if not rows:
        return []
    result = await session.execute(_INSERT_DELIVERIES_ON_SQLITE, rows)
    ids = sorted(result.scalars().all())
    return [Delivery(id=delivery_id, **row) for delivery_id, row in zip(ids, rows, strict=True)]


# On the table, not the ORM entity: the ORM's bulk-insert path cost more CPU than the insert.
_INSERT_DELIVERIES_ON_SQLITE = sqlite_insert(Delivery.__table__).returning(Delivery.__table__.c.id)


# Lanes are locked by a 64-bit hash of their name; a collision only makes two lanes wait on each
# other while they enqueue. Sorted, so two transactions take them in the same order.
_LOCK_LANES = text(
    "SELECT pg_advisory_xact_lock(h) FROM "
    "(SELECT DISTINCT hashtextextended(lane, 0) AS h FROM unnest(:lanes) AS lane ORDER BY h) AS locks"
).bindparams(bindparam("lanes", type_=ARRAY(String)))


async def lock_lanes(session: AsyncSession, lanes: set[str]) -> None:
    """PostgreSQL: lock the lanes until the transaction ends (SQLite has one writer at a time)."""
    if lanes and dialect_of(session) == "postgresql":
        await session.execute(_LOCK_LANES, {"lanes": sorted(lanes)})


class _OpenDeliveries(Alias):
    """``deliveries`` under another name, which SQLite reads through the index of open ids."""

    inherit_cache = True


@compiles(_OpenDeliveries, "sqlite")
def _indexed_by_open(element: Any, compiler: Any, **kw: Any) -> str:
    text_ = compiler.visit_alias(element, **kw)
    return f"{text_} INDEXED BY ix_deliveries_open" if kw.get("asfrom") else text_


# With a backlog, SQLite's planner sorts every open delivery found through ix_deliveries_claim
# (about 60 ms a claim at 10,000 pending, holding the one write lock) rather than walking the
# partial index of open ids in order and stopping at the limit; and it cannot use that index at
# all while the states are bound parameters. So on SQLite the claim names the index and spells
# the states out (docs/benchmarks.md).
_OPEN_ON_SQLITE = aliased(Delivery, _OpenDeliveries._construct(Delivery.__table__, name="open_delivery"))
_OPEN_STATES_SQL = [literal_column(f"'{state}'") for state in OPEN_STATES]


def _claimable(
    now: datetime, target: str | None, targets: Sequence[str] | None = None, d: Any = Delivery,
    open_states: Sequence[Any] = OPEN_STATES,
) -> Any:
    other = aliased(Delivery)
    # A delivery waits while another of its lane is in flight (whatever its age: a replayed dead
    # delivery must not overtake one already on its way), or while an older one is pending.
    blocked = exists().where(
        other.lane == d.lane,
        other.id != d.id,
        or_(other.state == "in_flight", and_(other.state == "pending", other.id < d.id)),
    )
    due = (d.state == "pending") & (d.next_attempt_at <= now)
    lease_expired = (d.state == "in_flight") & (d.lease_until < now)
    # The first term is implied by the second; it is there for the partial index on open ids,
    # so a claim never walks through the done deliveries that pile up before the purge.
    condition = d.state.in_(list(open_states)) & (due | lease_expired) & ~blocked
    if target:
        condition = condition & (d.target == target)
    if targets is not None:
        condition = condition & d.target.in_(list(targets))
    return condition


async def claim(
    session: AsyncSession,
    *,
    worker_id: str,
    limit: int,
    lease_seconds: float,
    target: str | None = None,
    targets: Sequence[str] | None = None,
    now: datetime | None = None,
) -> list[Delivery]:
    """Lease up to ``limit`` due deliveries, at most one per lane, in one statement.

    On PostgreSQL the candidate rows are locked with FOR UPDATE SKIP LOCKED, so concurrent
    workers never claim the same row: a row another claim holds is skipped, and a row another
    claim has already leased fails the re-check PostgreSQL makes on its newest version (READ
    COMMITTED). On SQLite the single UPDATE runs under the database's one writer lock, which gives
    the same guarantee. Why two deliveries of one lane are never in flight at once is argued in
    docs/operations.md ("Why the claim is safe"). ``targets`` limits the claim to those upstream
    systems (the worker leaves out one that asked it to wait). The caller commits.
    """
    now = now or utcnow()
    if targets is not None and not targets:
        return []
    on_postgresql = dialect_of(session) == "postgresql"
    d = Delivery if on_postgresql else _OPEN_ON_SQLITE
    states = OPEN_STATES if on_postgresql else _OPEN_STATES_SQL
    candidates = select(d.id).where(_claimable(now, target, targets, d, states)).order_by(d.id).limit(limit)
    if on_postgresql:
        # In a CTE, so the locking LIMIT query runs exactly once whatever plan is chosen.
        locked = candidates.with_for_update(skip_locked=True).cte("claimable")
        chosen: Any = Delivery.id.in_(select(locked.c.id))
    else:
        chosen = Delivery.id.in_(candidates.scalar_subquery())
    statement = (
        update(Delivery)
        .where(chosen)
        .values(state="in_flight", leased_by=worker_id, lease_until=now + timedelta(seconds=lease_seconds), updated_at=now)
        .returning(Delivery)
        .execution_options(synchronize_session=False)
    )
    rows = (await session.execute(statement)).scalars().all()
    # One statement sees one snapshot, in which only the oldest open delivery of a lane passes
    # the NOT EXISTS: never two of one lane in a single claim.
    return sorted(rows, key=lambda d: d.id)


def _owned(delivery_id: Any, worker_id: Any) -> Any:
    # Fencing: only the worker that holds the lease may settle a delivery.
    return (Delivery.id == delivery_id) & (Delivery.leased_by == worker_id) & (Delivery.state == "in_flight")


async def mark_done(session: AsyncSession, delivery_id: int, worker_id: str, outcome: str, status: int | None) -> bool:
    now = utcnow()
    result = await session.execute(_MARK_DONE, {
        "delivery_id": delivery_id, "worker_id": worker_id, "outcome": outcome, "now": now, "status": status,
    })
    return bool(result.rowcount)


# Every delivery ends here: built once, on the table (app/db.py says why), fenced by ``_owned``.
_DELIVERIES = Delivery.__table__
_MARK_DONE = (
    update(_DELIVERIES)
    .where(_owned(bindparam("delivery_id"), bindparam("worker_id")))
    .values(
        state="done", outcome=bindparam("outcome"), done_at=bindparam("now"), updated_at=bindparam("now"),
        lease_until=None, last_status=bindparam("status"), attempts=_DELIVERIES.c.attempts + 1,
    )
)


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


async def renew_leases(
    session: AsyncSession, delivery_ids: Sequence[int], worker_id: str, lease_seconds: float,
    now: datetime | None = None,
) -> set[int]:
    """Extend the leases this worker still holds (a heartbeat); the ids it still holds."""
    if not delivery_ids:
        return set()
    now = now or utcnow()
    result = await session.execute(
        update(Delivery)
        .where(Delivery.id.in_(list(delivery_ids)), Delivery.leased_by == worker_id, Delivery.state == "in_flight")
        .values(lease_until=now + timedelta(seconds=lease_seconds))
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    )
    return set(result.scalars().all())


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


# --- operators: dead letters, replay, retention


async def list_deliveries(
    session: AsyncSession, *, state: str | None, limit: int, after_id: int | None = None, kind: str | None = None
) -> list[Delivery]:
    """Deliveries by id (keyset pagination: pass the last id seen as ``after_id``)."""
    query = select(Delivery).order_by(Delivery.id).limit(limit)
    if state is not None:
        query = query.where(Delivery.state == state)
    if kind is not None:
        query = query.where(Delivery.kind == kind)
    if after_id is not None:
        query = query.where(Delivery.id > after_id)
    return list((await session.execute(query)).scalars().all())


def _replay_values(now: datetime) -> dict[str, Any]:
    # The last status and error stay, so an operator still sees why it had died until it is tried.
    return {
        "state": "pending", "attempts": 0, "throttled": 0, "next_attempt_at": now, "lease_until": None,
        "leased_by": None, "done_at": None, "outcome": None, "updated_at": now,
    }


async def retry_dead(session: AsyncSession, delivery_id: int, now: datetime | None = None) -> str:
    """Put one dead delivery back to pending now: "retried", "not_found" or the state it is in."""
    now = now or utcnow()
    result = await session.execute(
        update(Delivery).where(Delivery.id == delivery_id, Delivery.state == "dead").values(**_replay_values(now))
    )
    if result.rowcount:
        return "retried"
    state = await session.scalar(select(Delivery.state).where(Delivery.id == delivery_id))
    return "not_found" if state is None else str(state)


async def retry_all_dead(
    session: AsyncSession, *, since: datetime | None = None, kind: str | None = None, now: datetime | None = None
) -> int:
    """Put every dead delivery (parked at or after ``since``) back to pending now; how many."""
    now = now or utcnow()
    statement = update(Delivery).where(Delivery.state == "dead")
    if since is not None:
        statement = statement.where(Delivery.updated_at >= since)
    if kind is not None:
        statement = statement.where(Delivery.kind == kind)
    result = await session.execute(statement.values(**_replay_values(now)).execution_options(synchronize_session=False))
    return int(result.rowcount or 0)


async def purge_done_deliveries(session: AsyncSession, before: datetime, *, batch: int = 5000) -> int:
    """Delete up to ``batch`` deliveries done before ``before``; how many (call until 0)."""
    ids = select(Delivery.id).where(Delivery.state == "done", Delivery.done_at < before).limit(batch)
    result = await session.execute(
        delete(Delivery).where(Delivery.id.in_(ids.scalar_subquery())).execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


async def purge_inbound_events(session: AsyncSession, before: datetime, *, batch: int = 5000) -> int:
    """Delete up to ``batch`` inbound records received before ``before`` whose deliveries are all
    gone or done (one still pending, in flight or dead keeps its record for operators)."""
    unsettled = exists().where(Delivery.inbound_id == InboundEvent.id, Delivery.state != "done")
    ids = select(InboundEvent.id).where(InboundEvent.received_at < before, ~unsettled).limit(batch)
    result = await session.execute(
        delete(InboundEvent).where(InboundEvent.id.in_(ids.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


async def count_purgeable(session: AsyncSession, before: datetime) -> dict[str, int]:
    unsettled = exists().where(Delivery.inbound_id == InboundEvent.id, Delivery.state != "done")
    deliveries = await session.scalar(
        select(func.count()).select_from(Delivery).where(Delivery.state == "done", Delivery.done_at < before)
    )
    inbound = await session.scalar(
        select(func.count()).select_from(InboundEvent).where(InboundEvent.received_at < before, ~unsettled)
    )
    return {"deliveries": int(deliveries or 0), "inbound_events": int(inbound or 0)}
