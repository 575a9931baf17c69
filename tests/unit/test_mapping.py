from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.caterings.schemas import (
    KNOWN_EVENT_TYPES,
    Order,
    OrderItem,
    User,
    parse_envelope,
    parse_event,
)
from app.delivery.plan import PRODUCT_EVENT, PRODUCT_UPSERT, USER_DELETE, USER_UPSERT, PlannedDelivery
from app.mapping import (
    diet_simple_custom_id,
    plan_caterings_event,
    plan_order,
    product_name,
    user_upsert_body,
    variant_custom_id,
    variant_product_body,
)

WARSAW = ZoneInfo("Europe/Warsaw")
SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "webhooks.jsonl"
OCCURRED_AT = datetime(2026, 7, 2, 16, 24, 41, tzinfo=UTC)  # 1783009481

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
    "delivery_dates": ["2026-07-08", "2026-07-06", "2026-07-07", "2026-07-06"],
}
ORDER: dict[str, Any] = {
    "id": 50231,
    "user": {"id": 1043, "email": "anna.kowalska@example.com"},
    "status": "paid",
    "created_at": "2026-07-02T18:22:05+02:00",
    "first_order": True,
    "discount_code": "LATO2026",
    "items": [ITEM],
}


def order(**changes: Any) -> Order:
    raw = copy.deepcopy(ORDER)
    raw.update(changes)
    return Order.model_validate(raw)


def item(**changes: Any) -> OrderItem:
    return OrderItem.model_validate({**ITEM, **changes})


# --- user_upsert_body ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"id": 1043}, {"custom_id": "1043"}),
        ({"id": "1043"}, {"custom_id": "1043"}),
        (
            {
                "id": 1043,
                "email": "Anna.Kowalska@Example.com ",
                "first_name": "Anna",
                "last_name": "Kowalska",
                "phone": "600 100 200",
                "created_at": "2025-03-01T09:12:44+01:00",
                "city": "Kraków",
                "agreements": {"data_processing": True, "marketing": False},
                "total_spent": "1249,50",
                "client_panel": True,
                "active_code": "LATO2026",
            },
            {
                "custom_id": "1043",
                "email": "anna.kowalska@example.com",
                "first_name": "Anna",
                "last_name": "Kowalska",
                "phone_number": "+48600100200",
                "account_creation_date": "2025-03-01T08:12:44Z",
                "agreement_data_processing": True,
                "agreement_marketing": False,
                "total_spent": 1249.5,
                "client_panel": True,
                "active_code": "LATO2026",
                "miejscowosc": "Kraków",
            },
        ),
        # explicit nulls are sent as null
        (
            {"id": 1, "active_code": None, "email": None, "phone": None, "city": None, "total_spent": None},
            {
                "custom_id": "1",
                "active_code": None,
                "email": None,
                "phone_number": None,
                "miejscowosc": None,
                "total_spent": None,
            },
        ),
        # only the agreement sub-keys present
        ({"id": 1, "agreements": {"marketing": True}}, {"custom_id": "1", "agreement_marketing": True}),
        ({"id": 1, "agreements": {}}, {"custom_id": "1"}),
        ({"id": 1, "agreements": None}, {"custom_id": "1"}),
        # an unusable phone is left out, not nulled
        ({"id": 1, "phone": "12345"}, {"custom_id": "1"}),
        ({"id": 1, "phone": "+48 600-100-200"}, {"custom_id": "1", "phone_number": "+48600100200"}),
        ({"id": 1, "phone": "0048600100200"}, {"custom_id": "1", "phone_number": "+48600100200"}),
        ({"id": 1, "total_spent": "1 499,00"}, {"custom_id": "1", "total_spent": 1499.0}),
        ({"id": 1, "total_spent": 1834.5}, {"custom_id": "1", "total_spent": 1834.5}),
        # 40-character limit; the dangling hyphen of the cut is dropped
        (
            {"id": 1, "last_name": "Zielińska-Grzybowska-Wójcik-Szczepańska-Nowak"},
            {"custom_id": "1", "last_name": "Zielińska-Grzybowska-Wójcik-Szczepańska"},
        ),
        ({"id": 1, "first_name": "A" * 45}, {"custom_id": "1", "first_name": "A" * 40}),
        ({"id": 1, "unknown": "x", "loyalty": {"points": 3}}, {"custom_id": "1"}),
    ],
)
def test_user_upsert_body(raw: dict[str, Any], expected: dict[str, Any]) -> None:
    assert user_upsert_body(User.model_validate(raw)) == expected


def test_user_upsert_body_types() -> None:
    body = user_upsert_body(User.model_validate({"id": 7, "total_spent": "0", "client_panel": 1}))
    assert type(body["custom_id"]) is str
    assert type(body["total_spent"]) is float
    assert body["client_panel"] is True


# --- product ids and names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("diet", "variant", "kcal", "expected"),
    [
        ("Office", "Standard", 800, "Office 800 kcal"),
        ("Sport", "Wege", 2500, "Sport Wege 2500 kcal"),
        ("Standard", "Standard", 1500, "Standard 1500 kcal"),
        ("Keto", "keto", 1200, "Keto 1200 kcal"),
        ("Keto", "", 1200, "Keto 1200 kcal"),
        ("Keto", None, None, "Keto"),
        ("Office 800 kcal", "Standard", 800, "Office 800 kcal"),
        ("Office", "Wege", None, "Office Wege"),
        (None, None, None, "12-3-41"),
    ],
)
def test_product_name(diet: str | None, variant: str | None, kcal: int | None, expected: str) -> None:
    assert product_name(item(diet_name=diet, variant_name=variant, kcal=kcal)) == expected


def test_product_name_is_at_most_256_characters() -> None:
    assert len(product_name(item(diet_name="D" * 300))) == 256


@pytest.mark.parametrize(
    ("ids", "variant", "simple"),
    [
        ({"diet_id": 12, "variant_id": 3, "calorific_id": 41}, "12_3_41_50231", "12-3-41"),
        ({"diet_id": "12", "variant_id": "3", "calorific_id": "41"}, "12_3_41_50231", "12-3-41"),
        ({"item_xml_id": None}, "12_3_41_50231", "12-3-41"),
        ({"item_xml_id": "feed-77"}, "12_3_41_50231", "feed-77"),
    ],
)
def test_custom_ids(ids: dict[str, Any], variant: str, simple: str) -> None:
    it = item(**ids)
    assert variant_custom_id(order(), it) == variant
    assert diet_simple_custom_id(it) == simple


# --- variant_product_body --------------------------------------------------------------------


def test_variant_product_body_full() -> None:
    assert variant_product_body(order(), item(), active=True, tz=WARSAW) == {
        "custom_id": "12_3_41_50231",
        "name": "Office 800 kcal",
        "price": 399.9,
        "daily_meals": 3,
        "kcal": 800,
        "active": True,
        "trial": False,
        "first": True,
        "order_time": "2026-07-02T16:22:05Z",
        "order_delivery_time_beginning": "2026-07-05T22:00:00Z",
        "order_delivery_time_end": "2026-07-07T22:00:00Z",
        "order_delivery_time_days_total": 3,  # the repeated date counts once
        "purchase_id": "50231",
        "user_id": "1043",
        "user_email": "anna.kowalska@example.com",
    }


def test_variant_product_body_leaves_out_unknowns() -> None:
    sparse_order = Order.model_validate(
        {"id": 9, "user": {"id": 5}, "items": [{"diet_id": 1, "variant_id": 2, "calorific_id": 3}]}
    )
    assert variant_product_body(sparse_order, sparse_order.items[0], active=False, tz=WARSAW) == {
        "custom_id": "1_2_3_9",
        "name": "1-2-3",
        "active": False,
        "trial": False,
        "purchase_id": "9",
        "user_id": "5",
    }


@pytest.mark.parametrize(
    ("dates", "beginning", "end"),
    [
        (["2026-03-29", "2026-03-30"], "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"),
        (["2026-10-25", "2026-10-26"], "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z"),
        (["2026-01-12"], "2026-01-11T23:00:00Z", "2026-01-11T23:00:00Z"),
    ],
)
def test_variant_delivery_window_across_dst(dates: list[str], beginning: str, end: str) -> None:
    body = variant_product_body(order(), item(delivery_dates=dates), active=True, tz=WARSAW)
    assert (body["order_delivery_time_beginning"], body["order_delivery_time_end"]) == (beginning, end)
    assert body["order_delivery_time_days_total"] == len(dates)


# --- planning --------------------------------------------------------------------------------


def kinds(planned: list[PlannedDelivery]) -> list[tuple[str, str | None]]:
    return [(p.kind, p.dedupe_key) for p in planned]


two_items = [ITEM, {**ITEM, "diet_id": 9, "item_xml_id": "9-3-41"}]


@pytest.mark.parametrize(
    ("event_type", "status", "expected"),
    [
        (
            "order.created",
            "new",
            [
                (USER_UPSERT, None),
                (PRODUCT_EVENT, "order:12_3_41_50231"),
                (PRODUCT_EVENT, "order:9_3_41_50231"),
            ],
        ),
        (
            "order.paid",
            "paid",
            [
                (USER_UPSERT, None),
                (PRODUCT_EVENT, "purchase:12_3_41_50231"),
                (PRODUCT_UPSERT, None),
                (PRODUCT_EVENT, "reservation:12_3_41_50231"),
                (PRODUCT_EVENT, "purchase:9_3_41_50231"),
                (PRODUCT_UPSERT, None),
                (PRODUCT_EVENT, "reservation:9_3_41_50231"),
            ],
        ),
        ("order.updated", "paid", [(USER_UPSERT, None), (PRODUCT_UPSERT, None), (PRODUCT_UPSERT, None)]),
        ("order.updated", "cancelled", [(USER_UPSERT, None), (PRODUCT_UPSERT, None), (PRODUCT_UPSERT, None)]),
        ("order.updated", "new", [(USER_UPSERT, None)]),
        ("order.updated", None, [(USER_UPSERT, None)]),
        (
            "order.cancelled",
            "cancelled",
            [(USER_UPSERT, None), (PRODUCT_UPSERT, None), (PRODUCT_UPSERT, None)],
        ),
    ],
)
def test_plan_order_sequence(
    event_type: str, status: str | None, expected: list[tuple[str, str | None]]
) -> None:
    planned = plan_order(
        order(status=status, items=two_items), event_type=event_type, occurred_at=OCCURRED_AT, tz=WARSAW
    )
    assert kinds(planned) == expected
    assert {p.lane for p in planned} == {"user:1043"}


@pytest.mark.parametrize(
    ("event_type", "status", "active"),
    [
        ("order.paid", "paid", True),
        ("order.updated", "paid", True),
        ("order.updated", "cancelled", False),
        ("order.cancelled", "cancelled", False),
        ("order.cancelled", "paid", False),
    ],
)
def test_variant_upsert_active_flag(event_type: str, status: str, active: bool) -> None:
    planned = plan_order(order(status=status), event_type=event_type, occurred_at=OCCURRED_AT, tz=WARSAW)
    upserts = [p for p in planned if p.kind == PRODUCT_UPSERT]
    assert len(upserts) == 1
    assert upserts[0].payload["custom_id"] == "12_3_41_50231"
    assert upserts[0].payload["body"]["active"] is active


@pytest.mark.parametrize(
    ("event_type", "product_event"), [("order.created", "order"), ("order.paid", "purchase")]
)
def test_diet_simple_event_keeps_order_details_out_of_product_attributes(
    event_type: str, product_event: str
) -> None:
    planned = plan_order(order(), event_type=event_type, occurred_at=OCCURRED_AT, tz=WARSAW)
    assert planned[1].payload == {
        "product_custom_id": "12-3-41",
        "body": {
            "user_custom_id": "1043",
            "event_type": product_event,
            "timestamp": 1783009481,
            "data": {
                "custom_data": {
                    "order_id": "50231",
                    "variant_custom_id": "12_3_41_50231",
                    "price": 399.9,
                    "kcal": 800,
                    "daily_meals": 3,
                    "trial": False,
                    "discount_code": "LATO2026",
                }
            },
        },
        "create_if_missing": {"custom_id": "12-3-41", "name": "Office 800 kcal"},
    }


def test_reservation_carries_variant_attributes() -> None:
    planned = plan_order(order(), event_type="order.paid", occurred_at=OCCURRED_AT, tz=WARSAW)
    upsert, reservation = planned[2], planned[3]
    expected_data = {k: v for k, v in upsert.payload["body"].items() if k != "custom_id"}
    assert reservation.payload == {
        "product_custom_id": "12_3_41_50231",
        "body": {
            "user_custom_id": "1043",
            "event_type": "reservation",
            "timestamp": 1783009481,
            "data": expected_data,
        },
        "create_if_missing": {"custom_id": "12_3_41_50231", "name": "Office 800 kcal"},
    }


def test_diet_simple_event_leaves_out_unknown_custom_data() -> None:
    o = order(discount_code=None, items=[{"diet_id": 1, "variant_id": 2, "calorific_id": 3}])
    planned = plan_order(o, event_type="order.created", occurred_at=OCCURRED_AT, tz=WARSAW)
    assert planned[1].payload["body"]["data"] == {
        "custom_data": {"order_id": "50231", "variant_custom_id": "1_2_3_50231", "trial": False}
    }


def test_plan_order_rejects_other_types() -> None:
    with pytest.raises(ValueError):
        plan_order(order(), event_type="user.created", occurred_at=OCCURRED_AT, tz=WARSAW)


def envelope_body(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "occurred_at": "2026-07-02T18:24:41+02:00", "data": data}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            envelope_body("user.created", {"user": {"id": 1043, "city": "Kraków"}}),
            [
                PlannedDelivery(
                    USER_UPSERT, "user:1043", {"body": {"custom_id": "1043", "miejscowosc": "Kraków"}}
                )
            ],
        ),
        (
            envelope_body("user.updated", {"user": {"id": "1043"}}),
            [PlannedDelivery(USER_UPSERT, "user:1043", {"body": {"custom_id": "1043"}})],
        ),
        (
            envelope_body("user.deleted", {"user": {"id": 3007}}),
            [PlannedDelivery(USER_DELETE, "user:3007", {"custom_id": "3007"})],
        ),
    ],
)
def test_plan_user_events(raw: dict[str, Any], expected: list[PlannedDelivery]) -> None:
    assert plan_caterings_event(parse_event(parse_envelope(raw)), tz=WARSAW) == expected


@pytest.mark.parametrize("kind", ["order.created", "order.paid", "order.updated", "order.cancelled"])
def test_numeric_and_string_ids_plan_the_same(kind: str) -> None:
    numeric = envelope_body(kind, {"order": ORDER})
    strings = envelope_body(
        kind,
        {
            "order": {
                **ORDER,
                "id": "50231",
                "user": {"id": "1043", "email": "anna.kowalska@example.com"},
                "items": [{**ITEM, "diet_id": "12", "variant_id": "3", "calorific_id": "41"}],
            }
        },
    )
    plan = [plan_caterings_event(parse_event(parse_envelope(raw)), tz=WARSAW) for raw in (numeric, strings)]
    assert plan[0] == plan[1]
    assert len(plan[0]) > 1


# --- the sample webhooks ---------------------------------------------------------------------


def plan_samples() -> list[tuple[str, list[PlannedDelivery]]]:
    planned = []
    for line in SAMPLES.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        envelope = parse_envelope(json.loads(line)["body"])
        if envelope.type not in KNOWN_EVENT_TYPES:
            assert envelope.type == "loyalty.points_added"
            continue
        planned.append((envelope.type, plan_caterings_event(parse_event(envelope), tz=WARSAW)))
    return planned


SAMPLE_PLANS = plan_samples()


def user_bodies(custom_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (kind, p.payload["body"])
        for kind, plan in SAMPLE_PLANS
        for p in plan
        if p.kind == USER_UPSERT and p.payload["body"]["custom_id"] == custom_id
    ]


def last_variant_body(custom_id: str) -> dict[str, Any]:
    bodies = [
        p.payload["body"]
        for _, plan in SAMPLE_PLANS
        for p in plan
        if p.kind == PRODUCT_UPSERT and p.payload["custom_id"] == custom_id
    ]
    assert bodies, custom_id
    return bodies[-1]


def test_samples_all_plan() -> None:
    assert [kind for kind, _ in SAMPLE_PLANS] == [
        "user.created",
        "user.updated",
        "order.created",
        "order.paid",
        "order.paid",
        "order.updated",
        "user.created",
        "order.paid",
        "order.cancelled",
        "user.updated",
        "user.deleted",
    ]
    for _, plan in SAMPLE_PLANS:
        assert len({p.lane for p in plan}) == 1


def test_sample_user_1043() -> None:
    created = user_bodies("1043")[0][1]
    assert created["email"] == "anna.kowalska@example.com"
    assert created["phone_number"] == "+48600100200"
    assert created["account_creation_date"] == "2025-03-01T08:12:44Z"
    assert created["active_code"] is None
    paid = next(body for kind, body in user_bodies("1043") if kind == "order.paid")
    assert paid["total_spent"] == 399.9
    assert paid["active_code"] == "LATO2026"


def test_sample_variant_12_3_41_50231_after_update() -> None:
    body = last_variant_body("12_3_41_50231")
    expected = {
        "order_delivery_time_beginning": "2026-07-05T22:00:00Z",
        "order_delivery_time_end": "2026-07-12T22:00:00Z",
        "order_delivery_time_days_total": 5,
        "first": True,
        "trial": False,
        "price": 399.9,
        "purchase_id": "50231",
        "user_id": "1043",
        "user_email": "anna.kowalska@example.com",
        "active": True,
        "name": "Office 800 kcal",
    }
    assert {k: body[k] for k in expected} == expected


def test_sample_trial_variant_9_2_30_50880() -> None:
    paid = next(
        p.payload["body"]
        for kind, plan in SAMPLE_PLANS
        if kind == "order.paid"
        for p in plan
        if p.kind == PRODUCT_UPSERT and p.payload["custom_id"] == "9_2_30_50880"
    )
    assert (paid["trial"], paid["price"], paid["active"]) == (True, 59.9, True)
    assert paid["order_delivery_time_end"] == "2026-10-24T22:00:00Z"
    assert paid["name"] == "Standard 1500 kcal"
    assert last_variant_body("9_2_30_50880")["active"] is False  # then cancelled


def test_sample_reservations_fire_per_item() -> None:
    keys = [p.dedupe_key for _, plan in SAMPLE_PLANS for p in plan if p.dedupe_key]
    assert keys.count("reservation:12_3_41_50231") == 2  # the redelivered order.paid; the outbox drops one
    assert "reservation:15_1_77_50880" in keys and "reservation:9_2_30_50880" in keys


def test_sample_user_3007() -> None:
    ((_, body),) = user_bodies("3007")
    assert "phone_number" not in body
    assert len(body["last_name"]) <= 40
    assert body["last_name"].startswith("Zielińska-Grzybowska")
    assert SAMPLE_PLANS[-1][1] == [PlannedDelivery(USER_DELETE, "user:3007", {"custom_id": "3007"})]
