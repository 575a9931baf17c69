"""Operations, end to end on real processes: graceful stop, upstream faults, an outage seen in the
metrics, dead deliveries replayed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ops
from tests.support import processes as p

pytestmark = pytest.mark.e2e


def start_worker(bridge_factory: Callable[..., p.ServerProcess], **env: str) -> p.ServerProcess:
    """A `bridge worker` process, with its /health and /metrics on a port of its own."""
    port = p.free_port()
    return bridge_factory(port=port, command="worker", WORKER_METRICS_PORT=str(port), **env).start()


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}"


# --- graceful stop


@pytest.mark.parametrize("mode", ["serve with its worker", "worker"])
def test_sigterm_finishes_or_gives_back_what_is_in_flight_and_exits_0(
    mode: str, bridge_factory, fake_usercom: p.ServerProcess, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    database = sqlite_url(tmp_path)
    # 7 lanes, 6 at a time, 2 calls a second: at SIGTERM some calls are out, the rest wait their turn
    common = {"DATABASE_URL": database, "SHUTDOWN_TIMEOUT_SECONDS": "6", "USERCOM_RATE_LIMIT": "2",
              "WORKER_CONCURRENCY": "6"}
    p.fake_config(fake_usercom.url, delay_seconds=1.5)  # slow answers: calls are in flight at SIGTERM
    if mode == "worker":
        web = bridge_factory(WORKER_IN_PROCESS="false", **common)
        stopping = start_worker(bridge_factory, **common)
    else:
        web = stopping = bridge_factory(**common)
    uids = [900 + n for n in range(7)]
    asyncio.run(ops.send_workload([web.url], uids, concurrency=7))
    p.wait_until(lambda: p.fake_state(fake_usercom.url)["request_count"] >= 2, what="calls in flight")
    time.sleep(0.3)

    started = time.monotonic()
    assert stopping.terminate(timeout=30) == 0, stopping.log_tail()
    took = time.monotonic() - started
    assert took < 6 + 3, f"stop took {took:.1f}s"
    if mode == "worker":
        assert web.terminate(timeout=30) == 0, web.log_tail()
    assert ops.leases_left(database) == [], "a delivery was left in flight after a graceful stop"
    done = ops.query(database, "SELECT count(*) FROM deliveries WHERE state = 'done'")[0][0]
    assert done >= 1  # the calls already sent were let finish, not cut
    assert "deliveries given back" in stopping.log_tail(400)  # those waiting for the limiter, at once

    p.fake_config(fake_usercom.url, delay_seconds=0)
    restarted = bridge_factory(DATABASE_URL=database, USERCOM_RATE_LIMIT="50")
    p.wait_until(lambda: p.drained(restarted.url), timeout=60, what="outbox drained after restart")
    ops.check_final_state(p.fake_state(fake_usercom.url), uids)


# --- upstream faults


FAULTS = {
    # name: (bridge settings, fault settings while sending, settings after `seconds`, seconds)
    "500s and 503s": ({}, {"status_sequence": [500, 503, 502, 504, 408] * 4, "error_rate": 0.15}, {}, 0),
    "429 storm": ({}, {"storm_seconds": 3, "retry_after": 1}, {}, 0),
    "dropped connections": ({}, {"drop_connections": True}, {"drop_connections": False}, 2.5),
    "timeouts, then slow answers": ({"USERCOM_TIMEOUT_SECONDS": "0.5"}, {"delay_seconds": 1.0},
                                    {"delay_seconds": 0.2}, 3),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_every_fault_is_outlasted_and_nothing_fires_twice(
    fault: str, bridge_factory, fake_usercom: p.ServerProcess  # type: ignore[no-untyped-def]
) -> None:
    settings, during, after, seconds = FAULTS[fault]
    bridge = bridge_factory(USERCOM_RATE_LIMIT="40", WORKER_CONCURRENCY="8", **settings)
    p.fake_config(fake_usercom.url, seed=11, **during)
    uids = [1000 + n for n in range(6)]
    report = asyncio.run(ops.send_workload([bridge.url], uids, concurrency=6))
    assert report.statuses == {202: len(uids) * ops.PER_USER}
    if seconds:
        time.sleep(max(0.0, seconds - report.seconds))
        p.fake_config(fake_usercom.url, **after)
    p.wait_until(lambda: p.drained(bridge.url), timeout=120, interval=0.3, what=f"outbox drained after {fault}")
    state = p.fake_state(fake_usercom.url)
    assert state["request_count"] > len(ops.expected_events(uids))
    assert any(r["status"] != 404 for r in state["rejected"]), "the fault was never hit"
    ops.check_final_state(state, uids)
    assert p.outbox_summary(bridge.url).get("dead", 0) == 0


# --- an outage, seen in the metrics


@pytest.mark.postgres
def test_an_outage_shows_in_the_oldest_pending_age_and_is_outlasted(
    bridge_factory, fake_usercom: p.ServerProcess, postgres_url: str  # type: ignore[no-untyped-def]
) -> None:
    common = {"DATABASE_URL": postgres_url, "USERCOM_RATE_LIMIT": "40", "SENDER_PROCESSES": "2"}
    web = bridge_factory(WORKER_IN_PROCESS="false", **common)
    workers = [start_worker(bridge_factory, **common) for _ in range(2)]
    p.fake_config(fake_usercom.url, down=True)
    uids = [2000 + n for n in range(6)]
    asyncio.run(ops.send_workload([web.url], uids, concurrency=6))

    ages = []
    for _ in range(8):
        text = ops.scrape(web.url)
        ages.append(ops.sample(text, "bridge_oldest_pending_age_seconds"))
        assert ops.sample(text, "bridge_queue_depth") > 0  # type: ignore[operator]
        time.sleep(0.5)
    assert ages == sorted(ages) and ages[-1] - ages[0] >= 3, ages  # rising through the outage

    p.fake_config(fake_usercom.url, down=False)
    p.wait_until(lambda: p.drained(web.url), timeout=120, interval=0.3, what="outbox drained after the outage")
    after = ops.scrape(web.url)
    assert ops.sample(after, "bridge_oldest_pending_age_seconds") == 0
    assert ops.sample(after, "bridge_queue_depth") == 0
    assert ops.sample(after, "bridge_deliveries", state="dead") == 0
    ops.check_final_state(p.fake_state(fake_usercom.url), uids)

    # each worker reports its own work and its share of the rate
    settled = 0.0
    for worker in workers:
        text = ops.scrape(worker.url)
        assert ops.sample(text, "bridge_rate_limit_per_second", system="usercom") == 20
        settled += sum(s.value for f in text_string_to_metric_families(text)
                       for s in f.samples if s.name == "bridge_deliveries_settled_total")
        assert ops.sample(text, "bridge_upstream_calls_total", system="usercom", status="503")  # saw the outage
    assert settled >= len(ops.expected_events(uids))


# --- dead deliveries, replayed once the cause is fixed


def test_dead_deliveries_are_listed_with_reasons_and_replayed(
    bridge_factory, fake_usercom: p.ServerProcess  # type: ignore[no-untyped-def]
) -> None:
    bridge = bridge_factory()
    p.fake_config(fake_usercom.url, status_sequence=[400, 400, 400])  # e.g. an attribute not yet defined
    for n in range(3):
        body = {"type": "user.created", "occurred_at": "2026-07-02T18:20:00+02:00",
                "data": {"user": {"id": 3000 + n, "email": f"k{n}@example.com"}}}
        raw, headers = p.signed_webhook(body, f"msg_dead_{n}")
        assert httpx.post(bridge.url + "/webhooks/caterings", content=raw, headers=headers).status_code == 202
    p.wait_until(lambda: p.outbox_summary(bridge.url).get("dead", 0) == 3, what="three dead deliveries")

    listed = ops.admin("GET", bridge.url + "/deliveries", params={"state": "dead"}).json()["items"]
    assert [(d["kind"], d["lane"], d["last_status"]) for d in listed] == [
        ("usercom.user.upsert", f"user:{3000 + n}", 400) for n in range(3)]
    assert all("Injected fault 400" in d["last_error"] and d["attempts"] == 1 for d in listed)
    assert p.fake_state(fake_usercom.url)["users"] == {}

    first = listed[0]["id"]
    assert ops.admin("POST", f"{bridge.url}/deliveries/{first}/retry").json() == {"id": first, "state": "pending"}
    p.wait_until(lambda: "3000" in p.fake_state(fake_usercom.url)["users"], what="replayed delivery done")
    assert ops.admin("POST", f"{bridge.url}/deliveries/{first}/retry").status_code == 409
    assert ops.admin("POST", bridge.url + "/deliveries/retry", params={"state": "dead"}).json() == {"retried": 2}
    p.wait_until(lambda: p.drained(bridge.url), what="all replayed")
    assert set(p.fake_state(fake_usercom.url)["users"]) == {"3000", "3001", "3002"}
    assert p.outbox_summary(bridge.url).get("dead", 0) == 0
