"""Full sync: N users and N orders from the fake Caterings API into a rate-limited fake User.com.

The fake Caterings API generates the records (``--users N --orders N``); the bridge (``bridge
serve`` on a fresh SQLite file, in-process worker, ``USERCOM_RATE_LIMIT = L``) is started with
``POST /sync/full``, and ``GET /sync/jobs/{id}`` and ``/deliveries/summary`` are polled until the
job is done and the outbox is empty. Then the same sync runs a second time over unchanged data.

Measured: wall time against its lower bound (the User.com calls made, less 429s, over ``L``),
the bridge's peak RSS (``VmRSS`` sampled from ``/proc``), the deliveries by outcome, and the calls
saved by skipping what User.com already has (the second run's calls against the first's).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from bench import common
from bench.common import Databases, RunDir

TARGET_WALL_OVER_BOUND = 1.1
# "within a few tens of MB of idle": the bridge holds one page at a time, the queue is in the database
TARGET_PEAK_OVER_IDLE_MIB = 50.0


def _post_sync(bridge_url: str) -> int:
    response = httpx.post(bridge_url + "/sync/full", headers=common.ADMIN_HEADERS, json={}, timeout=30)
    if response.status_code == 404:
        raise LookupError("the bridge has no POST /sync/full")
    response.raise_for_status()
    return int(response.json()["job_id"])


def _job(bridge_url: str, job_id: int) -> dict[str, Any]:
    response = httpx.get(f"{bridge_url}/sync/jobs/{job_id}", headers=common.ADMIN_HEADERS, timeout=30)
    response.raise_for_status()
    return dict(response.json())


async def _one_sync(bridge_url: str, pid: int, usercom_url: str, timeout: float) -> dict[str, Any]:
    before = common.fake_state(usercom_url)
    idle = common.rss_kib(pid)  # the bridge started, migrated and served a few requests: its resting size
    sampler = common.RssSampler(pid).start()
    cpu_before = common.cpu_seconds(pid)
    started = time.monotonic()
    job_id = await asyncio.to_thread(_post_sync, bridge_url)
    deadline = started + timeout
    job: dict[str, Any] = {}
    job_done_at = None
    while True:
        await asyncio.sleep(0.5)
        if time.monotonic() > deadline:
            raise TimeoutError(f"sync not finished after {timeout} s: job {job}")
        job = await asyncio.to_thread(_job, bridge_url, job_id)
        if job["state"] == "failed":
            raise RuntimeError(f"sync job failed: {job.get('last_error')}")
        if job["state"] != "done":
            continue
        job_done_at = job_done_at or time.monotonic()
        by_state = await asyncio.to_thread(common.outbox_by_state, bridge_url)
        if by_state.get("pending", 0) == 0 and by_state.get("in_flight", 0) == 0:
            break
    wall = time.monotonic() - started
    peak = await sampler.stop()
    cpu = common.cpu_seconds(pid) - cpu_before
    after = common.fake_state(usercom_url)
    calls = after["request_count"] - before["request_count"]
    throttled = after["rate_limited_count"] - before["rate_limited_count"]
    return {
        "job_id": job_id,
        "job": {k: job.get(k) for k in ("state", "done", "failed", "total", "deliveries")},
        "wall_s": round(wall, 2),
        "paging_s": round((job_done_at or started) - started, 2),
        "usercom_calls": calls - throttled,
        "rate_limited_429": throttled,
        "by_state": by_state,
        "idle_rss_mib": round(idle / 1024, 1),
        "peak_rss_mib": round(peak / 1024, 1),
        "peak_over_idle_mib": round((peak - idle) / 1024, 1),
        "bridge_cpu_s": round(cpu, 2),
        "usercom_users": len(after["users"]),
        "usercom_products": len(after["products"]),
        "usercom_product_events": len(after["product_events"]),
    }


def run(run_dir: RunDir, databases: Databases, size: dict[str, Any], rate_limit: float) -> dict[str, Any]:
    users, orders = size["sync_users"], size["sync_orders"]
    database_url = databases.new("sqlite", "sync")
    caterings = common.fake_caterings(run_dir, users, orders)
    usercom = common.fake_usercom(run_dir, "sync-fake-usercom", rate_limit=rate_limit)
    env = common.bridge_env(
        database_url, usercom.url, caterings.url, USERCOM_RATE_LIMIT=str(rate_limit), LOG_LEVEL="WARNING"
    )
    bridge = common.bridge(run_dir, "sync-bridge", env)
    common.start_all(caterings, usercom, bridge)  # the bridge calls neither until the sync starts
    try:
        with common.running(bridge):
            assert bridge.process is not None
            first = asyncio.run(_one_sync(bridge.url, bridge.process.pid, usercom.url, size["timeout_s"]))
            outcomes_first = asyncio.run(common.done_deliveries(database_url))
            second = asyncio.run(_one_sync(bridge.url, bridge.process.pid, usercom.url, size["timeout_s"]))
            outcomes_all = asyncio.run(common.done_deliveries(database_url))
    finally:
        usercom.terminate()
        caterings.terminate()

    skipped_first = outcomes_first["outcomes"].get("skipped_unchanged", 0)
    skipped_all = outcomes_all["outcomes"].get("skipped_unchanged", 0)
    second["skipped_unchanged"] = skipped_all - skipped_first
    second["calls_saved"] = first["usercom_calls"] - second["usercom_calls"]
    lower_bound = first["usercom_calls"] / rate_limit
    return {
        "users": users,
        "orders": orders,
        "rate_limit": rate_limit,
        **first,
        "deliveries_by_kind": outcomes_first["by_kind"],
        "outcomes": outcomes_first["outcomes"],
        "skipped_unchanged": skipped_first,
        "lower_bound_s": round(lower_bound, 2),
        "wall_over_bound": round(first["wall_s"] / lower_bound, 3) if lower_bound else None,
        "targets": {
            "wall_over_bound_max": TARGET_WALL_OVER_BOUND,
            "wall_met": bool(lower_bound) and first["wall_s"] <= TARGET_WALL_OVER_BOUND * lower_bound,
            "peak_over_idle_mib_max": TARGET_PEAK_OVER_IDLE_MIB,
            "memory_met": first["peak_over_idle_mib"] <= TARGET_PEAK_OVER_IDLE_MIB,
        },
        "second_run": second,
    }
