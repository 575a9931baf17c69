"""Operator API on the outbox: summary, listing (dead letters), one delivery, replay."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

import structlog
from fastapi import APIRouter, HTTPException, Path, Query, status

from app.delivery import repository
from app.deps import AdminDep, ServicesDep
from app.models import Delivery

router = APIRouter(tags=["operators"], dependencies=[AdminDep])
log = structlog.get_logger("app.ops.deliveries")

State = Literal["pending", "in_flight", "done", "dead"]
MAX_ID = 2**63 - 1  # a BIGINT: anything larger is a 422, never a database error
DeliveryId = Path(ge=1, le=MAX_ID)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def describe(delivery: Delivery, *, with_payload: bool = False) -> dict[str, Any]:
    described: dict[str, Any] = {
        "id": delivery.id,
        "kind": delivery.kind,
        "target": delivery.target,
        "lane": delivery.lane,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "throttled": delivery.throttled,
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "outcome": delivery.outcome,
        "inbound_id": delivery.inbound_id,
        "created_at": _iso(delivery.created_at),
        "updated_at": _iso(delivery.updated_at),
        "next_attempt_at": _iso(delivery.next_attempt_at),
        "done_at": _iso(delivery.done_at),
    }
    if with_payload:
        described["payload"] = delivery.payload
    return described


@router.get("/deliveries/summary")
async def deliveries_summary(services: ServicesDep) -> dict[str, object]:
    """Counts by state, and the age of the oldest delivery still to make."""
    async with services.sessions() as session:
        by_state = await repository.counts_by_state(session)
        oldest = await repository.oldest_open_created_at(session)
    return {"by_state": by_state, "oldest_open_created_at": oldest.isoformat() if oldest else None}


@router.get("/deliveries")
async def list_deliveries(
    services: ServicesDep,
    state: State | None = None,
    kind: str | None = Query(None, max_length=40),
    limit: int = Query(100, ge=1, le=500),
    after_id: int | None = Query(None, ge=0, le=MAX_ID, description="the last id of the previous page"),
) -> dict[str, Any]:
    """Deliveries oldest first, e.g. ``?state=dead`` for the parked ones with their last error.
    Page on with ``after_id`` = the ``next_after_id`` of the previous answer (null: no more)."""
    async with services.sessions() as session:
        rows = await repository.list_deliveries(session, state=state, kind=kind, limit=limit, after_id=after_id)
    return {
        "items": [describe(d) for d in rows],
        "next_after_id": rows[-1].id if len(rows) == limit else None,
    }


@router.post("/deliveries/retry")
async def retry_many(
    services: ServicesDep,
    state: Literal["dead"] = Query(..., description="only dead deliveries are replayed"),
    since: datetime | None = Query(None, description="only those parked at or after this ISO 8601 time"),
    kind: str | None = Query(None, max_length=40),
) -> dict[str, Any]:
    """Replay every dead delivery (optionally: parked since a time, of one kind): pending now,
    attempts reset."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=timezone.utc)
    async with services.sessions.begin() as session:
        count = await repository.retry_all_dead(session, since=since, kind=kind)
    if count:
        services.wake_worker()
    log.info("dead deliveries replayed", count=count, since=_iso(since), kind=kind)
    return {"retried": count}


@router.get("/deliveries/{delivery_id}")
async def get_delivery(services: ServicesDep, delivery_id: int = DeliveryId) -> dict[str, Any]:
    """One delivery, with what it will send."""
    async with services.sessions() as session:
        delivery = await session.get(Delivery, delivery_id)
    if delivery is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no delivery {delivery_id}")
    return describe(delivery, with_payload=True)


@router.post("/deliveries/{delivery_id}/retry")
async def retry_one(services: ServicesDep, delivery_id: int = DeliveryId) -> dict[str, Any]:
    """Replay one dead delivery: pending now, attempts reset. 404 unknown, 409 when not dead."""
    async with services.sessions.begin() as session:
        outcome = await repository.retry_dead(session, delivery_id)
    if outcome == "not_found":
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no delivery {delivery_id}")
    if outcome != "retried":
        raise HTTPException(status.HTTP_409_CONFLICT, f"delivery {delivery_id} is {outcome}, not dead")
    services.wake_worker()
    log.info("dead delivery replayed", delivery_id=delivery_id)
    return {"id": delivery_id, "state": "pending"}
