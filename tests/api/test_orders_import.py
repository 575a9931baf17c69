"""``bridge import-orders``: the orders export into the outbox (no worker here)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from app import idmap
from app.cli import cli
from app.db import create_engine, create_session_factory
from app.delivery.plan import PRODUCT_EVENT, PRODUCT_UPSERT, USER_UPSERT
from app.models import BusinessFact, Delivery, InboundEvent

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
UTF8 = SAMPLES / "orders-export.csv"
CP1250 = SAMPLES / "orders-export-cp1250.csv"


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'import.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)  # no project .env in the way
    yield url


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, ["import-orders", *args])


def outbox(url: str) -> list[Delivery]:
    async def _read() -> list[Delivery]:
        engine = create_engine(url)
        try:
            async with create_session_factory(engine)() as session:
                return list((await session.execute(select(Delivery).order_by(Delivery.id))).scalars())
        finally:
            await engine.dispose()

    return asyncio.run(_read())


def confirm_all(url: str) -> None:
    """What the handlers do once User.com answers 2xx: remember each upsert's hash."""

    async def _confirm() -> None:
        engine = create_engine(url)
        try:
            async with create_session_factory(engine).begin() as session:
                for d in (
                    await session.execute(select(Delivery).where(Delivery.state == "pending"))
                ).scalars():
                    if d.kind == USER_UPSERT:
                        key = (idmap.USER, str(d.payload["body"]["custom_id"]))
                    elif d.kind == PRODUCT_UPSERT:
                        key = (idmap.PRODUCT, d.payload["custom_id"])
                    else:
                        key = None
                    if key:
                        await idmap.remember(
                            session, *key, usercom_id=1, sent_hash=idmap.payload_hash(d.payload["body"])
                        )
                    d.state = "done"
        finally:
            await engine.dispose()

    asyncio.run(_confirm())


def events(deliveries: list[Delivery]) -> list[tuple[str, str]]:
    return [
        (d.payload["product_custom_id"], d.payload["body"]["event_type"])
        for d in deliveries
        if d.kind == PRODUCT_EVENT
    ]


def variants(deliveries: list[Delivery]) -> dict[str, dict[str, Any]]:
    return {d.payload["custom_id"]: d.payload["body"] for d in deliveries if d.kind == PRODUCT_UPSERT}


@pytest.mark.parametrize("sample", [UTF8, CP1250], ids=["utf-8", "windows-1250"])
def test_both_samples_import_paid_and_cancelled_orders_and_report_line_5(database: str, sample: Path) -> None:
    result = run(str(sample))
    assert result.exit_code == 1, result.output  # bad rows were skipped
    assert f"{sample.name}: line 5: calorific_id is empty; price 'abc' is not a number" in result.stderr
    assert "3 orders imported (1 cancelled, 2 paid); 1 bad rows skipped" in result.stdout

    deliveries = outbox(database)
    assert sorted(events(deliveries)) == sorted(
        [
            ("12-3-41", "purchase"),
            ("12_3_41_41001", "reservation"),
            ("15-1-77", "purchase"),
            ("15_1_77_41002", "reservation"),
            ("9-2-30", "purchase"),
            ("9_2_30_41002", "reservation"),
        ]
    )
    bodies = variants(deliveries)
    assert set(bodies) == {"12_3_41_41001", "15_1_77_41002", "9_2_30_41002", "20_4_90_41004"}
    assert bodies["9_2_30_41002"]["trial"] is True and bodies["9_2_30_41002"]["price"] == 59.9
    assert bodies["15_1_77_41002"]["price"] == 1499.0
    assert bodies["12_3_41_41001"]["order_delivery_time_days_total"] == 5
    keto = bodies["20_4_90_41004"]
    assert keto["active"] is False and keto["purchase_id"] == "41004"
    assert not any("41004" in product for product, _ in events(deliveries))  # cancelled: no reservation
    assert not any("41003" in str(d.payload) for d in deliveries)  # the broken order is skipped whole
    users = [d.payload["body"] for d in deliveries if d.kind == USER_UPSERT]
    assert {u["custom_id"] for u in users} == {"1043", "2210", "4120"}
    assert all(d.lane.startswith("user:") for d in deliveries)
    assert all(d.inbound_id is not None for d in deliveries)


def test_a_second_run_sends_nothing_new(database: str) -> None:
    run(str(UTF8))
    confirm_all(database)  # the bridge's worker delivered the first run
    first = len(outbox(database))

    result = run(str(UTF8))
    assert "0 deliveries queued" in result.stdout, result.output
    assert len(outbox(database)) == first


def test_a_second_run_before_delivery_fires_no_fact_twice(database: str) -> None:
    run(str(UTF8))
    run(str(CP1250))
    assert len(events(outbox(database))) == 6


def test_a_dry_run_queues_nothing(database: str) -> None:
    result = run(str(UTF8), "--dry-run")
    assert result.exit_code == 1
    assert "deliveries would queue" in result.stdout and "line 5" in result.stderr
    assert outbox(database) == []

    async def _facts_and_log() -> tuple[int, int]:
        engine = create_engine(database)
        try:
            async with create_session_factory(engine)() as session:
                facts = len((await session.execute(select(BusinessFact))).all())
                logged = len((await session.execute(select(InboundEvent))).all())
                return facts, logged
        finally:
            await engine.dispose()

    assert asyncio.run(_facts_and_log()) == (0, 0)


def test_first_last_total_columns_give_the_real_number_of_days(database: str, tmp_path: Path) -> None:
    csv = tmp_path / "range.csv"
    csv.write_text(
        "order_id;user_id;user_email;status;created_at;paid_at;first_order;diet_id;variant_id;calorific_id;"
        "item_xml_id;diet_name;kcal;daily_meals;trial;price;delivery_first_date;delivery_last_date;delivery_days_total\n"
        "42001;1043;anna@example.com;paid;2026-03-02 09:00;2026-03-02 09:05;0;12;3;41;12-3-41;Office;800;3;0;"
        "799,80;2026-03-02;2026-03-15;10\n",
        encoding="utf-8",
    )
    result = run(str(csv))
    assert result.exit_code == 0, result.output
    body = variants(outbox(database))["12_3_41_42001"]
    assert body["order_delivery_time_days_total"] == 10
    assert body["order_delivery_time_beginning"] == "2026-03-01T23:00:00Z"
    assert body["order_delivery_time_end"] == "2026-03-14T23:00:00Z"


def test_an_unusable_file_exits_2(database: str, tmp_path: Path) -> None:
    missing = run(str(tmp_path / "nope.csv"))
    assert missing.exit_code == 2 and "cannot read" in missing.stderr
    headless = tmp_path / "bad.csv"
    headless.write_text("order_id;user_id\n1;2\n", encoding="utf-8")
    result = run(str(headless))
    assert result.exit_code == 2 and "missing required column" in result.stderr
