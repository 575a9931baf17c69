"""Caterings records (from the listing API or the orders export) into planned deliveries.

The full sync and the orders import describe the *current state* of a user or an order, not an
event. They go through the same pure translation as the webhooks (``app.mapping``):

* a user -> the same ``USER_UPSERT`` as ``user.updated``;
* a paid order -> what ``order.paid`` plans: the user, ``purchase`` on each diet-simple, each
  diet-variant (active), ``reservation`` on it. Purchases and reservations carry dedupe keys, so
  one a webhook already fired is not fired again;
* a cancelled order -> what ``order.cancelled`` plans: the user and each diet-variant with
  ``active = false``, no event;
* a new (unpaid) order -> only the user. Its ``order`` event is not replayed: a backfilled
  "placed an order" fact would start cart-abandonment automations for long-settled orders.

``Batch`` then drops, before anything is written, what would make no difference in User.com:
facts already fired, an upsert equal to what User.com last confirmed (``id_map``), and an upsert
repeating the previous one for the same entity in the same batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app import idmap
from app.caterings.schemas import Order, User, UserEvent, describe_validation_error
from app.delivery import repository
from app.delivery.plan import PRODUCT_UPSERT, USER_UPSERT, PlannedDelivery
from app.mapping import plan_caterings_event, plan_order
from app.models import BusinessFact, IdMapEntry, utcnow


class InvalidRecord(ValueError):
    """A record that cannot be synced; the message names the record and the fields, no values."""


def _record_id(raw: Any) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("id"), str | int) and not isinstance(raw.get("id"), bool):
        return str(raw["id"])[:64]
    return "?"


def plan_user_record(raw: Any, *, tz: ZoneInfo) -> list[PlannedDelivery]:
    """A user as the listing API gives it -> its upsert. Raises ``InvalidRecord``."""
    try:
        user = User.model_validate(raw)
    except ValidationError as exc:
        raise InvalidRecord(f"user {_record_id(raw)}: {describe_validation_error(exc)}") from None
    return plan_caterings_event(UserEvent("user.updated", utcnow(), user), tz=tz)


def plan_order_record(raw: Any, *, tz: ZoneInfo) -> list[PlannedDelivery]:
    """An order as the listing API or the export gives it -> deliveries. Raises ``InvalidRecord``."""
    try:
        order = Order.model_validate(raw)
    except ValidationError as exc:
        raise InvalidRecord(f"order {_record_id(raw)}: {describe_validation_error(exc)}") from None
    return plan_order_state(order, tz=tz)


def plan_order_state(order: Order, *, tz: ZoneInfo) -> list[PlannedDelivery]:
    occurred_at: datetime = order.paid_at or order.created_at or utcnow()
    if order.status == "paid":
        return plan_order(order, event_type="order.paid", occurred_at=occurred_at, tz=tz)
    if order.status == "cancelled":
        return plan_order(order, event_type="order.cancelled", occurred_at=occurred_at, tz=tz)
    if order.status == "new":
        return plan_caterings_event(UserEvent("user.updated", occurred_at, order.user), tz=tz)
    raise InvalidRecord(f"order {order.id}: status {order.status!r} is not one of new, paid, cancelled")


# --- the batch that goes into the outbox -------------------------------------------------------


def _entity(delivery: PlannedDelivery) -> tuple[str, str] | None:
    """The id-map key of an upsert (whose repeats can be skipped), else None."""
    if delivery.kind == USER_UPSERT:
        return idmap.USER, str(delivery.payload["body"]["custom_id"])
    if delivery.kind == PRODUCT_UPSERT:
        return idmap.PRODUCT, str(delivery.payload["custom_id"])
    return None


def _body(delivery: PlannedDelivery) -> Any:
    return delivery.payload["body"]


@dataclass
class Batch:
    """Planned deliveries of one page (or one chunk of a file), filtered before they are stored."""

    planned: list[PlannedDelivery] = field(default_factory=list)

    def extend(self, deliveries: list[PlannedDelivery]) -> None:
        self.planned.extend(deliveries)

    async def filtered(self, session: AsyncSession) -> list[PlannedDelivery]:
        """Without facts already fired and upserts that would change nothing (read-only)."""
        entities = {key for d in self.planned if (key := _entity(d)) is not None}
        confirmed: dict[tuple[str, str], str | None] = {}
        if entities:
            rows = await session.execute(
                select(IdMapEntry.kind, IdMapEntry.custom_id, IdMapEntry.payload_hash).where(
                    tuple_(IdMapEntry.kind, IdMapEntry.custom_id).in_(list(entities))
                )
            )
            confirmed = {(kind, custom_id): digest for kind, custom_id, digest in rows}
        keys = {d.dedupe_key for d in self.planned if d.dedupe_key}
        fired: set[str] = set()
        if keys:
            fired = set(
                (await session.execute(select(BusinessFact.key).where(BusinessFact.key.in_(keys)))).scalars()
            )
        kept: list[PlannedDelivery] = []
        last: dict[tuple[str, str], str | None] = dict(confirmed)
        for delivery in self.planned:
            if delivery.dedupe_key:
                if delivery.dedupe_key in fired:
                    continue
                fired.add(delivery.dedupe_key)
                kept.append(delivery)
                continue
            key = _entity(delivery)
            if key is not None:
                digest = idmap.payload_hash(_body(delivery))
                if last.get(key) == digest:
                    continue
                last[key] = digest
            kept.append(delivery)
        return kept

    async def store(self, session: AsyncSession, *, inbound_id: int | None = None) -> int:
        """Put the filtered deliveries in the outbox (in the caller's transaction); how many."""
        kept = await self.filtered(session)
        added = await repository.enqueue(session, kept, inbound_id=inbound_id)
        return len(added)
