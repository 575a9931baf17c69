"""The full sync at scale: 20,000 users and 20,000 orders, a SIGKILL halfway, flat memory.

Outside the default run (``pytest -m slow``). It takes minutes: every delivery goes through the
real bridge and the fake User.com at ``USERCOM_RATE_LIMIT`` (300/s, the fake's own limit too).
The figures it prints are recorded in ``docs/sync.md``; ``SYNC_SCALE_REPORT=<file>`` also writes
them as JSON. On a machine where other pytest sessions run meanwhile, give it a folder of its own
(``--basetemp=/tmp/sync-scale``): pytest removes old temporary folders when a session starts.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_sync_e2e import (
    ADMIN,
    check_everything_arrived,
    expected_from_caterings,
    job_of,
    stored_job,
)
from tests.support import processes as p

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

USERS = int(os.environ.get("SYNC_SCALE_USERS", "20000"))
ORDERS = int(os.environ.get("SYNC_SCALE_ORDERS", "20000"))
RATE = 300


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler(threading.Thread):
    """Samples a process's resident memory every ``interval`` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[int] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            value = rss_kib(self.pid)
            if value is not None:
                self.samples.append(value)
            self._halt.wait(self.interval)

    def stop(self) -> list[int]:
        self._halt.set()
        self.join(5)
        return self.samples


def idle_rss(pid: int) -> int:
    """Resident memory once the freshly started process has settled (KiB)."""
    time.sleep(2)
    samples = []
    for _ in range(5):
        samples.append(rss_kib(pid) or 0)
        time.sleep(0.2)
    return max(samples)


def usercom_state(url: str) -> dict[str, Any]:
    response = httpx.get(url + "/_fake/state", timeout=300)  # tens of thousands of records
    response.raise_for_status()
    return response.json()


def test_twenty_thousand_users_and_orders_arrive_once_killed_halfway(tmp_path: Path) -> None:
    usercom = p.fake_usercom(rate_limit=RATE, log_path=tmp_path / "fake-usercom.log").start()
    caterings = p.fake_caterings(users=USERS, orders=ORDERS, log_path=tmp_path / "fake-caterings.log").start()
    servers = [usercom, caterings]
    env = p.bridge_env(
        f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}",
        usercom.url,
        caterings.url,
        USERCOM_RATE_LIMIT=str(RATE),
        CATERINGS_RATE_LIMIT="50",
        SYNC_PAGE_SIZE="200",
        SYNC_HEARTBEAT_SECONDS="1",
        SYNC_STALE_SECONDS="5",
        LOG_LEVEL="WARNING",
    )
    figures: dict[str, Any] = {"users": USERS, "orders": ORDERS, "rate_limit": RATE}
    try:
        bridge = p.bridge(env, log_path=tmp_path / "bridge-0.log").start()
        servers.append(bridge)
        assert bridge.process is not None
        figures["idle_rss_mib"] = round(idle_rss(bridge.process.pid) / 1024, 1)
        sampler = RssSampler(bridge.process.pid)
        sampler.start()
        started = time.monotonic()
        job_id = httpx.post(f"{bridge.url}/sync/full", headers=ADMIN, timeout=30).json()["job_id"]

        # Killed in the middle of the orders, which carry most of the deliveries: mid-phase, mid-page.
        half = USERS + 4 + ORDERS // 2
        p.wait_until(
            lambda: job_of(bridge.url, job_id)["done"] >= half, timeout=7200, interval=1, what="half way"
        )
        bridge.kill()
        samples = sampler.stop()
        figures["killed_after_s"] = round(time.monotonic() - started)
        time.sleep(0.5)
        served_before = len(p.fake_state(caterings.url)["pages"])
        at_kill = stored_job(tmp_path / "bridge.db", job_id)
        figures["killed_at"] = (
            f"{at_kill['phase']} page {at_kill['next_page']}, {at_kill['done']} records done"
        )

        restarted = p.bridge(env, log_path=tmp_path / "bridge-1.log").start()
        servers.append(restarted)
        assert restarted.process is not None
        figures["restart_idle_rss_mib"] = round(idle_rss(restarted.process.pid) / 1024, 1)
        sampler = RssSampler(restarted.process.pid)
        sampler.start()
        job = p.wait_until(
            lambda: (j := job_of(restarted.url, job_id))["state"] in ("done", "failed") and j,
            timeout=10800,
            interval=1,
            what="the job to end",
        )
        figures["job_s"] = round(time.monotonic() - started)
        p.wait_until(lambda: p.drained(restarted.url), timeout=10800, interval=2, what="outbox drained")
        figures["drained_s"] = round(time.monotonic() - started)
        samples += sampler.stop()
        figures["peak_rss_mib"] = round(max(samples) / 1024, 1)
        figures["peak_over_idle_mib"] = round(figures["peak_rss_mib"] - figures["idle_rss_mib"], 1)

        assert (job["state"], job["failed"]) == ("done", 0), job
        assert job["done"] == USERS + 4 + ORDERS
        figures["deliveries"] = job["deliveries"]
        pages = p.fake_state(caterings.url)["pages"]
        assert pages.count("users:1") == 1  # not started over
        assert pages[served_before] == f"{at_kill['phase']}:{at_kill['next_page']}"
        figures["pages_served"] = len(pages)

        state = usercom_state(usercom.url)
        figures["usercom_requests"] = state["request_count"]
        figures["usercom_429s"] = state["rate_limited_count"]
        figures["max_rate_1s"] = state["max_rate_1s"]
        figures["outbox"] = p.outbox_summary(restarted.url)
        print("\nfull sync at scale:", json.dumps(figures))
        if os.environ.get("SYNC_SCALE_REPORT"):
            Path(os.environ["SYNC_SCALE_REPORT"]).write_text(json.dumps(figures, indent=2))

        assert state["max_rate_1s"] <= RATE
        assert figures["outbox"].get("dead", 0) == 0
        assert figures["peak_over_idle_mib"] < 60, figures
        # A delivery in flight at the kill is made again once its lease lapses (at least once).
        check_everything_arrived(state, expected_from_caterings(USERS, ORDERS), after_kill=True)
    finally:
        for server in reversed(servers):
            server.kill()
