"""Pure translation of Caterings facts into User.com operations (contract §4).

No I/O: every function takes parsed Caterings models and returns payloads or planned deliveries.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from app.caterings.schemas import (
    CateringsEvent,
    Order,
    OrderEvent,
    OrderItem,
    User,
    UserDeletedEvent,
    UserEvent,
)
from app.delivery.plan import (
    PRODUCT_EVENT,
    PRODUCT_UPSERT,
    USER_DELETE,
    USER_UPSERT,
    PlannedDelivery,
    user_lane,
)
from app.normalize import local_midnight_utc_iso, truncate, unix_seconds, utc_iso

__all__ = [
    "diet_simple_custom_id",
    "plan_caterings_event",
    "plan_order",
    "product_name",
    "user_upsert_body",
    "variant_custom_id",
    "variant_product_body",
]

NAME_MAX = 40  # User.com's limit for first_name / last_name
PRODUCT_NAME_MAX = 256
# Variant names that say nothing beyond the diet's own name.
_PLAIN_VARIANTS = frozenset({"", "standard"})


# --- users -----------------------------------------------------------------------------------


def user_upsert_body(user: User) -> dict[str, Any]:
    """Body of ``POST users/update_or_create/``: only the fields the webhook carried."""
    present = user.model_fields_set
    body: dict[str, Any] = {"custom_id": user.id}

    def put(field: str, key: str, value: Any) -> None:
        if field in present:
            body[key] = value

    put("email", "email", user.email)
    put("first_name", "first_name", _name(user.first_name))
    put("last_name", "last_name", _name(user.last_name))
    put("phone", "phone_number", user.phone)
    put("created_at", "account_creation_date", None if user.created_at is None else utc_iso(user.created_at))
    # A null agreements object tells us nothing about either consent, so nothing is sent for it.
    if "agreements" in present and user.agreements is not None:
        agreements = user.agreements
        if "data_processing" in agreements.model_fields_set:
            body["agreement_data_processing"] = agreements.data_processing
        if "marketing" in agreements.model_fields_set:
            body["agreement_marketing"] = agreements.marketing
    put("total_spent", "total_spent", None if user.total_spent is None else float(user.total_spent))
    put("client_panel", "client_panel", user.client_panel)
    put("active_code", "active_code", user.active_code)
    put("city", "miejscowosc", user.city)
    return body


def _name(value: str | None) -> str | None:
    # A cut inside a double-barrelled surname would otherwise leave a dangling hyphen.
    return None if value is None else truncate(value, NAME_MAX).rstrip(" -")


# --- products --------------------------------------------------------------------------------


def variant_custom_id(order: Order, item: OrderItem) -> str:
    """The diet-variant product: one diet, one user, one order."""
    return f"{item.diet_id}_{item.variant_id}_{item.calorific_id}_{order.id}"


def diet_simple_custom_id(item: OrderItem) -> str:
    """The diet-simple product: the feed id, or one built from the diet's ids when it is missing."""
    return item.item_xml_id or f"{item.diet_id}-{item.variant_id}-{item.calorific_id}"


def product_name(item: OrderItem) -> str:
    """``Office 800 kcal``, ``Sport Wege 2500 kcal``: diet, variant when it adds something, kcal."""
    diet = (item.diet_name or "").strip()
    variant = (item.variant_name or "").strip()
    parts = [diet] if diet else []
    if variant.lower() not in _PLAIN_VARIANTS and variant.lower() != diet.lower():
        parts.append(variant)
    name = " ".join(" ".join(parts).split())
    if item.kcal is not None and f"{item.kcal} kcal" not in name.lower():
        name = f"{name} {item.kcal} kcal".strip()
    return truncate(name or diet_simple_custom_id(item), PRODUCT_NAME_MAX)


def variant_product_body(order: Order, item: OrderItem, *, active: bool, tz: ZoneInfo) -> dict[str, Any]:
    """The diet-variant's attributes (contract §4.2); unknown values are left out, not nulled."""
    body: dict[str, Any] = {"custom_id": variant_custom_id(order, item), "name": product_name(item)}
    if item.price is not None:
        body["price"] = float(item.price)
    if item.daily_meals is not None:
        body["daily_meals"] = item.daily_meals
    if item.kcal is not None:
        body["kcal"] = item.kcal
    body["active"] = active
    body["trial"] = item.trial
    if order.first_order is not None:
        body["first"] = order.first_order
    if order.created_at is not None:
        body["order_time"] = utc_iso(order.created_at)
    days = sorted(set(item.delivery_dates))
    if days:
        body["order_delivery_time_beginning"] = local_midnight_utc_iso(days[0], tz)
        body["order_delivery_time_end"] = local_midnight_utc_iso(days[-1], tz)
        total = max(len(days), item.delivery_days_total or 0)  # the export may list first/last only
        body["order_delivery_time_days_total"] = total
    body["purchase_id"] = order.id
    body["user_id"] = order.user.id
    if order.user.email:
        body["user_email"] = order.user.email
    return body


def _simple_event_custom_data(order: Order, item: OrderItem) -> dict[str, Any]:
    """Per-occurrence details of an order item, kept with the event itself.

    Product events overwrite the product's attributes, and a diet-simple is shared by every
    customer, so one order's price or dates must never land on it: they go in ``custom_data``.
    """
    data: dict[str, Any] = {"order_id": order.id, "variant_custom_id": variant_custom_id(order, item)}
    if item.price is not None:
        data["price"] = float(item.price)
    if item.kcal is not None:
        data["kcal"] = item.kcal
    if item.daily_meals is not None:
        data["daily_meals"] = item.daily_meals
    data["trial"] = item.trial
    if order.discount_code is not None:
        data["discount_code"] = order.discount_code
    return data


# --- planning --------------------------------------------------------------------------------


def _user_upsert(user: User) -> PlannedDelivery:
    return PlannedDelivery(USER_UPSERT, user_lane(user.id), {"body": user_upsert_body(user)})


def _product_event(
    order: Order,
    *,
    product_custom_id: str,
    name: str,
    event_type: str,
    occurred_at: datetime,
    data: dict[str, Any],
    dedupe_key: str,
) -> PlannedDelivery:
    body = {
        "user_custom_id": order.user.id,
        "event_type": event_type,
        "timestamp": unix_seconds(occurred_at),
        "data": data,
    }
    payload = {
        "product_custom_id": product_custom_id,
        "body": body,
        "create_if_missing": {"custom_id": product_custom_id, "name": name},
    }
    return PlannedDelivery(PRODUCT_EVENT, user_lane(order.user.id), payload, dedupe_key)


def _simple_event(order: Order, item: OrderItem, event_type: str, occurred_at: datetime) -> PlannedDelivery:
    return _product_event(
        order,
        product_custom_id=diet_simple_custom_id(item),
        name=product_name(item),
        event_type=event_type,
        occurred_at=occurred_at,
        data={"custom_data": _simple_event_custom_data(order, item)},
        dedupe_key=f"{event_type}:{variant_custom_id(order, item)}",
    )


def _variant_upsert(order: Order, item: OrderItem, *, active: bool, tz: ZoneInfo) -> PlannedDelivery:
    body = variant_product_body(order, item, active=active, tz=tz)
    payload = {"custom_id": body["custom_id"], "body": body}
    return PlannedDelivery(PRODUCT_UPSERT, user_lane(order.user.id), payload)


def _reservation(order: Order, item: OrderItem, occurred_at: datetime, tz: ZoneInfo) -> PlannedDelivery:
    attributes = variant_product_body(order, item, active=True, tz=tz)
    custom_id = attributes.pop("custom_id")
    return _product_event(
        order,
        product_custom_id=custom_id,
        name=attributes["name"],
        event_type="reservation",
        occurred_at=occurred_at,
        data=attributes,
        dedupe_key=f"reservation:{custom_id}",
    )


def _item_deliveries(
    order: Order, item: OrderItem, *, event_type: str, occurred_at: datetime, tz: ZoneInfo
) -> list[PlannedDelivery]:
    if event_type == "order.created":
        return [_simple_event(order, item, "order", occurred_at)]
    if event_type == "order.paid":
        return [
            _simple_event(order, item, "purchase", occurred_at),
            _variant_upsert(order, item, active=True, tz=tz),
            _reservation(order, item, occurred_at, tz),
        ]
    if event_type == "order.updated":
        # Only a diet-variant that exists (paid) or existed (cancelled) is kept up to date.
        if order.status == "paid":
            return [_variant_upsert(order, item, active=True, tz=tz)]
        if order.status == "cancelled":
            return [_variant_upsert(order, item, active=False, tz=tz)]
        return []
    if event_type == "order.cancelled":
        return [_variant_upsert(order, item, active=False, tz=tz)]
    raise ValueError(f"not an order event type: {event_type!r}")


def plan_order(
    order: Order, *, event_type: str, occurred_at: datetime, tz: ZoneInfo
) -> list[PlannedDelivery]:
    """Deliveries for an order fact (``order.created`` / ``.paid`` / ``.updated`` / ``.cancelled``),
    all on the customer's lane: the user first, then each item in order."""
    planned = [_user_upsert(order.user)]
    for item in order.items:
        planned += _item_deliveries(order, item, event_type=event_type, occurred_at=occurred_at, tz=tz)
    return planned


def plan_caterings_event(event: CateringsEvent, *, tz: ZoneInfo) -> list[PlannedDelivery]:
    """Deliveries for one parsed Caterings webhook."""
    if isinstance(event, UserEvent):
        return [_user_upsert(event.user)]
    if isinstance(event, UserDeletedEvent):
        return [PlannedDelivery(USER_DELETE, user_lane(event.user_id), {"custom_id": event.user_id})]
    if isinstance(event, OrderEvent):
        return plan_order(event.order, event_type=event.type, occurred_at=event.occurred_at, tz=tz)
    raise TypeError(f"not a Caterings event: {event!r}")
