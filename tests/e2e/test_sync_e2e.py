"""Full sync, product feed and orders import: the real bridge process against the fake servers."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.caterings.schemas import Order
from app.fakes.caterings import FakeCaterings
from app.mapping import variant_custom_id
from tests.support import processes as p

pytestmark = pytest.mark.e2e

ADMIN = {"Authorization": f"Bearer {p.ADMIN_TOKEN}"}
SAMPLES = p.PROJECT_ROOT / "samples"
FAST = {"USERCOM_RATE_LIMIT": "500", "CATERINGS_RATE_LIMIT": "200"}
# The full-sync tests: a few pages of each, small enough to drain in seconds (4 sample users more).
USERS = ORDERS = 120
RECORDS = USERS + 4 + ORDERS


@pytest.fixture
def fake_caterings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[p.ServerProcess]:
    """The fake Caterings; ``indirect`` parametrisation gives it generated users and orders."""
    params: dict[str, Any] = getattr(request, "param", {})
    server = p.fake_caterings(log_path=tmp_path / "fake-caterings.log", **params).start()
    yield server
    server.kill()


def post(url: str, json: Any = None) -> httpx.Response:
    return httpx.post(url, json=json, headers=ADMIN, timeout=30)


def job_of(bridge_url: str, job_id: int) -> dict[str, Any]:
    response = httpx.get(f"{bridge_url}/sync/jobs/{job_id}", headers=ADMIN, timeout=10)
    response.raise_for_status()
    return response.json()


def wait_job(bridge_url: str, job_id: int, timeout: float = 60) -> dict[str, Any]:
    return p.wait_until(
        lambda: (job := job_of(bridge_url, job_id))["state"] in ("done", "failed") and job,
        timeout=timeout,
        interval=0.2,
        what=f"sync job {job_id} to end",
    )


def stored_job(database: Path, job_id: int) -> dict[str, Any]:
    """The job as the store has it (no bridge needed)."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        connection.row_factory = sqlite3.Row
        return dict(connection.execute("SELECT * FROM sync_jobs WHERE id = ?", (job_id,)).fetchone())


def usercom_requests(url: str) -> int:
    return int(p.fake_state(url)["request_count"])


def expected_from_caterings(users: int, orders: int, seed: int = 1) -> dict[str, Any]:
    """What User.com must hold after a full sync, computed from the fake's own (pure) data."""
    fake = FakeCaterings(
        token="t", brand_id=None, users=users, orders=orders, seed=seed, rate_limit=None, feed=b""
    )

    def every(page_of: Any) -> Iterator[dict[str, Any]]:
        page: int | None = 1
        while page is not None:
            answer = page_of(page, 500)
            yield from answer["items"]
            page = answer["next_page"]

    user_ids = {str(u["id"]) for u in every(fake.user_page)}
    reservations: set[str] = set()
    purchases: set[tuple[str, str]] = set()
    inactive: set[str] = set()
    for raw in every(fake.order_page):
        order = Order.model_validate(raw)
        for item in order.items:
            variant = variant_custom_id(order, item)
            if order.status == "paid":
                reservations.add(variant)
                purchases.add((item.item_xml_id or "", variant))
            elif order.status == "cancelled":
                inactive.add(variant)
    return {"users": user_ids, "reservations": reservations, "purchases": purchases, "inactive": inactive}


def check_everything_arrived(
    state: dict[str, Any], expected: dict[str, Any], *, after_kill: bool = False
) -> None:
    assert expected["users"] <= set(state["users"])
    reservations = Counter(
        e["product_custom_id"] for e in state["product_events"] if e["event_type"] == "reservation"
    )
    purchases = Counter(
        (e["product_custom_id"], e["data"]["custom_data"]["variant_custom_id"])
        for e in state["product_events"]
        if e["event_type"] == "purchase"
    )
    assert set(reservations) == expected["reservations"]
    assert set(purchases) == expected["purchases"]
    if not after_kill:
        assert set(reservations.values()) == {1} and set(purchases.values()) == {1}
    for variant in expected["reservations"]:
        assert state["products"][variant]["active"] is True
    for variant in expected["inactive"]:
        assert state["products"][variant]["active"] is False
    # 404s are the bridge asking after products it then creates; an "already exists" is the loser of
    # two deliveries creating the same new diet-simple at once (it then sends its event anyway);
    # after a SIGKILL, the calls it cut off have no answer (status None).
    allowed = {404, None} if after_kill else {404}
    assert [
        r for r in state["rejected"] if r["status"] not in allowed and "already exists" not in r["reason"]
    ] == []


# --- product feed ---------------------------------------------------------------------------------


def test_feed_sync_sends_changed_diet_simples_only(
    bridge_factory,
    fake_caterings: p.ServerProcess,
    fake_usercom: p.ServerProcess,  # type: ignore[no-untyped-def]
) -> None:
    bridge = bridge_factory(**FAST)
    report = post(f"{bridge.url}/sync/feed").json()
    assert (report["items"], report["sent"], report["unchanged"], report["deactivated"]) == (5, 5, 0, 0)
    p.wait_until(lambda: p.drained(bridge.url), what="outbox drained")

    products = p.fake_state(fake_usercom.url)["products"]
    office, standard, keto, sport = (products[i] for i in ("12-3-41", "9-2-30", "20-4-90", "15-1-77"))
    assert (office["price"], office["kcal"], office["daily_meals"], office["active"]) == (79.98, 800, 3, True)
    assert office["name"] == "Office 800 kcal" and office["image_url"].endswith("/img/office.jpg")
    assert (standard["price"], standard["active"]) == (59.9, True)
    assert keto["active"] is False
    assert (sport["price"], sport["kcal"]) == (74.95, 2500)

    calls = usercom_requests(fake_usercom.url)
    again = post(f"{bridge.url}/sync/feed").json()
    assert (again["sent"], again["unchanged"]) == (0, 5)
    p.wait_until(lambda: p.drained(bridge.url), what="outbox drained")
    assert usercom_requests(fake_usercom.url) == calls  # unchanged: User.com is not called

    feed = (SAMPLES / "feed.xml").read_bytes()
    start = feed.index(b"<item>\n      <g:id>15-1-77")
    end = feed.index(b"</item>", start) + len(b"</item>")
    httpx.put(
        f"{fake_caterings.url}/_fake/feed", content=feed[:start] + feed[end:], timeout=10
    ).raise_for_status()
    gone = post(f"{bridge.url}/sync/feed").json()
    assert (gone["sent"], gone["deactivated_ids"]) == (0, ["15-1-77"])
    p.wait_until(lambda: p.drained(bridge.url), what="outbox drained")
    after = p.fake_state(fake_usercom.url)
    assert after["products"]["15-1-77"]["active"] is False
    assert {k: v for k, v in after["products"].items() if k != "15-1-77"} == {
        k: v for k, v in products.items() if k != "15-1-77"
    }
    assert after["request_count"] == calls + 1  # one PUT for the one product that left


# --- orders export ----------------------------------------------------------------------------------


def import_orders(env: dict[str, str], path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "import-orders", str(path)],
        cwd=p.PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_orders_import_reaches_usercom_once(bridge_factory, fake_usercom: p.ServerProcess) -> None:  # type: ignore[no-untyped-def]
    bridge = bridge_factory(**FAST)
    env = {**os.environ, **bridge.env}

    first = import_orders(env, SAMPLES / "orders-export.csv")
    assert first.returncode == 1, first.stderr  # imported, with a bad row reported
    assert "orders-export.csv: line 5: calorific_id is empty; price 'abc' is not a number" in first.stderr
    p.wait_until(lambda: p.drained(bridge.url), what="outbox drained")

    state = p.fake_state(fake_usercom.url)
    kinds = Counter((e["product_custom_id"], e["event_type"]) for e in state["product_events"])
    assert kinds == Counter(
        {
            ("12-3-41", "purchase"): 1,
            ("12_3_41_41001", "reservation"): 1,
            ("15-1-77", "purchase"): 1,
            ("15_1_77_41002", "reservation"): 1,
            ("9-2-30", "purchase"): 1,
            ("9_2_30_41002", "reservation"): 1,
        }
    )
    trial = state["products"]["9_2_30_41002"]
    assert (trial["trial"], trial["price"], trial["active"], trial["purchase_id"]) == (
        True,
        59.9,
        True,
        "41002",
    )
    keto = state["products"]["20_4_90_41004"]
    assert keto["active"] is False
    assert {"1043", "2210", "4120"} <= set(state["users"])
    assert not any("41003" in k for k in state["products"])

    calls = state["request_count"]
    second = import_orders(env, SAMPLES / "orders-export.csv")
    assert "0 deliveries queued" in second.stdout, second.stdout
    assert second.returncode == 1 and "line 5" in second.stderr
    p.wait_until(lambda: p.drained(bridge.url), what="outbox drained")
    assert usercom_requests(fake_usercom.url) == calls  # the second run sends nothing

    third = import_orders(env, SAMPLES / "orders-export-cp1250.csv")
    assert third.returncode == 1 and "line 5" in third.stderr
    p.wait_until(lambda: p.drained(bridge.url), what="outbox drained")
    after = p.fake_state(fake_usercom.url)
    # The Windows-1250 file spells the trial's name with a plain hyphen where the UTF-8 one has a
    # dash: that one product's name is updated; nothing else is sent, and no event fires again.
    assert after["request_count"] - calls == 1
    assert after["products"]["9_2_30_41002"]["name"] == "Standard - próbny 1500 kcal"
    assert Counter((e["product_custom_id"], e["event_type"]) for e in after["product_events"]) == kinds


# --- full sync ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fake_caterings", [{"users": 30, "orders": 30}], indirect=True)
def test_dry_run_sends_nothing_and_a_second_start_is_409(
    bridge_factory,
    fake_caterings: p.ServerProcess,
    fake_usercom: p.ServerProcess,  # type: ignore[no-untyped-def]
) -> None:
    bridge = bridge_factory(SYNC_PAGE_SIZE="10", **FAST)
    p.fake_config(fake_caterings.url, delay_seconds=0.3)
    started = post(f"{bridge.url}/sync/full", {"dry_run": True})
    assert started.status_code == 202, started.text
    second = post(f"{bridge.url}/sync/full")
    assert second.status_code == 409 and second.json()["job_id"] == started.json()["job_id"]
    p.fake_config(fake_caterings.url, delay_seconds=0)

    job = wait_job(bridge.url, started.json()["job_id"])
    assert (job["state"], job["done"], job["failed"], job["total"]) == ("done", 64, 0, 64)
    assert job["deliveries"] > 64  # what it would have queued
    assert usercom_requests(fake_usercom.url) == 0
    assert p.outbox_summary(bridge.url) == {}

    status = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "sync",
            "status",
            str(job["id"]),
            "--url",
            bridge.url,
            "--token",
            p.ADMIN_TOKEN,
        ],
        cwd=p.PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"job {job['id']} done phase=orders") and "dry_run" in status.stdout


@pytest.mark.parametrize("fake_caterings", [{"users": USERS, "orders": ORDERS}], indirect=True)
def test_full_sync_brings_every_user_and_order_to_usercom(
    bridge_factory,
    fake_caterings: p.ServerProcess,
    fake_usercom: p.ServerProcess,  # type: ignore[no-untyped-def]
) -> None:
    bridge = bridge_factory(**FAST)
    started = post(f"{bridge.url}/sync/full")
    assert started.status_code == 202, started.text
    job = wait_job(bridge.url, started.json()["job_id"])
    assert (job["state"], job["done"], job["failed"]) == ("done", RECORDS, 0), job
    p.wait_until(lambda: p.drained(bridge.url), timeout=60, what="outbox drained")

    assert p.outbox_summary(bridge.url).get("dead", 0) == 0
    check_everything_arrived(p.fake_state(fake_usercom.url), expected_from_caterings(USERS, ORDERS))
    pages = p.fake_state(fake_caterings.url)["pages"]
    assert pages == ["users:1", "users:2", "orders:1", "orders:2"]


@pytest.mark.parametrize("fake_caterings", [{"users": USERS, "orders": ORDERS}], indirect=True)
def test_a_killed_sync_resumes_from_its_page_after_a_restart(
    bridge_factory,
    fake_caterings: p.ServerProcess,
    fake_usercom: p.ServerProcess,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    settings = {"SYNC_PAGE_SIZE": "20", "SYNC_HEARTBEAT_SECONDS": "0.5", "SYNC_STALE_SECONDS": "2", **FAST}
    bridge = bridge_factory(**settings)
    p.fake_config(fake_caterings.url, delay_seconds=0.2)
    job_id = post(f"{bridge.url}/sync/full").json()["job_id"]
    p.wait_until(lambda: job_of(bridge.url, job_id)["next_page"] >= 4, timeout=30, what="a few pages")
    bridge.kill()
    time.sleep(0.3)  # a page request in flight at the kill still reaches the fake's log
    served_before = len(p.fake_state(fake_caterings.url)["pages"])
    p.fake_config(fake_caterings.url, delay_seconds=0)
    at_kill = stored_job(tmp_path / "bridge.db", job_id)  # read before a new process can resume it
    assert at_kill["state"] == "running" and at_kill["next_page"] >= 4

    restarted = bridge_factory(**settings)
    job = wait_job(restarted.url, job_id)
    assert (job["state"], job["done"], job["failed"]) == ("done", RECORDS, 0), job

    pages = p.fake_state(fake_caterings.url)["pages"]
    assert pages.count("users:1") == 1  # not started over
    assert pages[served_before] == f"{at_kill['phase']}:{at_kill['next_page']}"  # resumed at its page
    p.wait_until(lambda: p.drained(restarted.url), timeout=60, what="outbox drained")
    # A delivery in flight at the kill is made again after its lease expires (at least once).
    assert p.outbox_summary(restarted.url).get("dead", 0) == 0
    check_everything_arrived(
        p.fake_state(fake_usercom.url), expected_from_caterings(USERS, ORDERS), after_kill=True
    )
