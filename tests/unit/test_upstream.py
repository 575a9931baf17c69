"""The shared upstream call: every call gives its rate-limit place back when it ends, however it
ends, and the place is then held for one more window."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import respx

from app.ratelimit import AdaptiveRateLimiter
from app.upstream import RateLimitedHttp, UpstreamError

BASE = "https://app.example/api/public/"


class Clock:
    """Time that moves only when the limiter sleeps."""

    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


def one_a_second() -> tuple[AdaptiveRateLimiter, Clock]:
    clock = Clock()
    return AdaptiveRateLimiter(1, clock=clock, sleep=clock.sleep), clock


async def next_permit_after(limiter: AdaptiveRateLimiter, clock: Clock) -> float:
    """Seconds the next request waits for its place (it must not wait forever)."""
    before = clock.now
    slot = await asyncio.wait_for(limiter.acquire(), timeout=2)
    slot.release()
    return clock.now - before


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json={}),
        httpx.Response(400, json={"email": ["bad"]}),
        httpx.Response(503),
        httpx.ConnectError("refused"),
    ],
    ids=["200", "400", "503", "connect-error"],
)
@respx.mock(base_url=BASE)
async def test_the_place_is_given_back_when_the_call_ends(respx_mock: respx.MockRouter, answer) -> None:  # type: ignore[no-untyped-def]
    respx_mock.post("users/update_or_create/").mock(side_effect=[answer])
    limiter, clock = one_a_second()
    async with httpx.AsyncClient(base_url=BASE) as http:
        upstream = RateLimitedHttp("usercom", http, limiter)
        try:
            await upstream.call("POST", "users/update_or_create/", json={"custom_id": "1"})
        except UpstreamError:
            pass
    # Given back, and held one window from the end of the call: the next waits exactly that.
    assert await next_permit_after(limiter, clock) == pytest.approx(1.0)


@respx.mock(base_url=BASE, assert_all_called=False)  # respx counts a call only once it is answered
async def test_a_cancelled_call_gives_its_place_back(respx_mock: respx.MockRouter) -> None:
    started = asyncio.Event()

    async def hang(_request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    respx_mock.get("users/").mock(side_effect=hang)
    limiter, clock = one_a_second()
    async with httpx.AsyncClient(base_url=BASE) as http:
        upstream = RateLimitedHttp("usercom", http, limiter)
        call = asyncio.create_task(upstream.call("GET", "users/"))
        await started.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    assert await next_permit_after(limiter, clock) == pytest.approx(1.0)


@respx.mock(base_url=BASE)
async def test_a_429_pauses_the_limiter_and_reports_retry_after(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("users/").mock(return_value=httpx.Response(429, headers={"Retry-After": "7"}))
    limiter, _clock = one_a_second()
    async with httpx.AsyncClient(base_url=BASE) as http:
        with pytest.raises(UpstreamError) as raised:
            await RateLimitedHttp("usercom", http, limiter).call("GET", "users/")
    assert raised.value.status == 429 and raised.value.retry_after == 7.0
    assert limiter.paused_for == pytest.approx(7.0)
