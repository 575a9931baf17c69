"""One adaptive rate limiter per upstream system, shared by every worker task of the process.

It is a sliding window rather than a token bucket with a burst: an upstream that counts the
requests it sees in any one-second window (as User.com's 429s suggest) never sees more than the
limit from us, however the requests are delayed on their way.

The rule that makes that hold: **a request occupies its place from its permit until one window
after its answer** (or its failure). The upstream sees a request at some moment between the two,
so two requests it sees within one second of each other were both holding a place when the
later one was let through; hence at most ``capacity`` of them. Counting from the permit or from
the moment the request was written is not enough: a request can sit tens of milliseconds on a
busy event loop, or on a new connection at the server, and then lands together with the next
window's requests (three processes sharing a limit of 60 were seen at 61-64 a second that way).
The price is the round trip: each place is held for a window plus the request's own time, so
against a server 150 ms away the bridge sends about 13 % under the limit; on a fast link it is
close to the limit.

Adaptation follows rudder-server: when more than a tenth of a one-second window's answers are
429s, the rate is cut by a third; after two clean windows in a row it grows by a tenth, never
above the configured limit. A ``Retry-After`` pauses every caller until it has passed.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

WINDOW_SECONDS = 1.0
CUT_FACTOR = 2 / 3
RAISE_FACTOR = 1.10
THROTTLED_SHARE_TO_CUT = 0.10
CLEAN_WINDOWS_TO_RAISE = 2
DEFAULT_PAUSE_SECONDS = 1.0  # a 429 without Retry-After
MAX_PAUSE_SECONDS = 300.0  # never trust a Retry-After longer than this for the shared pause


class Slot:
    """One request's place in the window. ``release`` it when the request has been answered or
    has failed; from then on the place is held for one more window."""

    __slots__ = ("_limiter", "_released")

    def __init__(self, limiter: AdaptiveRateLimiter) -> None:
        self._limiter = limiter
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limiter._release()  # noqa: SLF001 - the slot belongs to its limiter


class AdaptiveRateLimiter:
    def __init__(
        self,
        rate: float,
        *,
        min_rate: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.max_rate = rate
        self.min_rate = min(min_rate, rate)
        self._rate = rate
        self._clock = clock
        self._sleep = sleep
        self._in_flight = 0  # permitted, not yet answered
        self._answered: deque[float] = deque()  # when the answered ones were answered, oldest first
        self._answer_came = asyncio.Event()
        self._lock = asyncio.Lock()
        self._paused_until = 0.0
        # outcome accounting for the current one-second window
        self._window_start = clock()
        self._window_total = 0
        self._window_throttled = 0
        self._clean_windows = 0
        self._cut_in_window: float | None = None

    # --- the rate
    @property
    def rate(self) -> float:
        return self._rate

    def _capacity_and_window(self) -> tuple[int, float]:
        """At most ``capacity`` requests in any ``window`` seconds."""
        if self._rate >= 1:
            return math.floor(self._rate), WINDOW_SECONDS
        return 1, WINDOW_SECONDS / self._rate

    @property
    def paused_for(self) -> float:
        """Seconds until a ``Retry-After`` pause ends (0 when not paused)."""
        return max(0.0, self._paused_until - self._clock())

    async def acquire(self) -> Slot:
        """Wait until one more request may go out. The caller must ``release`` the slot."""
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await self._sleep(self._paused_until - now)
                    continue
                capacity, window = self._capacity_and_window()
                while self._answered and self._answered[0] <= now - window:
                    self._answered.popleft()
                if self._in_flight + len(self._answered) < capacity:
                    self._in_flight += 1
                    return Slot(self)
                if self._answered:
                    await self._sleep(self._answered[0] + window - now)
                else:  # every place is held by a request still waiting for its answer
                    self._answer_came.clear()
                    await self._answer_came.wait()

    def _release(self) -> None:
        self._in_flight -= 1
        self._answered.append(self._clock())
        self._answer_came.set()

    # --- feedback from the answers
    def record_success(self) -> None:
        self._roll_window()
        self._window_total += 1

    def record_throttled(self, retry_after: float | None) -> None:
        self._roll_window()
        self._window_total += 1
        self._window_throttled += 1
        pause = retry_after if retry_after is not None and retry_after >= 0 else DEFAULT_PAUSE_SECONDS
        self._paused_until = max(self._paused_until, self._clock() + min(pause, MAX_PAUSE_SECONDS))
        if self._window_throttled > THROTTLED_SHARE_TO_CUT * max(self._window_total, 1):
            self._cut()

    def _cut(self) -> None:
        # Cut at most once per window, however many 429s the burst holds.
        if self._cut_in_window == self._window_start:
            return
        self._cut_in_window = self._window_start
        self._rate = max(self.min_rate, self._rate * CUT_FACTOR)
        self._clean_windows = 0

    def _roll_window(self) -> None:
        now = self._clock()
        if now - self._window_start < 1.0:
            return
        windows_passed = int((now - self._window_start) // 1.0)
        if self._window_throttled == 0 and self._window_total > 0:
            self._clean_windows += 1
        elif self._window_throttled:
            self._clean_windows = 0
        if self._clean_windows >= CLEAN_WINDOWS_TO_RAISE:
            self._rate = min(self.max_rate, self._rate * RAISE_FACTOR)
            self._clean_windows = 0
        self._window_start += windows_passed * 1.0
        self._window_total = 0
        self._window_throttled = 0
