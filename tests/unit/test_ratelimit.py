"""The adaptive rate limiter, on a fake clock: spacing, Retry-After pauses, cuts and raises."""

from __future__ import annotations

import asyncio

import pytest

from app.ratelimit import MAX_PAUSE_SECONDS, AdaptiveRateLimiter


class FakeClock:
    """Time that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


def limiter(rate: float, **kw) -> tuple[AdaptiveRateLimiter, FakeClock]:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    return AdaptiveRateLimiter(rate, clock=clock, sleep=clock.sleep, **kw), clock


def most_in_any_second(times: list[float]) -> int:
    times = sorted(times)
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


async def send(rl: AdaptiveRateLimiter, clock: FakeClock, n: int) -> list[float]:
    """n requests one after another, each answered at once."""
    sent = []
    for _ in range(n):
        slot = await rl.acquire()
        sent.append(clock.now)
        slot.release()
    return sent


@pytest.mark.parametrize("rate, per_second", [(10, 10), (5, 5), (3.4, 3), (1, 1)])
async def test_never_more_than_the_rate_in_any_one_second_window(rate: float, per_second: int) -> None:
    rl, clock = limiter(rate)
    sent = await send(rl, clock, 60)
    assert most_in_any_second(sent) == per_second
    # and not slower than that either
    assert (sent[-1] - sent[0]) <= 60 / per_second


async def test_a_rate_under_one_spaces_single_requests() -> None:
    rl, clock = limiter(0.5)
    sent = await send(rl, clock, 4)
    gaps = [b - a for a, b in zip(sent, sent[1:])]
    assert all(gap == pytest.approx(2.0) for gap in gaps)


async def test_concurrent_callers_share_one_budget() -> None:
    rl, clock = limiter(4)
    times: list[float] = []

    async def one() -> None:
        slot = await rl.acquire()
        times.append(clock.now)
        await clock.sleep(0.3)  # the request's round trip
        slot.release()

    await asyncio.gather(*(one() for _ in range(20)))
    assert len(times) == 20
    assert most_in_any_second(times) <= 4


async def test_retry_after_pauses_every_caller_until_it_has_passed() -> None:
    rl, clock = limiter(10)
    (await rl.acquire()).release()
    start = clock.now
    rl.record_throttled(3.0)
    assert rl.paused_for == pytest.approx(3.0)
    (await rl.acquire()).release()
    assert clock.now == pytest.approx(start + 3.0)
    assert rl.paused_for == 0


async def test_a_429_without_retry_after_pauses_a_second_and_a_huge_one_is_capped() -> None:
    rl, _clock = limiter(10)
    rl.record_throttled(None)
    assert rl.paused_for == pytest.approx(1.0)
    rl2, _ = limiter(10)
    rl2.record_throttled(86_400)
    assert rl2.paused_for == pytest.approx(MAX_PAUSE_SECONDS)
    rl3, _ = limiter(10)
    rl3.record_throttled(-5)  # nonsense: treated as absent
    assert rl3.paused_for == pytest.approx(1.0)


async def test_a_burst_of_429s_cuts_the_rate_by_a_third_once_per_window() -> None:
    rl, clock = limiter(9)
    for _ in range(5):
        rl.record_success()
    for _ in range(6):
        rl.record_throttled(0)
    assert rl.rate == pytest.approx(6.0)
    clock.now += 1.0  # next window: a new burst cuts again
    for _ in range(3):
        rl.record_throttled(0)
    assert rl.rate == pytest.approx(4.0)


async def test_a_stray_429_among_many_answers_does_not_cut() -> None:
    rl, _clock = limiter(20)
    for _ in range(15):
        rl.record_success()
    rl.record_throttled(0)  # 1 of 16 answers: not more than a tenth
    assert rl.rate == 20


async def test_the_rate_grows_a_tenth_after_two_clean_windows_never_above_the_limit() -> None:
    rl, clock = limiter(10)
    rl.record_throttled(0)
    assert rl.rate == pytest.approx(10 * 2 / 3)
    cut = rl.rate
    clock.now += 1.0
    rl.record_success()  # window 2 (the throttled window closes)
    clock.now += 1.0
    rl.record_success()  # window 3: one clean window so far
    assert rl.rate == pytest.approx(cut)
    clock.now += 1.0
    rl.record_success()  # window 4: two clean windows closed -> +10 %
    assert rl.rate == pytest.approx(cut * 1.1)
    for _ in range(40):
        clock.now += 1.0
        rl.record_success()
    assert rl.rate == 10


async def test_a_throttled_window_resets_the_clean_count() -> None:
    rl, clock = limiter(10)
    rl.record_throttled(0)
    cut = rl.rate
    clock.now += 1.0
    rl.record_success()  # clean window begins
    clock.now += 1.0
    for _ in range(20):
        rl.record_success()
    rl.record_throttled(0)  # 1 of 21: no cut, but not clean either
    clock.now += 1.0
    rl.record_success()
    clock.now += 1.0
    rl.record_success()
    assert rl.rate == pytest.approx(cut)


async def test_the_rate_never_falls_below_the_floor() -> None:
    rl, clock = limiter(1, min_rate=0.2)
    for _ in range(20):
        rl.record_throttled(0)
        clock.now += 1.0
    assert rl.rate == pytest.approx(0.2)


async def test_a_cut_slows_the_requests_that_follow() -> None:
    rl, clock = limiter(9)
    await send(rl, clock, 9)
    for _ in range(3):
        rl.record_throttled(0)
    clock.now += 2.0
    sent = await send(rl, clock, 30)
    assert most_in_any_second(sent) <= 6


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        AdaptiveRateLimiter(0)


async def test_a_place_is_held_from_the_permit_until_a_window_after_the_answer() -> None:
    rl, clock = limiter(1)
    slow = await rl.acquire()
    clock.now += 5.0  # still no answer: the request may reach the server any moment
    waiting = asyncio.create_task(rl.acquire())
    await asyncio.sleep(0)
    assert not waiting.done(), "a place was given while the only one was held by a request in flight"
    slow.release()  # answered at 1005
    (await waiting).release()
    # Counted from its permit the place would have been free at 1001; it is held until 1006.
    assert clock.now == pytest.approx(1006.0)


async def test_releasing_a_slot_twice_frees_one_place() -> None:
    rl, clock = limiter(2)
    slot = await rl.acquire()
    slot.release()
    slot.release()
    clock.now += 1.5  # its answer has left the window
    await rl.acquire()
    await rl.acquire()
    third = asyncio.create_task(rl.acquire())
    await asyncio.sleep(0)
    assert not third.done(), "two requests in flight, a limit of two: the third must wait"
    third.cancel()
