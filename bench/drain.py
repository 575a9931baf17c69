"""Drain: a queue of user upserts emptied against a rate-limited fake User.com.

``N`` planned ``USER_UPSERT`` deliveries for distinct users are written straight into a fresh
outbox with ``app.delivery.repository.enqueue`` before any worker runs. Then the fake User.com
(``rate_limit = L``) and ``bridge serve`` (in-process worker, ``USERCOM_RATE_LIMIT = L``) start,
and the outbox is polled until nothing is pending or in flight.

Measured: the rate achieved (deliveries done over the span from the first to the last ``done_at``
in the outbox), that rate over ``L``, the 429s the fake answered (and the most requests it saw in
any one second), the time to empty the queue, and the bridge's CPU seconds per delivery.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import common
from bench.common import Databases, RunDir

TARGET_UTILISATION = 0.95
ENQUEUE_BATCH = 1000
FIRST_USER_ID = 900_001


def planned_user_upserts(count: int) -> list[Any]:
    from app.caterings.schemas import User
    from app.delivery.plan import USER_UPSERT, PlannedDelivery, user_lane
    from app.mapping import user_upsert_body

    planned = []
    for i in range(count):
        user = User.model_validate(
            {
                "id": FIRST_USER_ID + i,
                "email": f"drain.{i}@example.com",
                "first_name": "Anna",
                "last_name": "Kowalska",
                "phone": "600 100 200",
                "city": "Kraków",
                "agreements": {"data_processing": True, "marketing": i % 2 == 0},
                "total_spent": "399,90",
                "client_panel": True,
            }
        )
        planned.append(PlannedDelivery(USER_UPSERT, user_lane(user.id), {"body": user_upsert_body(user)}))
    return planned


async def _enqueue(database_url: str, planned: list[Any]) -> None:
    from app.db import create_engine, create_session_factory
    from app.delivery import repository

    engine = create_engine(database_url)
    sessions = create_session_factory(engine)
    try:
        for start in range(0, len(planned), ENQUEUE_BATCH):
            async with sessions.begin() as session:
                await repository.enqueue(session, planned[start : start + ENQUEUE_BATCH])
    finally:
        await engine.dispose()


def fill_outbox(database_url: str, count: int) -> None:
    from app.migrate import upgrade_to_head

    upgrade_to_head(database_url)
    asyncio.run(_enqueue(database_url, planned_user_upserts(count)))


def run(run_dir: RunDir, databases: Databases, size: dict[str, Any], rate_limit: float) -> dict[str, Any]:
    count = size["drain_count"]
    database_url = databases.new("sqlite", "drain")
    usercom = common.fake_usercom(run_dir, "drain-fake-usercom", rate_limit=rate_limit)
    with ThreadPoolExecutor(1) as pool:  # the fake starts while the outbox fills
        starting = pool.submit(usercom.start)
        fill_outbox(database_url, count)
        starting.result()
    try:
        env = common.bridge_env(
            database_url, usercom.url, USERCOM_RATE_LIMIT=str(rate_limit), LOG_LEVEL="WARNING"
        )
        started = time.monotonic()
        with common.running(common.start_bridge(run_dir, "drain-bridge", env)) as bridge:
            assert bridge.process is not None
            pid = bridge.process.pid
            cpu_before = common.cpu_seconds(pid)
            deadline = time.monotonic() + size["timeout_s"]
            by_state: dict[str, int] = {}
            while time.monotonic() < deadline:
                by_state = common.outbox_by_state(bridge.url)
                if by_state.get("pending", 0) == 0 and by_state.get("in_flight", 0) == 0:
                    break
                time.sleep(0.25)
            else:
                raise TimeoutError(f"outbox not drained after {size['timeout_s']} s: {by_state}")
            drained_at = time.monotonic()
            cpu = common.cpu_seconds(pid) - cpu_before
        state = common.fake_state(usercom.url)
    finally:
        usercom.terminate()

    done = asyncio.run(common.done_deliveries(database_url))
    # n deliveries finished over n - 1 gaps: the rate is (n - 1) / span.
    achieved = (done["count"] - 1) / done["span_s"] if done["span_s"] > 0 else 0.0
    return {
        "deliveries": count,
        "rate_limit": rate_limit,
        "by_state": by_state,
        "outcomes": done["outcomes"],
        "usercom_requests": state["request_count"],
        "achieved_rps": round(achieved, 2),
        "utilisation": round(achieved / rate_limit, 4),
        "rate_limited_429": state["rate_limited_count"],
        "max_rate_1s": state["max_rate_1s"],
        "time_to_empty_s": round(done["span_s"], 2),
        "drain_seen_at_s": round(drained_at - started, 2),
        "lower_bound_s": round((count - 1) / rate_limit, 2),
        "bridge_cpu_s": round(cpu, 2),
        "bridge_cpu_ms_per_delivery": round(1000 * cpu / count, 2) if count else None,
        "target_utilisation": TARGET_UTILISATION,
        "target_met": achieved / rate_limit >= TARGET_UTILISATION,
    }
