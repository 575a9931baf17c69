"""The retry policy: what a failed upstream call leads to (pure, deterministic with a seeded rng)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from app.delivery.policy import RetryPolicy, decide
from app.upstream import UpstreamError

T0 = datetime(2026, 7, 6, 12, 0, tzinfo=timezone.utc)
POLICY = RetryPolicy(base_seconds=1.0, cap_seconds=600.0, max_attempts=30, min_age=timedelta(hours=24))


def error(status: int | None, retry_after: float | None = None) -> UpstreamError:
    return UpstreamError("usercom", status, "x", retry_after=retry_after)


def after(attempts_before: int, status: int | None, *, age: timedelta = timedelta(0), **kw):  # type: ignore[no-untyped-def]
    return decide(error(status, kw.pop("retry_after", None)), attempts_before=attempts_before, created_at=T0,
                  now=T0 + age, policy=POLICY, rng=random.Random(1), **kw)


@pytest.mark.parametrize("status", [None, 408, 425, 500, 502, 503, 504, 599])
def test_transient_failures_are_retried_and_count_an_attempt(status: int | None) -> None:
    decision = after(0, status)
    assert (decision.action, decision.counts_attempt) == ("retry", True)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422])
def test_permanent_failures_park_the_delivery_at_once(status: int) -> None:
    decision = after(0, status)
    assert decision.action == "dead"
    assert str(status) in decision.reason


def test_a_429_uses_no_attempt_and_waits_retry_after() -> None:
    decision = after(5, 429, retry_after=7)
    assert (decision.action, decision.counts_attempt, decision.delay_seconds) == ("retry", False, 7)


def test_a_429_never_kills_however_old_and_however_often() -> None:
    decision = after(10_000, 429, age=timedelta(days=30), throttled_before=10_000)
    assert decision.action == "retry"
    assert decision.delay_seconds <= POLICY.cap_seconds


def test_a_429_storm_without_retry_after_backs_off_more_and_more() -> None:
    delays = [after(0, 429, throttled_before=n).delay_seconds for n in range(12)]
    assert delays[0] <= 1.0
    assert delays[8] > delays[1] * 10
    assert max(delays) <= POLICY.cap_seconds


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    rng = random.Random(3)
    for attempts in range(1, 15):
        ceiling = min(600.0, 2.0 ** (attempts - 1))
        for _ in range(20):
            assert ceiling / 2 <= POLICY.backoff(attempts, rng) <= ceiling
    assert POLICY.backoff(5000, rng) <= 600.0  # no overflow, however many attempts


def test_jitter_spreads_retries() -> None:
    rng = random.Random(5)
    assert len({round(POLICY.backoff(6, rng), 3) for _ in range(20)}) > 10


def test_gives_up_only_when_both_the_attempts_and_the_age_have_passed() -> None:
    # many attempts but young: retry
    assert after(100, 503, age=timedelta(hours=23)).action == "retry"
    # old but few attempts: retry
    assert after(3, 503, age=timedelta(days=3)).action == "retry"
    # the 30th attempt fails at 24 h or more: dead, never dropped
    dead = after(29, 503, age=timedelta(hours=24))
    assert dead.action == "dead" and "30 attempts" in dead.reason
    assert after(28, 503, age=timedelta(hours=48)).action == "retry"


def test_a_transport_error_is_retried_like_a_5xx() -> None:
    assert after(0, None).action == "retry"


def test_the_first_retry_comes_after_about_the_base_delay() -> None:
    decision = after(0, 500)
    assert 0.5 <= decision.delay_seconds <= 1.0
