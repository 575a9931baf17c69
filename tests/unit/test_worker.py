"""The worker loop: sleeping while throttled, lease heartbeats, and a graceful stop."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from app.delivery import repository
from app.delivery.handlers import HANDLERS, HandlerContext
from app.delivery.plan import CONSENT_UPDATE, USER_UPSERT, PlannedDelivery
from app.delivery.policy import RetryPolicy
from app.delivery.worker import Worker
from app.models import Delivery
from app.ratelimit import AdaptiveRateLimiter
from app.upstream import CURRENT_PROGRESS, UpstreamError


def make_worker(sessions, **kw) -> Worker:  # type: ignore[no-untyped-def]
    ctx = HandlerContext(
        sessions=sessions,
        usercom=SimpleNamespace(limiter=AdaptiveRateLimiter(1000)),  # type: ignore[arg-type]
        caterings=SimpleNamespace(limiter=AdaptiveRateLimiter(1000)),  # type: ignore[arg-type]
    )
    options = {"poll_seconds": 0.05, "lease_seconds": 30.0, "concurrency": 8}
    options.update(kw)
    return Worker(ctx, policy=RetryPolicy(base_seconds=0.05, cap_seconds=0.1), worker_id="w-test", **options)


async def enqueue(sessions, *items: tuple[str, str]) -> list[int]:  # type: ignore[no-untyped-def]
    async with sessions.begin() as s:
        added = await repository.enqueue(s, [PlannedDelivery(kind, lane, {}) for kind, lane in items])
    return [d.id for d in added]


async def rows(sessions) -> dict[int, Delivery]:  # type: ignore[no-untyped-def]
    async with sessions() as s:
        return {d.id: d for d in (await s.execute(select(Delivery))).scalars()}


async def wait_for(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


async def run_worker_until(sessions, predicate, **kw) -> None:  # type: ignore[no-untyped-def]
    """Run a worker until ``predicate()`` holds, then stop it gracefully."""
    worker = make_worker(sessions, **kw)
    task = asyncio.create_task(worker.run(drain_timeout=1))
    await wait_for(predicate)
    worker.stop()
    await task


@pytest.fixture
def claims(monkeypatch):  # type: ignore[no-untyped-def]
    """Every claim the worker makes, with the systems it asked for."""
    seen: list[object] = []
    original = repository.claim

    async def spy(session, **kw):  # type: ignore[no-untyped-def]
        seen.append(kw.get("targets"))
        return await original(session, **kw)

    monkeypatch.setattr(repository, "claim", spy)
    return seen


async def test_a_worker_sleeps_while_every_upstream_is_paused(sessions, claims, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    async def ok(_ctx, _d):  # type: ignore[no-untyped-def]
        return "sent"

    monkeypatch.setitem(HANDLERS, USER_UPSERT, ok)
    (delivery_id,) = await enqueue(sessions, (USER_UPSERT, "user:1"))
    worker = make_worker(sessions)
    worker.ctx.usercom.limiter.record_throttled(0.6)
    worker.ctx.caterings.limiter.record_throttled(0.6)
    task = asyncio.create_task(worker.run(drain_timeout=1))
    await asyncio.sleep(0.4)
    assert claims == []  # no database polling while throttled
    await wait_for(lambda: _state_is(sessions, delivery_id, "done"))
    worker.stop()
    await task


async def _state_is(sessions, delivery_id: int, state: str) -> bool:  # type: ignore[no-untyped-def]
    return (await rows(sessions))[delivery_id].state == state


async def test_one_paused_upstream_does_not_stall_the_other(sessions, claims, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    async def ok(_ctx, _d):  # type: ignore[no-untyped-def]
        return "sent"

    monkeypatch.setitem(HANDLERS, USER_UPSERT, ok)
    monkeypatch.setitem(HANDLERS, CONSENT_UPDATE, ok)
    usercom_id, caterings_id = await enqueue(sessions, (USER_UPSERT, "user:1"), (CONSENT_UPDATE, "consent:1"))
    worker = make_worker(sessions)
    worker.ctx.usercom.limiter.record_throttled(5)
    task = asyncio.create_task(worker.run(drain_timeout=1))
    await wait_for(lambda: _state_is(sessions, caterings_id, "done"))
    state = (await rows(sessions))[usercom_id]
    assert (state.state, state.leased_by) == ("pending", None)  # not claimed only to sit on a lease
    assert claims and all(targets == ["caterings"] for targets in claims)
    worker.stop()
    await task


async def test_stop_gives_back_at_once_what_waits_for_the_limiter_and_lets_sent_calls_finish(  # type: ignore[no-untyped-def]
    sessions, monkeypatch
) -> None:
    finished: list[str] = []

    async def handler(_ctx, d):  # type: ignore[no-untyped-def]
        progress = CURRENT_PROGRESS.get()
        if d.lane.endswith("wait"):
            progress.waiting = True  # as RateLimitedHttp does while the limiter holds it back
            await asyncio.sleep(60)
        await asyncio.sleep(0.5)  # a call already sent
        finished.append(d.lane)
        return "sent"

    monkeypatch.setitem(HANDLERS, USER_UPSERT, handler)
    ids = await enqueue(sessions, (USER_UPSERT, "user:wait"), (USER_UPSERT, "user:sent"))
    worker = make_worker(sessions)
    task = asyncio.create_task(worker.run(drain_timeout=10))
    await wait_for(lambda: _count_in_flight(sessions, 2))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    worker.stop()
    await task
    assert time.monotonic() - started < 2  # not the whole deadline
    state = await rows(sessions)
    waiting, sent = state[ids[0]], state[ids[1]]
    assert (waiting.state, waiting.lease_until, waiting.leased_by, waiting.attempts) == ("pending", None, None, 0)
    assert sent.state == "done" and finished == ["user:sent"]


async def _count_in_flight(sessions, n: int) -> bool:  # type: ignore[no-untyped-def]
    return sum(1 for d in (await rows(sessions)).values() if d.state == "in_flight") == n


async def test_what_outlives_the_deadline_is_cancelled_and_given_back(sessions, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    async def slow(_ctx, _d):  # type: ignore[no-untyped-def]
        await asyncio.sleep(30)
        return "sent"

    monkeypatch.setitem(HANDLERS, USER_UPSERT, slow)
    (delivery_id,) = await enqueue(sessions, (USER_UPSERT, "user:1"))
    worker = make_worker(sessions)
    task = asyncio.create_task(worker.run(drain_timeout=0.3))
    await wait_for(lambda: _count_in_flight(sessions, 1))
    worker.stop()
    await asyncio.wait_for(task, 3)
    state = (await rows(sessions))[delivery_id]
    assert (state.state, state.lease_until, state.attempts) == ("pending", None, 0)


async def test_the_heartbeat_keeps_a_slow_delivery_leased_to_its_worker(sessions, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    async def slow(_ctx, _d):  # type: ignore[no-untyped-def]
        await asyncio.sleep(1.2)
        return "sent"

    monkeypatch.setitem(HANDLERS, USER_UPSERT, slow)
    (delivery_id,) = await enqueue(sessions, (USER_UPSERT, "user:1"))
    worker = make_worker(sessions, lease_seconds=0.3)
    task = asyncio.create_task(worker.run(drain_timeout=3))
    await wait_for(lambda: _count_in_flight(sessions, 1))
    for _ in range(4):
        await asyncio.sleep(0.2)
        async with sessions.begin() as s:  # another worker finds nothing to take over
            assert await repository.claim(s, worker_id="other", limit=5, lease_seconds=30) == []
    await wait_for(lambda: _state_is(sessions, delivery_id, "done"))
    worker.stop()
    await task


async def test_a_lease_taken_over_elsewhere_stops_the_work_here(sessions, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cancelled = asyncio.Event()

    async def slow(_ctx, _d):  # type: ignore[no-untyped-def]
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "sent"

    monkeypatch.setitem(HANDLERS, USER_UPSERT, slow)
    (delivery_id,) = await enqueue(sessions, (USER_UPSERT, "user:1"))
    worker = make_worker(sessions, lease_seconds=0.3)
    task = asyncio.create_task(worker.run(drain_timeout=1))
    await wait_for(lambda: _count_in_flight(sessions, 1))
    async with sessions.begin() as s:  # as if this worker had been cut off longer than its lease
        await s.execute(Delivery.__table__.update().values(leased_by="other"))
    await asyncio.wait_for(cancelled.wait(), 3)
    worker.stop()
    await task
    state = (await rows(sessions))[delivery_id]
    assert (state.state, state.leased_by) == ("in_flight", "other")  # not given back: not ours


async def test_the_heartbeat_leaves_alone_a_delivery_settled_but_still_winding_down(sessions) -> None:  # type: ignore[no-untyped-def]
    """Between its settling commit and the end of its task a delivery is no longer leased: the
    heartbeat must not take that for a lease lost to another worker (and cancel the task)."""
    (delivery_id,) = await enqueue(sessions, (USER_UPSERT, "user:1"))
    async with sessions.begin() as s:
        (claimed,) = await repository.claim(s, worker_id="w-test", limit=1, lease_seconds=30)
        assert await repository.mark_done(s, claimed.id, "w-test", "sent", 200)
    worker = make_worker(sessions, lease_seconds=0.15)  # a heartbeat every 0.05 s
    winding_down = asyncio.create_task(asyncio.sleep(5))
    worker._in_flight[delivery_id] = winding_down
    worker._settled.add(delivery_id)  # as _settle marks it after its commit
    heartbeat = asyncio.create_task(worker._heartbeat())
    await asyncio.sleep(0.3)
    heartbeat.cancel()
    assert not winding_down.cancelled() and delivery_id not in worker._lost
    winding_down.cancel()


async def test_a_throttled_delivery_is_retried_without_using_an_attempt(sessions, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    calls = 0

    async def throttled_once(_ctx, _d):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:
            raise UpstreamError("usercom", 429, "slow down", retry_after=0.1)
        return "sent"

    monkeypatch.setitem(HANDLERS, USER_UPSERT, throttled_once)
    (delivery_id,) = await enqueue(sessions, (USER_UPSERT, "user:1"))
    worker = make_worker(sessions)
    task = asyncio.create_task(worker.run(drain_timeout=1))
    await wait_for(lambda: _state_is(sessions, delivery_id, "done"))
    worker.stop()
    await task
    state = (await rows(sessions))[delivery_id]
    assert (state.attempts, state.throttled, state.last_status) == (1, 1, 200)


async def test_a_permanent_error_parks_the_delivery_with_its_reason(sessions, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    async def refused(_ctx, _d):  # type: ignore[no-untyped-def]
        raise UpstreamError("usercom", 400, '{"errors": {"kcal": ["A valid integer is required."]}}')

    monkeypatch.setitem(HANDLERS, USER_UPSERT, refused)
    (delivery_id,) = await enqueue(sessions, (USER_UPSERT, "user:1"))
    worker = make_worker(sessions)
    task = asyncio.create_task(worker.run(drain_timeout=1))
    await wait_for(lambda: _state_is(sessions, delivery_id, "dead"))
    worker.stop()
    await task
    state = (await rows(sessions))[delivery_id]
    assert state.last_status == 400 and "kcal" in state.last_error and state.lease_until is None


async def test_recording_a_done_call_survives_a_database_blip(sessions, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy.exc import OperationalError

    calls = 0

    async def ok(_ctx, _d):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return "sent"

    failures = 2
    original = repository.mark_done

    async def flaky_mark_done(*args, **kw):  # type: ignore[no-untyped-def]
        nonlocal failures
        if failures:
            failures -= 1
            raise OperationalError("UPDATE deliveries ...", {}, ConnectionResetError("connection lost"))
        return await original(*args, **kw)

    monkeypatch.setitem(HANDLERS, USER_UPSERT, ok)
    monkeypatch.setattr(repository, "mark_done", flaky_mark_done)
    (delivery_id,) = await enqueue(sessions, (USER_UPSERT, "user:1"))
    worker = make_worker(sessions, lease_seconds=6)
    task = asyncio.create_task(worker.run(drain_timeout=1))
    await wait_for(lambda: _state_is(sessions, delivery_id, "done"))
    worker.stop()
    await task
    assert calls == 1  # recorded on the third try, never sent again


async def test_what_a_handler_learnt_is_written_with_the_done_mark_in_one_transaction(sessions, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from app import idmap
    from app.delivery.handlers import record_after_calls

    states_seen_by_the_write: list[str] = []

    async def learnt(ctx, delivery):  # type: ignore[no-untyped-def]
        async def write(session):  # type: ignore[no-untyped-def]
            # In the settling transaction, before the done mark: the delivery is still in flight.
            states_seen_by_the_write.append((await session.get(Delivery, delivery.id)).state)
            await idmap.remember(session, idmap.USER, "1043", usercom_id=4711, sent_hash="h")

        await record_after_calls(ctx, write)
        return "sent"

    monkeypatch.setitem(HANDLERS, USER_UPSERT, learnt)
    (delivery_id,) = await enqueue(sessions, (USER_UPSERT, "user:1043"))
    await run_worker_until(sessions, lambda: _state_is(sessions, delivery_id, "done"))
    async with sessions() as s:
        entry = await idmap.get(s, idmap.USER, "1043")
    assert (entry.usercom_id, entry.payload_hash) == (4711, "h")
    assert states_seen_by_the_write == ["in_flight"]


async def test_what_a_handler_learnt_before_a_failed_call_is_kept_for_the_retry(sessions, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from app import idmap
    from app.delivery.handlers import record_after_calls

    async def created_then_failed(ctx, _delivery):  # type: ignore[no-untyped-def]
        await record_after_calls(
            ctx, lambda session: idmap.remember(session, idmap.PRODUCT, "12-3-41", usercom_id=77, sent_hash=None)
        )
        raise UpstreamError("usercom", 503, "unavailable")

    monkeypatch.setitem(HANDLERS, USER_UPSERT, created_then_failed)
    (delivery_id,) = await enqueue(sessions, (USER_UPSERT, "user:1"))
    await run_worker_until(sessions, lambda: _attempts_at_least(sessions, delivery_id, 1))
    async with sessions() as s:
        entry = await idmap.get(s, idmap.PRODUCT, "12-3-41")
    assert entry is not None and entry.usercom_id == 77  # the next try finds the product it made


async def _attempts_at_least(sessions, delivery_id: int, n: int) -> bool:  # type: ignore[no-untyped-def]
    return (await rows(sessions))[delivery_id].attempts >= n


async def test_under_load_the_worker_claims_in_batches_not_once_per_finished_delivery(sessions, claims, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    async def quick(_ctx, _d):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.01)
        return "sent"

    monkeypatch.setitem(HANDLERS, USER_UPSERT, quick)
    ids = await enqueue(sessions, *((USER_UPSERT, f"user:{n}") for n in range(64)))
    await run_worker_until(sessions, lambda: _all_done(sessions, ids))
    # One claim per delivery would be about 64; claiming once four of eight slots are free, 16 or so.
    assert len(claims) <= 24, len(claims)


async def _all_done(sessions, ids: list[int]) -> bool:  # type: ignore[no-untyped-def]
    current = await rows(sessions)
    return all(current[i].state == "done" for i in ids)
