"""What every upstream client shares: one rate-limited HTTP call and one way to fail.

The delivery worker turns an ``UpstreamError`` into a decision (retry, wait, park as dead) in
``app.delivery.policy``; clients only report what happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpx

from app.ratelimit import AdaptiveRateLimiter

# Called after each upstream call with (system, status or "error", seconds).
CallObserver = Callable[[str, str, float], None]


@dataclass
class CallProgress:
    """Where one unit of work (a delivery) stands, for a graceful shutdown: while ``waiting`` it
    has sent nothing it is waiting for, so it can be cancelled and given back safely."""

    waiting: bool = False
    calls_sent: int = 0


# Set by the delivery worker around each delivery; None elsewhere.
CURRENT_PROGRESS: ContextVar[CallProgress | None] = ContextVar("upstream_call_progress", default=None)


class UpstreamError(Exception):
    """An upstream call that did not succeed. ``status`` is None for a transport failure."""

    def __init__(
        self,
        system: str,
        status: int | None,
        detail: str,
        *,
        retry_after: float | None = None,
    ) -> None:
        self.system = system
        self.status = status
        self.detail = detail[:2000]
        self.retry_after = retry_after
        super().__init__(f"{system} {status if status is not None else 'transport error'}: {self.detail}")


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare enough to fall back on our own backoff
    return seconds if seconds >= 0 else None


class RateLimitedHttp:
    """One upstream system: base URL, auth headers, shared limiter, timeouts."""

    def __init__(
        self,
        system: str,
        http: httpx.AsyncClient,
        limiter: AdaptiveRateLimiter,
        observer: CallObserver | None = None,
    ) -> None:
        self.system = system
        self.http = http
        self.limiter = limiter
        self._observe = observer or (lambda _s, _c, _t: None)

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        ok_statuses: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send one request. 2xx and ``ok_statuses`` come back; anything else raises."""
        progress = CURRENT_PROGRESS.get()
        if progress is not None:
            progress.waiting = True
        try:
            slot = await self.limiter.acquire()
        finally:
            if progress is not None:
                progress.waiting = False
        # Nothing between the permit and the ``try`` awaits, so the slot is always released.
        if progress is not None:
            progress.calls_sent += 1
        started = time.perf_counter()
        try:
            response = await self.http.request(method, path, json=json, params=params)
        except httpx.HTTPError as exc:
            self._observe(self.system, "error", time.perf_counter() - started)
            raise UpstreamError(self.system, None, f"{type(exc).__name__}: {exc}") from exc
        finally:
            slot.release()  # answered or failed: its place in the window is held one more window
        self._observe(self.system, str(response.status_code), time.perf_counter() - started)
        if response.status_code == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            self.limiter.record_throttled(retry_after)
            raise UpstreamError(self.system, 429, response.text, retry_after=retry_after)
        self.limiter.record_success()
        if response.is_success or response.status_code in ok_statuses:
            return response
        raise UpstreamError(self.system, response.status_code, response.text)
