"""The outbox queries: dedupe of business facts, claims one per lane, leases, fencing."""

from __future__ import annotations

from datetime import timedelta

from app.delivery import repository
from app.delivery.plan import PRODUCT_EVENT, USER_UPSERT, PlannedDelivery
from app.models import Delivery, utcnow


def planned(user: str, n: int = 0, key: str | None = None) -> PlannedDelivery:
    return PlannedDelivery(USER_UPSERT if key is None else PRODUCT_EVENT, f"user:{user}", {"n": n}, key)


async def test_a_business_fact_is_enqueued_once_whatever_carries_it(sessions) -> None:  # type: ignore[no-untyped-def]
    async with sessions.begin() as s:
        first = await repository.enqueue(s, [planned("1", key="reservation:12_3_41_50231")])
    async with sessions.begin() as s:
        second = await repository.enqueue(s, [planned("1", key="reservation:12_3_41_50231"), planned("1", 2)])
    assert len(first) == 1
    assert [d.payload for d in second] == [{"n": 2}]


async def test_a_rolled_back_enqueue_does_not_burn_the_fact(sessions) -> None:  # type: ignore[no-untyped-def]
    async with sessions() as s:
        await repository.enqueue(s, [planned("1", key="purchase:x")])
        await s.rollback()
    async with sessions.begin() as s:
        assert len(await repository.enqueue(s, [planned("1", key="purchase:x")])) == 1


async def test_claim_takes_one_delivery_per_lane_oldest_first(sessions) -> None:  # type: ignore[no-untyped-def]
    async with sessions.begin() as s:
        await repository.enqueue(s, [planned("a", 1), planned("a", 2), planned("b", 1), planned("a", 3)])
    async with sessions.begin() as s:
        claimed = await repository.claim(s, worker_id="w1", limit=10, lease_seconds=30)
    assert [(d.lane, d.payload["n"]) for d in claimed] == [("user:a", 1), ("user:b", 1)]
    async with sessions.begin() as s:
        assert await repository.claim(s, worker_id="w2", limit=10, lease_seconds=30) == []

    async with sessions.begin() as s:
        assert await repository.mark_done(s, claimed[0].id, "w1", "sent", 200)
    async with sessions.begin() as s:
        nxt = await repository.claim(s, worker_id="w2", limit=10, lease_seconds=30)
    assert [(d.lane, d.payload["n"]) for d in nxt] == [("user:a", 2)]


async def test_a_retry_scheduled_later_still_holds_its_lane(sessions) -> None:  # type: ignore[no-untyped-def]
    async with sessions.begin() as s:
        await repository.enqueue(s, [planned("a", 1), planned("a", 2)])
    async with sessions.begin() as s:
        (first,) = await repository.claim(s, worker_id="w", limit=10, lease_seconds=30)
    async with sessions.begin() as s:
        await repository.schedule_retry(s, first.id, "w", delay_seconds=60, counts_attempt=True, status=503, error="x")
    async with sessions.begin() as s:
        assert await repository.claim(s, worker_id="w", limit=10, lease_seconds=30) == []


async def test_a_dead_delivery_stops_blocking_its_lane(sessions) -> None:  # type: ignore[no-untyped-def]
    async with sessions.begin() as s:
        await repository.enqueue(s, [planned("a", 1), planned("a", 2)])
    async with sessions.begin() as s:
        (first,) = await repository.claim(s, worker_id="w", limit=10, lease_seconds=30)
        await repository.park_dead(s, first.id, "w", status=400, error="bad attribute")
    async with sessions.begin() as s:
        (second,) = await repository.claim(s, worker_id="w", limit=10, lease_seconds=30)
    assert second.payload == {"n": 2}


async def test_an_expired_lease_is_claimed_again_and_the_old_worker_is_fenced_off(sessions) -> None:  # type: ignore[no-untyped-def]
    async with sessions.begin() as s:
        await repository.enqueue(s, [planned("a", 1)])
    async with sessions.begin() as s:
        (taken,) = await repository.claim(s, worker_id="dead-worker", limit=1, lease_seconds=30)
    async with sessions.begin() as s:
        assert await repository.claim(s, worker_id="w2", limit=1, lease_seconds=30) == []
    later = utcnow() + timedelta(seconds=31)
    async with sessions.begin() as s:
        (again,) = await repository.claim(s, worker_id="w2", limit=1, lease_seconds=30, now=later)
    assert again.id == taken.id
    async with sessions.begin() as s:
        assert not await repository.mark_done(s, taken.id, "dead-worker", "sent", 200)
        assert await repository.mark_done(s, taken.id, "w2", "sent", 200)


async def test_a_throttled_retry_uses_no_attempt(sessions) -> None:  # type: ignore[no-untyped-def]
    async with sessions.begin() as s:
        await repository.enqueue(s, [planned("a", 1)])
    async with sessions.begin() as s:
        (d,) = await repository.claim(s, worker_id="w", limit=1, lease_seconds=30)
        await repository.schedule_retry(s, d.id, "w", delay_seconds=0, counts_attempt=False, status=429, error="")
    async with sessions.begin() as s:
        (d,) = await repository.claim(s, worker_id="w", limit=1, lease_seconds=30)
    assert (d.attempts, d.throttled) == (0, 1)


async def test_release_gives_leased_work_back_untouched(sessions) -> None:  # type: ignore[no-untyped-def]
    async with sessions.begin() as s:
        await repository.enqueue(s, [planned("a", 1), planned("b", 1)])
    async with sessions.begin() as s:
        claimed = await repository.claim(s, worker_id="w", limit=10, lease_seconds=300)
        assert await repository.release(s, [d.id for d in claimed], "w") == 2
    async with sessions.begin() as s:
        again = await repository.claim(s, worker_id="w2", limit=10, lease_seconds=300)
    assert sorted(d.id for d in again) == sorted(d.id for d in claimed)
    assert all(d.attempts == 0 for d in again)


async def test_enqueue_on_sqlite_is_one_insert_and_the_ids_it_returns_are_the_stored_rows(sessions) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import event, select

    statements: list[str] = []
    engine = sessions.kw["bind"].sync_engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731 - (conn, cursor, statement, ...)
    event.listen(engine, "before_cursor_execute", listener)
    try:
        async with sessions.begin() as s:
            four = await repository.enqueue(s, [planned("x", n) for n in range(3)] + [planned("x", key="purchase:x")])
        small_batch = [sql for sql in statements if sql.startswith("INSERT INTO deliveries")]
        async with sessions.begin() as s:
            many = await repository.enqueue(s, [planned(str(n % 7), n) for n in range(2503)])
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert len(small_batch) == 1
    async with sessions() as s:
        stored = {d.id: (d.lane, d.payload) for d in (await s.execute(select(Delivery))).scalars()}
    assert {d.id: (d.lane, d.payload) for d in four + many} == stored
    assert [d.id for d in four + many] == sorted(stored)
