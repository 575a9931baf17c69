from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from app.caterings.schemas import (
    KNOWN_EVENT_TYPES,
    Order,
    OrderEvent,
    OrderItem,
    UnknownEventType,
    User,
    UserDeletedEvent,
    UserEvent,
    describe_validation_error,
    parse_envelope,
    parse_event,
)

ITEM: dict[str, Any] = {
    "diet_id": 12,
    "variant_id": 3,
    "calorific_id": 41,
    "item_xml_id": "12-3-41",
    "diet_name": "Office",
    "variant_name": "Standard",
    "kcal": 800,
    "daily_meals": 3,
    "trial": False,
    "price": "399.90",
    "delivery_dates": ["2026-07-06", "2026-07-07"],
}
ORDER: dict[str, Any] = {
    "id": 50231,
    "user": {"id": 1043, "email": "anna.kowalska@example.com"},
    "status": "paid",
    "created_at": "2026-07-02T18:22:05+02:00",
    "paid_at": None,
    "first_order": True,
    "discount_code": "LATO2026",
    "total_price": "399.90",
    "items": [ITEM],
}


def body(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "occurred_at": "2026-07-02T18:24:41+02:00", "brand_id": 1, "data": data}


def order_body(**changes: Any) -> dict[str, Any]:
    order = copy.deepcopy(ORDER)
    order.update(changes)
    return body("order.paid", {"order": order})


def validation_error(raw: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse_event(parse_envelope(raw))
    return info.value


# --- User ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field", "expected"),
    [
        ({"id": 1043}, "id", "1043"),
        ({"id": "1043"}, "id", "1043"),
        ({"id": 1, "email": " Anna.Kowalska@Example.com "}, "email", "anna.kowalska@example.com"),
        ({"id": 1, "phone": "600 100 200"}, "phone", "+48600100200"),
        ({"id": 1, "phone": "+48 600-100-200"}, "phone", "+48600100200"),
        ({"id": 1, "phone": "0048600100200"}, "phone", "+48600100200"),
        ({"id": 1, "total_spent": "1249,50"}, "total_spent", Decimal("1249.50")),
        ({"id": 1, "total_spent": 1249.5}, "total_spent", Decimal("1249.5")),
        ({"id": 1, "total_spent": "1 499,00"}, "total_spent", Decimal("1499.00")),
        ({"id": 1, "client_panel": "true"}, "client_panel", True),
        ({"id": 1, "client_panel": 0}, "client_panel", False),
        ({"id": 1, "active_code": None}, "active_code", None),
        ({"id": 1, "first_name": "  Anna "}, "first_name", "Anna"),
        (
            {"id": 1, "created_at": "2025-03-01T09:12:44+01:00"},
            "created_at",
            datetime(2025, 3, 1, 8, 12, 44, tzinfo=UTC),
        ),
    ],
)
def test_user_fields(raw: dict[str, Any], field: str, expected: object) -> None:
    assert getattr(User.model_validate(raw), field) == expected


def test_user_naive_created_at_is_read_as_utc() -> None:
    user = User.model_validate({"id": 1, "created_at": "2025-03-01T08:12:44"})
    assert user.created_at == datetime(2025, 3, 1, 8, 12, 44, tzinfo=UTC)
    assert user.created_at is not None and user.created_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize("phone", ["12345", "", "abc"])
def test_user_unusable_phone_counts_as_absent(phone: str) -> None:
    user = User.model_validate({"id": 1, "phone": phone})
    assert user.phone is None
    assert "phone" not in user.model_fields_set


def test_user_explicit_null_phone_is_kept_as_present() -> None:
    user = User.model_validate({"id": 1, "phone": None})
    assert user.phone is None
    assert "phone" in user.model_fields_set


def test_user_absent_vs_null() -> None:
    user = User.model_validate({"id": 1, "active_code": None, "agreements": {"marketing": True}})
    assert user.model_fields_set == {"id", "active_code", "agreements"}
    assert user.agreements is not None
    assert user.agreements.model_fields_set == {"marketing"}


def test_user_unknown_keys_are_ignored() -> None:
    user = User.model_validate({"id": 1, "shoe_size": 42, "agreements": {"marketing": True, "sms": True}})
    assert user.model_fields_set == {"id", "agreements"}


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        ({}, ("id",)),
        ({"id": True}, ("id",)),
        ({"id": ""}, ("id",)),
        ({"id": 1, "total_spent": "abc"}, ("total_spent",)),
        ({"id": 1, "created_at": "yesterday"}, ("created_at",)),
    ],
)
def test_user_rejects(raw: dict[str, Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        User.model_validate(raw)
    assert info.value.errors()[0]["loc"] == loc


# --- Order and items -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "expected"),
    [
        ({"kcal": "800"}, "kcal", 800),
        ({"daily_meals": "5"}, "daily_meals", 5),
        ({"trial": 1}, "trial", True),
        ({"trial": "0"}, "trial", False),
        ({"trial": "1"}, "trial", True),
        ({"trial": "true"}, "trial", True),
        ({"trial": "false"}, "trial", False),
        ({"trial": None}, "trial", False),
        ({"price": "59,90"}, "price", Decimal("59.90")),
        ({"price": 1499.0}, "price", Decimal("1499.0")),
        ({"price": None}, "price", None),
        ({"diet_id": "12"}, "diet_id", "12"),
        ({"item_xml_id": ""}, "item_xml_id", None),
        ({"delivery_dates": ["2026-07-06"]}, "delivery_dates", [date(2026, 7, 6)]),
        ({"delivery_dates": None}, "delivery_dates", []),
    ],
)
def test_order_item_fields(changes: dict[str, Any], field: str, expected: object) -> None:
    assert getattr(OrderItem.model_validate({**ITEM, **changes}), field) == expected


def test_order_item_defaults() -> None:
    item = OrderItem.model_validate({"diet_id": 1, "variant_id": 2, "calorific_id": 3})
    assert (item.trial, item.delivery_dates, item.price, item.kcal) == (False, [], None, None)


@pytest.mark.parametrize(
    ("changes", "field", "expected"),
    [
        ({"id": "50231"}, "id", "50231"),
        ({"status": " Paid "}, "status", "paid"),
        ({"status": "canceled"}, "status", "cancelled"),
        ({"total_price": "1 558,90"}, "total_price", Decimal("1558.90")),
        ({"discount_code": ""}, "discount_code", None),
        (
            {"paid_at": "2026-07-02T18:24:40+02:00"},
            "paid_at",
            datetime(2026, 7, 2, 16, 24, 40, tzinfo=UTC),
        ),
    ],
)
def test_order_fields(changes: dict[str, Any], field: str, expected: object) -> None:
    assert getattr(Order.model_validate({**ORDER, **changes}), field) == expected


def test_numeric_and_string_ids_give_equal_orders() -> None:
    as_strings = {
        **ORDER,
        "id": "50231",
        "user": {"id": "1043", "email": "anna.kowalska@example.com"},
        "items": [{**ITEM, "diet_id": "12", "variant_id": "3", "calorific_id": "41"}],
    }
    assert Order.model_validate(as_strings) == Order.model_validate(ORDER)


# --- Envelope and events ---------------------------------------------------------------------


def test_envelope() -> None:
    envelope = parse_envelope({**body("user.created", {"user": {"id": 1}}), "extra": "ignored"})
    assert envelope.type == "user.created"
    assert envelope.occurred_at == datetime(2026, 7, 2, 16, 24, 41, tzinfo=UTC)
    assert envelope.brand_id == 1


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        ([], ()),
        ("not an object", ()),
        ({"occurred_at": "2026-07-02T18:24:41+02:00", "data": {}}, ("type",)),
        ({"type": "user.created", "data": {}}, ("occurred_at",)),
        ({"type": "user.created", "occurred_at": "soon", "data": {}}, ("occurred_at",)),
        ({"type": "user.created", "occurred_at": "2026-07-02T18:24:41+02:00", "data": None}, ("data",)),
    ],
)
def test_envelope_rejects(raw: object, loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        parse_envelope(raw)
    assert info.value.errors()[0]["loc"] == loc


@pytest.mark.parametrize("kind", ["user.created", "user.updated"])
def test_parse_user_event(kind: str) -> None:
    event = parse_event(parse_envelope(body(kind, {"user": {"id": 1043, "city": "Kraków"}})))
    assert isinstance(event, UserEvent)
    assert (event.type, event.user.id, event.user.city) == (kind, "1043", "Kraków")


@pytest.mark.parametrize("user_id", [3007, "3007"])
def test_parse_user_deleted(user_id: object) -> None:
    event = parse_event(parse_envelope(body("user.deleted", {"user": {"id": user_id}})))
    assert event == UserDeletedEvent("user.deleted", datetime(2026, 7, 2, 16, 24, 41, tzinfo=UTC), "3007")


@pytest.mark.parametrize("kind", ["order.created", "order.paid", "order.updated", "order.cancelled"])
def test_parse_order_event(kind: str) -> None:
    event = parse_event(parse_envelope(body(kind, {"order": ORDER, "unknown": {"x": 1}})))
    assert isinstance(event, OrderEvent)
    assert event.order.id == "50231"
    assert event.order.items[0].price == Decimal("399.90")


def test_known_event_types() -> None:
    assert KNOWN_EVENT_TYPES == {
        "user.created",
        "user.updated",
        "user.deleted",
        "order.created",
        "order.paid",
        "order.updated",
        "order.cancelled",
    }


def test_parse_event_unknown_type() -> None:
    envelope = parse_envelope(body("loyalty.points_added", {"user_id": 3007, "points": 40}))
    with pytest.raises(UnknownEventType):
        parse_event(envelope)


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        (order_body(items=[]), ("data", "order", "items")),
        (order_body(items=None), ("data", "order", "items")),
        (
            body("order.paid", {"order": {k: v for k, v in ORDER.items() if k != "items"}}),
            ("data", "order", "items"),
        ),
        (order_body(user={"email": "a@b.pl"}), ("data", "order", "user", "id")),
        (order_body(id=True), ("data", "order", "id")),
        (order_body(items=[{**ITEM, "price": "abc"}]), ("data", "order", "items", 0, "price")),
        (
            order_body(items=[{**ITEM, "delivery_dates": ["06.07.2026"]}]),
            ("data", "order", "items", 0, "delivery_dates", 0),
        ),
        (body("order.paid", {}), ("data", "order")),
        (body("user.created", {"user": {"email": "a@b.pl"}}), ("data", "user", "id")),
        (body("user.deleted", {"user": {}}), ("data", "user", "id")),
    ],
)
def test_parse_event_error_locations_start_at_body_root(raw: dict[str, Any], loc: tuple[Any, ...]) -> None:
    assert validation_error(raw).errors()[0]["loc"] == loc


def test_describe_validation_error() -> None:
    message = describe_validation_error(validation_error(order_body(items=[])))
    assert message == "data.order.items: List should have at least 1 item after validation, not 0"


def test_describe_validation_error_lists_a_few_and_counts_the_rest() -> None:
    bad_item = {"price": "abc"}  # missing three ids, and a bad price
    message = describe_validation_error(validation_error(order_body(items=[bad_item])))
    parts = message.split("; ")
    assert parts[0] == "data.order.items.0.diet_id: Field required"
    assert len(parts) == 4 and parts[-1] == "and 1 more"


def test_describe_validation_error_hides_input_values() -> None:
    message = describe_validation_error(
        validation_error(order_body(user={"id": True, "email": "secret@x.pl"}))
    )
    assert "secret@x.pl" not in message
    assert message.startswith("data.order.user.id: ")
