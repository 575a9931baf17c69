"""The shared upstream call: its rate-limit slot counts from the moment the request is written."""

from __future__ import annotations

import asyncio
import itertools

import httpx

from app.ratelimit import AdaptiveRateLimiter
from app.upstream import RateLimitedHttp


async def test_the_slot_moves_to_the_moment_the_body_was_written_on_a_real_connection() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ticks = itertools.count(100)  # every reading of the clock is one tick later
    limiter = AdaptiveRateLimiter(10, clock=lambda: float(next(ticks)))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            upstream = RateLimitedHttp("usercom", http, limiter)
            await upstream.call("GET", "/ping")
    finally:
        server.close()
        await server.wait_closed()
    (slot,) = limiter._sent  # noqa: SLF001 - the one slot this call took
    permit_tick = 101  # the constructor read tick 100, acquire read 101
    assert slot.at > permit_tick, "the slot still counts from the permit, not from the write"
