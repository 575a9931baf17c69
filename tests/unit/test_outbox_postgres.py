"""The outbox on PostgreSQL under concurrency: workers on separate connections claiming at once.

What must hold (READ COMMITTED, FOR UPDATE SKIP LOCKED): a delivery is leased by one worker at a
time; two deliveries of one lane are never in flight together; a lane's deliveries settle in id
order; a lease left by a dead worker is taken over once it lapses; and enqueuing transactions
of one lane commit in id order (the lane lock the claim's argument relies on).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import create_engine, create_session_factory
from app.delivery import repository
from app.delivery.plan import USER_UPSERT, PlannedDelivery
from app.migrate import upgrade_to_head_async
from app.models import Delivery, utcnow

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg_sessions(postgres_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    await upgrade_to_head_async(postgres_url)
    engine = create_engine(postgres_url)
    yield create_session_factory(engine)
    await engine.dispose()


def planned(lane: str, n: int, target_kind: str = USER_UPSERT) -> PlannedDelivery:
    return PlannedDelivery(target_kind, lane, {"n": n})


async def test_claim_takes_the_oldest_of_each_lane_and_fences_a_lapsed_lease(pg_sessions) -> None:  # type: ignore[no-untyped-def]
    async with pg_sessions.begin() as s:
        await repository.enqueue(s, [planned("user:a", 1), planned("user:a", 2), planned("user:b", 1)])
    async with pg_sessions.begin() as s:
        claimed = await repository.claim(s, worker_id="w1", limit=10, lease_seconds=30)
    assert [(d.lane, d.payload["n"]) for d in claimed] == [("user:a", 1), ("user:b", 1)]
    async with pg_sessions.begin() as s:
        assert await repository.claim(s, worker_id="w2", limit=10, lease_seconds=30) == []
    later = utcnow().replace(microsecond=0)
    from datetime import timedelta

    async with pg_sessions.begin() as s:
        again = await repository.claim(s, worker_id="w2", limit=10, lease_seconds=30, now=later + timedelta(seconds=31))
    assert sorted(d.id for d in again) == sorted(d.id for d in claimed)
    async with pg_sessions.begin() as s:
        assert not await repository.mark_done(s, claimed[0].id, "w1", "sent", 200)
        assert await repository.mark_done(s, claimed[0].id, "w2", "sent", 200)


async def test_a_lease_left_by_a_dead_worker_is_taken_over_after_it_lapses(pg_sessions) -> None:  # type: ignore[no-untyped-def]
    async with pg_sessions.begin() as s:
        await repository.enqueue(s, [planned("user:a", 1), planned("user:a", 2)])
    async with pg_sessions.begin() as s:
        (taken,) = await repository.claim(s, worker_id="dies", limit=5, lease_seconds=0.6)
    async with pg_sessions.begin() as s:
        assert await repository.claim(s, worker_id="alive", limit=5, lease_seconds=30) == []
    await asyncio.sleep(0.8)
    async with pg_sessions.begin() as s:
        (again,) = await repository.claim(s, worker_id="alive", limit=5, lease_seconds=30)
    assert again.id == taken.id and again.leased_by == "alive"


async def test_a_heartbeat_keeps_a_lease_and_only_for_its_holder(pg_sessions) -> None:  # type: ignore[no-untyped-def]
    async with pg_sessions.begin() as s:
        await repository.enqueue(s, [planned("user:a", 1)])
    async with pg_sessions.begin() as s:
        (taken,) = await repository.claim(s, worker_id="w1", limit=1, lease_seconds=0.5)
    for _ in range(3):
        await asyncio.sleep(0.3)
        async with pg_sessions.begin() as s:
            assert await repository.renew_leases(s, [taken.id], "w1", 0.5) == {taken.id}
            assert await repository.renew_leases(s, [taken.id], "w2", 0.5) == set()
        async with pg_sessions.begin() as s:
            assert await repository.claim(s, worker_id="w2", limit=1, lease_seconds=30) == []


async def test_enqueues_of_one_lane_commit_in_id_order(pg_sessions) -> None:  # type: ignore[no-untyped-def]
    first = pg_sessions()
    await first.begin()
    (early,) = await repository.enqueue(first, [planned("user:a", 1)])

    async def second() -> int:
        async with pg_sessions.begin() as s:
            (late,) = await repository.enqueue(s, [planned("user:a", 2)])
            return late.id

    async def other_lane() -> int:
        async with pg_sessions.begin() as s:
            (d,) = await repository.enqueue(s, [planned("user:b", 1)])
            return d.id

    waiting = asyncio.create_task(second())
    assert await asyncio.wait_for(other_lane(), 5) > 0  # another lane does not wait
    await asyncio.sleep(0.3)
    assert not waiting.done(), "a second enqueue on the same lane must wait for the first to commit"
    await first.commit()
    await first.close()
    late_id = await asyncio.wait_for(waiting, 5)
    assert late_id > early.id


async def test_concurrent_workers_never_hold_two_deliveries_of_a_lane_nor_one_twice(pg_sessions) -> None:  # type: ignore[no-untyped-def]
    lanes, per_lane, workers = 30, 12, 6
    rng = random.Random(7)
    # Enqueued by several writers at once into the same lanes, as web replicas would.
    async def writer(k: int) -> None:
        for n in range(k, per_lane, 3):
            for lane in range(lanes):
                async with pg_sessions.begin() as s:
                    await repository.enqueue(s, [planned(f"user:{lane}", n)])
                    await asyncio.sleep(rng.random() * 0.002)  # hold the transaction open a little

    writers = [asyncio.create_task(writer(k)) for k in range(3)]

    held: dict[str, list[tuple[float, float, int]]] = defaultdict(list)  # lane -> (from, to, id)
    claims: dict[int, int] = defaultdict(int)
    settled_order: dict[str, list[int]] = defaultdict(list)  # lane -> ids as they settled
    total = lanes * per_lane

    async def worker(name: str) -> None:
        idle_since = time.monotonic()
        while sum(len(v) for v in settled_order.values()) < total:
            async with pg_sessions.begin() as s:
                got = await repository.claim(s, worker_id=name, limit=rng.randint(1, 6), lease_seconds=60)
            claimed_at = time.monotonic()
            if not got:
                if time.monotonic() - idle_since > 30:
                    raise AssertionError("no progress for 30 s")
                await asyncio.sleep(0.005)
                continue
            idle_since = time.monotonic()

            async def settle(d: Delivery) -> None:
                claims[d.id] += 1
                await asyncio.sleep(rng.random() * 0.01)
                released_at = time.monotonic()
                held[d.lane].append((claimed_at, released_at, d.id))
                async with pg_sessions.begin() as s:
                    assert await repository.mark_done(s, d.id, name, "sent", 200)
                settled_order[d.lane].append(d.id)

            await asyncio.gather(*(settle(d) for d in got))

    await asyncio.wait_for(asyncio.gather(*writers, *(worker(f"w{i}") for i in range(workers))), 120)

    assert len(claims) == total and set(claims.values()) == {1}, "a delivery was claimed twice"
    for lane, intervals in held.items():
        intervals.sort()
        for (a_from, a_to, a_id), (b_from, _b_to, b_id) in zip(intervals, intervals[1:]):
            assert b_from >= a_to, f"{lane}: deliveries {a_id} and {b_id} were in flight together"
    for lane, order in settled_order.items():
        assert order == sorted(order), f"{lane} settled out of order: {order}"
    async with pg_sessions() as s:
        states = set((await s.execute(select(Delivery.state))).scalars())
    assert states == {"done"}


async def test_a_replayed_dead_delivery_waits_for_the_one_in_flight_in_its_lane(pg_sessions) -> None:  # type: ignore[no-untyped-def]
    async with pg_sessions.begin() as s:
        await repository.enqueue(s, [planned("user:a", 1), planned("user:a", 2)])
    async with pg_sessions.begin() as s:
        (first,) = await repository.claim(s, worker_id="w", limit=5, lease_seconds=30)
        await repository.park_dead(s, first.id, "w", status=400, error="bad")
    async with pg_sessions.begin() as s:
        (second,) = await repository.claim(s, worker_id="w", limit=5, lease_seconds=30)
    async with pg_sessions.begin() as s:
        assert await repository.retry_dead(s, first.id) == "retried"
    async with pg_sessions.begin() as s:
        assert await repository.claim(s, worker_id="w2", limit=5, lease_seconds=30) == []
        await repository.mark_done(s, second.id, "w", "sent", 200)
    async with pg_sessions.begin() as s:
        (replayed,) = await repository.claim(s, worker_id="w2", limit=5, lease_seconds=30)
    assert replayed.id == first.id and replayed.attempts == 0


async def test_a_late_committed_older_delivery_does_not_join_one_in_flight(pg_sessions) -> None:  # type: ignore[no-untyped-def]
    """Defence in depth: were an older id of a lane to become visible after a newer one was
    claimed (ids handed out before commit, without the lane lock), it still waits."""
    now = utcnow()

    def row(delivery_id: int) -> Delivery:
        return Delivery(id=delivery_id, kind=USER_UPSERT, target="usercom", lane="user:z", payload={}, state="pending",
                        attempts=0, throttled=0, created_at=now, next_attempt_at=now, updated_at=now)

    async with pg_sessions.begin() as s:
        s.add(row(1_000_001))
    async with pg_sessions.begin() as s:
        (newer,) = await repository.claim(s, worker_id="w1", limit=5, lease_seconds=30)
    async with pg_sessions.begin() as s:
        s.add(row(1_000_000))
    async with pg_sessions.begin() as s:
        assert await repository.claim(s, worker_id="w2", limit=5, lease_seconds=30) == []
        await repository.mark_done(s, newer.id, "w1", "sent", 200)
    async with pg_sessions.begin() as s:
        (older,) = await repository.claim(s, worker_id="w2", limit=5, lease_seconds=30)
    assert older.id == 1_000_000
