"""Scale-out on PostgreSQL: three `bridge worker` and two `bridge serve` (WORKER_IN_PROCESS=false)
processes, many users' webhooks sent at once, one worker SIGKILLed in the middle.

What must hold: every business event reaches User.com exactly once; each user's events in order
(order before purchase before reservation, per order); the total request rate at User.com never
above the limit the processes share; the killed worker's deliveries taken over after their lease.

The full run (5,000 webhooks for 500 users) is ``slow``: ``pytest -m slow``. The default run has
the same test scaled down.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from tests.support import ops
from tests.support import processes as p

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def start_all(servers: list[p.ServerProcess]) -> None:
    """Start processes at the same moment (they race to migrate a fresh database)."""
    errors: list[BaseException] = []

    def start(server: p.ServerProcess) -> None:
        try:
            server.start(timeout=60)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def run_scale_out(
    tmp_path: Path, fake_usercom: p.ServerProcess, postgres_url: str, *, users: int, limit: int, kill_at: float = 0.3,
) -> dict[str, float]:
    p.fake_config(fake_usercom.url, rate_limit=limit)
    env = p.bridge_env(
        postgres_url, fake_usercom.url, "http://127.0.0.1:9",
        WORKER_IN_PROCESS="false", USERCOM_RATE_LIMIT=str(limit), SENDER_PROCESSES="3", LEASE_SECONDS="8",
        WORKER_CONCURRENCY="8", USERCOM_TIMEOUT_SECONDS="15", LOG_LEVEL="WARNING",
        # five processes beside whatever else uses this server: at most 8 connections each
        DATABASE_POOL_SIZE="4", DATABASE_MAX_OVERFLOW="4",
    )
    webs = [p.bridge(env, log_path=tmp_path / f"serve-{n}.log") for n in range(2)]
    workers = []
    for n in range(3):
        port = p.free_port()
        workers.append(p.bridge({**env, "WORKER_METRICS_PORT": str(port)}, port=port,
                                log_path=tmp_path / f"worker-{n}.log", command="worker"))
    try:
        return _run(webs, workers, fake_usercom, postgres_url, users=users, limit=limit, kill_at=kill_at)
    finally:
        for server in webs + workers:
            server.kill()


def _run(
    webs: list[p.ServerProcess], workers: list[p.ServerProcess], fake_usercom: p.ServerProcess, postgres_url: str, *,
    users: int, limit: int, kill_at: float,
) -> dict[str, float]:
    start_all(webs + workers)
    uids = [100_000 + n for n in range(users)]
    expected = sum(ops.expected_events(uids).values())
    started = time.monotonic()
    report: dict[str, object] = {}
    sender = threading.Thread(
        target=lambda: report.update(sent=asyncio.run(ops.send_workload([w.url for w in webs], uids, concurrency=16)))
    )
    sender.start()

    # One worker is SIGKILLed in the middle. Answers are slowed first, so what it has sent is
    # still waiting at User.com (which drops a request whose client went away) rather than
    # done there but not yet recorded here: then "exactly once" is a fair thing to demand.
    p.wait_until(lambda: len(p.fake_state(fake_usercom.url)["product_events"]) >= expected * kill_at,
                 timeout=600, interval=0.5, what="some progress before the kill")
    victim = workers[0]
    p.fake_config(fake_usercom.url, delay_seconds=6)
    time.sleep(2.0)  # what was answered before is recorded; what is sent now waits at User.com
    held = [row[0] for row in ops.query(
        postgres_url, f"SELECT id FROM deliveries WHERE state = 'in_flight' AND leased_by LIKE '%:{victim.process.pid}:%'"
    )]
    victim.kill()
    killed_at = time.monotonic()
    p.fake_config(fake_usercom.url, delay_seconds=0)

    sender.join(timeout=900)
    assert not sender.is_alive(), "sending did not finish"
    sent = report["sent"]
    assert sent.statuses == {202: users * ops.PER_USER}, (sent.statuses, sent.retried)  # type: ignore[attr-defined]
    p.wait_until(lambda: p.drained(webs[0].url), timeout=900, interval=1, what="outbox drained")
    finished = time.monotonic()

    state = p.fake_state(fake_usercom.url)
    try:
        ops.check_final_state(state, uids)
    except AssertionError as failure:
        held_keys = ops.event_keys_of(postgres_url, held)
        twice = {k for k, n in ops.seen_events(state).items() if n > 1}
        raise AssertionError(f"{failure}\nheld by the killed worker: {held_keys}\n"
                             f"duplicates among them: {twice & set(held_keys.values())}") from None
    assert state["max_rate_1s"] <= limit, state["max_rate_1s"]
    summary = p.outbox_summary(webs[1].url)
    assert summary.get("dead", 0) == 0 and summary.get("in_flight", 0) == 0, summary

    assert held, "the killed worker held nothing: kill it later"
    rows = ops.query(postgres_url, f"SELECT id, state, leased_by FROM deliveries WHERE id IN ({','.join(map(str, held))})")
    assert {r[1] for r in rows} == {"done"}
    assert not any(f":{victim.process.pid}:" in (r[2] or "") for r in rows), "taken over by another worker"

    figures = {
        "users": users, "webhooks": sent.sent, "business_events": expected,  # type: ignore[attr-defined]
        "upstream_requests": state["request_count"], "rate_limited": state["rate_limited_count"],
        "max_rate_1s": state["max_rate_1s"], "limit": limit, "send_seconds": round(sent.seconds, 1),  # type: ignore[attr-defined]
        "webhooks_sent_again_after_5xx": sum(sent.retried.values()),  # type: ignore[attr-defined]
        "webhooks_per_second": round(sent.sent / sent.seconds, 1),  # type: ignore[attr-defined]
        "total_seconds": round(finished - started, 1), "held_by_killed_worker": len(held),
        "taken_over_within_seconds": round(finished - killed_at, 1),
    }
    print("\nscale-out figures:", figures)
    return figures


def test_three_workers_two_web_processes_scaled_down(tmp_path, fake_usercom, postgres_url) -> None:  # type: ignore[no-untyped-def]
    run_scale_out(tmp_path, fake_usercom, postgres_url, users=int(os.environ.get("SCALE_USERS", "30")), limit=60)


@pytest.mark.slow
def test_three_workers_two_web_processes_5000_webhooks_500_users(tmp_path, fake_usercom, postgres_url) -> None:  # type: ignore[no-untyped-def]
    run_scale_out(tmp_path, fake_usercom, postgres_url, users=500, limit=60, kill_at=0.3)
