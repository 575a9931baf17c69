"""The retry policy: what to do with a delivery whose upstream call failed. Pure functions."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.upstream import UpstreamError

RETRYABLE_STATUSES = {408, 425, 500, 502, 503, 504}


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float = 1.0
    cap_seconds: float = 600.0
    max_attempts: int = 30
    min_age: timedelta = timedelta(hours=24)

    def backoff(self, attempts: int, rng: random.Random | None = None) -> float:
        """Exponential backoff with jitter: between half and all of base * 2^(n-1), capped."""
        exponent = min(max(0, attempts - 1), 62)  # past that the cap has long been reached
        ceiling = min(self.cap_seconds, self.base_seconds * (2.0**exponent))
        return ceiling * (0.5 + 0.5 * (rng or random).random())


@dataclass(frozen=True)
class Decision:
    action: str  # "retry" | "dead"
    delay_seconds: float = 0.0
    counts_attempt: bool = True
    reason: str = ""


def is_retryable(error: UpstreamError) -> bool:
    return error.status is None or error.status == 429 or error.status in RETRYABLE_STATUSES or error.status >= 500


def decide(
    error: UpstreamError,
    *,
    attempts_before: int,
    created_at: datetime,
    now: datetime,
    policy: RetryPolicy,
    rng: random.Random | None = None,
    throttled_before: int = 0,
) -> Decision:
    """``attempts_before`` counts the attempts already used, not this one; ``throttled_before``
    the 429s already seen (they use no attempt, but a storm without Retry-After backs off too)."""
    if error.status == 429:
        # Being throttled is not the delivery's fault: it uses up no attempt, and never kills it.
        if error.retry_after is not None:
            delay = error.retry_after
        else:
            delay = policy.backoff(throttled_before + 1, rng)
        return Decision("retry", delay, counts_attempt=False, reason="throttled")
    if not is_retryable(error):
        return Decision("dead", reason=f"permanent error {error.status}")
    attempts = attempts_before + 1
    too_old = now - created_at >= policy.min_age
    if attempts >= policy.max_attempts and too_old:
        return Decision("dead", reason=f"gave up after {attempts} attempts over {now - created_at}")
    return Decision("retry", policy.backoff(attempts, rng), reason="transient error")
