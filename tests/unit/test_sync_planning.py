"""Caterings records (listing API, orders export) into planned deliveries, and the batch filter."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app import idmap
from app.caterings.schemas import OrderItem
from app.delivery import repository
from app.delivery.plan import PRODUCT_EVENT, PRODUCT_UPSERT, USER_UPSERT
from app.sync.planning import Batch, InvalidRecord, plan_order_record, plan_user_record

TZ = ZoneInfo("Europe/Warsaw")


def order(status: str = "paid", **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 41002,
        "status": status,
        "created_at": "2026-02-01T08:00:00+01:00",
        "paid_at": "2026-02-01T08:01:00+01:00",
        "first_order": False,
        "user": {"id": 2210, "email": "piotr.wisniewski@example.org"},
        "items": [
            {
                "diet_id": 15,
                "variant_id": 1,
                "calorific_id": 77,
                "item_xml_id": "15-1-77",
                "diet_name": "Sport",
                "kcal": 2500,
                "daily_meals": 5,
                "trial": False,
                "price": "1499.00",
                "delivery_dates": ["2026-02-02", "2026-02-03", "2026-02-04"],
            },
            {
                "diet_id": 9,
                "variant_id": 2,
                "calorific_id": 30,
                "item_xml_id": "9-2-30",
                "diet_name": "Standard",
                "kcal": 1500,
                "daily_meals": 5,
                "trial": True,
                "price": "59.90",
                "delivery_dates": ["2026-03-28"],
            },
        ],
    }
    base.update(changes)
    return base


def shape(planned: list[Any]) -> list[tuple[str, str]]:
    out = []
    for d in planned:
        if d.kind == PRODUCT_EVENT:
            out.append((d.payload["body"]["event_type"], d.payload["product_custom_id"]))
        elif d.kind == PRODUCT_UPSERT:
            out.append(
                (
                    "variant active" if d.payload["body"]["active"] else "variant inactive",
                    d.payload["custom_id"],
                )
            )
        else:
            out.append(("user", d.payload["body"]["custom_id"]))
    return out


def test_a_paid_order_plans_what_order_paid_plans() -> None:
    planned = plan_order_record(order(), tz=TZ)
    assert shape(planned) == [
        ("user", "2210"),
        ("purchase", "15-1-77"),
        ("variant active", "15_1_77_41002"),
        ("reservation", "15_1_77_41002"),
        ("purchase", "9-2-30"),
        ("variant active", "9_2_30_41002"),
        ("reservation", "9_2_30_41002"),
    ]
    assert planned[3].dedupe_key == "reservation:15_1_77_41002"
    # the event's time is when the order was paid
    assert planned[1].payload["body"]["timestamp"] == 1769929260


def test_a_cancelled_order_plans_inactive_variants_and_no_event() -> None:
    assert shape(plan_order_record(order("cancelled"), tz=TZ)) == [
        ("user", "2210"),
        ("variant inactive", "15_1_77_41002"),
        ("variant inactive", "9_2_30_41002"),
    ]


def test_a_new_order_plans_only_its_user() -> None:
    assert shape(plan_order_record(order("new", paid_at=None), tz=TZ)) == [("user", "2210")]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (order(status="refunded"), "status 'refunded'"),
        (order(items=[]), "items"),
        ({"status": "paid"}, "order ?: id"),
        ("not an object", "order ?"),
    ],
)
def test_invalid_orders_say_why_without_personal_values(record: Any, reason: str) -> None:
    with pytest.raises(InvalidRecord) as error:
        plan_order_record(record, tz=TZ)
    assert reason in str(error.value)
    assert "example.org" not in str(error.value)


def test_users_plan_their_upsert_and_invalid_ones_are_refused() -> None:
    planned = plan_user_record({"id": 7, "email": " A@B.PL ", "phone": "600 100 200"}, tz=TZ)
    assert [(d.kind, d.lane, d.payload["body"]) for d in planned] == [
        (USER_UPSERT, "user:7", {"custom_id": "7", "email": "a@b.pl", "phone_number": "+48600100200"})
    ]
    with pytest.raises(InvalidRecord, match="user 8: created_at"):
        plan_user_record({"id": 8, "created_at": "someday"}, tz=TZ)


def test_delivery_days_total_counts_days_the_export_does_not_list() -> None:
    item = OrderItem.model_validate(
        {
            "diet_id": 1,
            "variant_id": 1,
            "calorific_id": 1,
            "delivery_dates": ["2026-03-02", "2026-03-15"],
            "delivery_days_total": 10,
        }
    )
    assert item.delivery_days_total == 10
    record = order()
    record["items"][0].update(delivery_dates=["2026-02-02", "2026-02-20"], delivery_days_total=12)
    variant = plan_order_record(record, tz=TZ)[2].payload["body"]
    assert variant["order_delivery_time_days_total"] == 12
    assert (
        OrderItem.model_validate(
            {"diet_id": 1, "variant_id": 1, "calorific_id": 1, "delivery_days_total": "many"}
        ).delivery_days_total
        is None
    )


async def test_the_batch_drops_fired_facts_confirmed_upserts_and_repeats(sessions) -> None:  # type: ignore[no-untyped-def]
    planned = plan_order_record(order(), tz=TZ)
    async with sessions.begin() as session:
        await repository.claim_fact(session, "purchase:15_1_77_41002")  # a webhook fired it already
        user_body = planned[0].payload["body"]
        await idmap.remember(
            session, idmap.USER, "2210", usercom_id=1, sent_hash=idmap.payload_hash(user_body)
        )

    batch = Batch()
    batch.extend(planned)
    batch.extend(plan_order_record(order(), tz=TZ))  # the same order twice on one page
    async with sessions.begin() as session:
        kept = await batch.filtered(session)
        assert shape(kept) == [
            ("variant active", "15_1_77_41002"),
            ("reservation", "15_1_77_41002"),
            ("purchase", "9-2-30"),
            ("variant active", "9_2_30_41002"),
            ("reservation", "9_2_30_41002"),
        ]
        assert await batch.store(session) == 5
    async with sessions.begin() as session:
        assert await batch.store(session) == 2  # facts fired now; the two variants are not confirmed yet


async def test_the_batch_keeps_an_upsert_that_reverts_an_earlier_one_in_the_batch(sessions) -> None:  # type: ignore[no-untyped-def]
    first = plan_user_record({"id": 7, "first_name": "Anna"}, tz=TZ)
    second = plan_user_record({"id": 7, "first_name": "Ania"}, tz=TZ)
    batch = Batch()
    for planned in (first, second, first):
        batch.extend(planned)
    async with sessions() as session:
        kept = await batch.filtered(session)
    assert [d.payload["body"]["first_name"] for d in kept] == ["Anna", "Ania", "Anna"]
