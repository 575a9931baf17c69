"""One adaptive rate limiter per upstream system, shared by every worker task of the process.

It is a sliding-window log rather than a token bucket with a burst: an upstream that counts
requests in any one-second window (as User.com's 429s suggest) never sees more than the limit,
even when requests arrive a little bunched after crossing the network. The window is padded
by ``WINDOW_MARGIN`` for that jitter.

A request counts from the moment it is actually written, not from the moment it was let
through: ``acquire`` hands back a ``Slot`` whose time the caller moves to the write
(``Slot.mark_sent``). On a busy event loop a request can wait tens of milliseconds between the
two; counted from the permit, such delayed requests would land at the upstream bunched together
with the next window's and push one second over the limit.

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

WINDOW_MARGIN = 1.02
CUT_FACTOR = 2 / 3
RAISE_FACTOR = 1.10
THROTTLED_SHARE_TO_CUT = 0.10
CLEAN_WINDOWS_TO_RAISE = 2
DEFAULT_PAUSE_SECONDS = 1.0  # a 429 without Retry-After
MAX_PAUSE_SECONDS = 300.0  # never trust a Retry-After longer than this for the shared pause


class Slot:
    """One request's place in the window: from ``at`` for ``window`` seconds."""

    __slots__ = ("at", "_clock")

    def __init__(self, at: float, clock: Callable[[], float]) -> None:
        self.at = at
        self._clock = clock

    def mark_sent(self) -> None:
        """The request has left now: its place in the window counts from here."""
        self.at = max(self.at, self._clock())


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
        self._sent: deque[Slot] = deque()  # in order of the permit
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
            return math.floor(self._rate), WINDOW_MARGIN
        return 1, WINDOW_MARGIN / self._rate

    @property
    def paused_for(self) -> float:
        """Seconds until a ``Retry-After`` pause ends (0 when not paused)."""
        return max(0.0, self._paused_until - self._clock())

    async def acquire(self) -> Slot:
        """Wait until one more request may go out, then count it as sent from now."""
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await self._sleep(self._paused_until - now)
                    continue
                capacity, window = self._capacity_and_window()
                # A slot moved later by ``mark_sent`` may hold back older ones behind it in
                # the queue: that only errs on the side of fewer requests.
                while self._sent and self._sent[0].at <= now - window:
                    self._sent.popleft()
                if len(self._sent) < capacity:
                    slot = Slot(now, self._clock)
                    self._sent.append(slot)
                    return slot
                await self._sleep(self._sent[0].at + window - now)

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
