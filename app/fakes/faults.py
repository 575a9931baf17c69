"""Fault injection for the fake upstream servers (User.com, Caterings).

``FaultConfig`` holds what should go wrong, and can be changed at any time (from a test in the same
process, or through a fake's control endpoint). ``FaultMiddleware`` is a plain ASGI middleware that
applies it to every HTTP request whose path it is told to cover.

Faults, checked in this order for each covered request (after ``delay_seconds`` has passed):

1. ``drop_connections``  - close the connection without any answer;
2. ``down``              - ``503`` for every call;
3. a 429 storm           - ``429`` + ``Retry-After`` for every call until the storm ends;
4. ``status_sequence``   - the next queued status (an int, or ``"drop"``), one per call;
5. ``error_rate``        - this fraction of calls answers ``500``.

A "timeout" is simply ``delay_seconds`` longer than the client's timeout.

Dropping a connection: under uvicorn the middleware starts the response with a header value that
uvicorn refuses *after* it has marked the response as started, so uvicorn closes the socket without
writing a byte; the client sees ``httpx.RemoteProtocolError`` ("Server disconnected without sending a
response"), and uvicorn logs "ASGI callable returned without completing response." (expected).
In-process (``httpx.ASGITransport``) the middleware raises ``ConnectionDropped``, a subclass of
``httpx.RemoteProtocolError``, so client code sees the same exception type either way.
The fault taken is written to ``scope["fake.fault"]`` for outer middleware (request logs).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

Scope = dict[str, Any]
ASGIApp = Callable[..., Any]

DROP = "drop"
CONFIG_KEYS = (
    "down",
    "error_rate",
    "status_sequence",
    "delay_seconds",
    "drop_connections",
    "storm_seconds",
    "retry_after",
    "seed",
)
SCOPE_KEY = "fake.fault"


class ConnectionDropped(httpx.RemoteProtocolError):
    """Raised in-process when the fake drops a connection (over the wire the socket is just closed)."""


class FaultConfigError(ValueError):
    """A fault setting with a wrong name or value."""


@dataclass
class FaultConfig:
    down: bool = False
    error_rate: float = 0.0
    status_sequence: list[int | str] = field(default_factory=list)
    delay_seconds: float = 0.0
    drop_connections: bool = False
    retry_after: int = 1
    storm_until: float | None = None  # time.monotonic() at which the 429 storm ends
    rng: random.Random = field(default_factory=random.Random, repr=False)

    # --- changing it -------------------------------------------------------------------------

    def reset(self) -> None:
        self.down = False
        self.error_rate = 0.0
        self.status_sequence = []
        self.delay_seconds = 0.0
        self.drop_connections = False
        self.retry_after = 1
        self.storm_until = None

    def start_429_storm(self, seconds: float) -> None:
        """Answer 429 (with Retry-After) to every call for ``seconds``; 0 ends a storm."""
        self.storm_until = time.monotonic() + seconds if seconds > 0 else None

    def update(self, settings: dict[str, Any]) -> None:
        """Apply any of CONFIG_KEYS; validates everything before changing anything."""
        unknown = sorted(set(settings) - set(CONFIG_KEYS))
        if unknown:
            raise FaultConfigError(f"unknown fault setting(s): {', '.join(unknown)}")
        checked = {key: _check_setting(key, value) for key, value in settings.items()}
        for key, value in checked.items():
            if key == "storm_seconds":
                self.start_429_storm(value)
            elif key == "seed":
                self.rng.seed(value)
            else:
                setattr(self, key, value)

    def as_dict(self) -> dict[str, Any]:
        return {
            "down": self.down,
            "error_rate": self.error_rate,
            "status_sequence": list(self.status_sequence),
            "delay_seconds": self.delay_seconds,
            "drop_connections": self.drop_connections,
            "retry_after": self.retry_after,
            "storm_seconds_left": round(self.storm_seconds_left(), 3),
        }

    # --- deciding --------------------------------------------------------------------------------

    def storm_seconds_left(self) -> float:
        if self.storm_until is None:
            return 0.0
        return max(0.0, self.storm_until - time.monotonic())

    def next_fault(self) -> int | str | None:
        """The fault for the current request: a status code, ``"drop"``, or None (answer normally)."""
        if self.drop_connections:
            return DROP
        if self.down:
            return 503
        if self.storm_seconds_left() > 0:
            return 429
        if self.status_sequence:
            return self.status_sequence.pop(0)
        if self.error_rate and self.rng.random() < self.error_rate:
            return 500
        return None


def _check_setting(key: str, value: Any) -> Any:
    if key in ("down", "drop_connections"):
        if not isinstance(value, bool):
            raise FaultConfigError(f"{key} must be true or false")
        return value
    if key == "error_rate":
        if not _is_number(value) or not 0 <= value <= 1:
            raise FaultConfigError("error_rate must be a number between 0 and 1")
        return float(value)
    if key in ("delay_seconds", "storm_seconds"):
        if not _is_number(value) or value < 0:
            raise FaultConfigError(f"{key} must be a number >= 0")
        return float(value)
    if key == "retry_after":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise FaultConfigError("retry_after must be an integer >= 0")
        return value
    if key == "seed":
        if not isinstance(value, int) or isinstance(value, bool):
            raise FaultConfigError("seed must be an integer")
        return value
    return _check_sequence(value)


def _check_sequence(value: Any) -> list[int | str]:
    if not isinstance(value, list):
        raise FaultConfigError('status_sequence must be a list of status codes or "drop"')
    for item in value:
        is_status = isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599
        if not (is_status or item == DROP):
            raise FaultConfigError(f'status_sequence: {item!r} is neither a status code nor "drop"')
    return list(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --- the middleware ---------------------------------------------------------------------------------

FAULT_MESSAGES = {
    429: "Too many requests. You have reached a rate limit.",
    500: "Internal server error (injected fault).",
    502: "Bad gateway (injected fault).",
    503: "Service unavailable (injected fault).",
    504: "Gateway timeout (injected fault).",
}


def fault_response(status: int, retry_after: int) -> tuple[dict[str, str], list[tuple[bytes, bytes]]]:
    """Body and headers of an injected error answer."""
    body = {"detail": FAULT_MESSAGES.get(status, f"Injected fault {status}.")}
    headers = [(b"content-type", b"application/json")]
    if status in (429, 503):
        headers.append((b"retry-after", str(retry_after).encode()))
    return body, headers


class FaultMiddleware:
    """Applies a FaultConfig to the HTTP requests ``covers(path)`` says yes to."""

    def __init__(
        self,
        app: ASGIApp,
        faults: FaultConfig,
        covers: Callable[[str], bool] = lambda path: not path.startswith("/_fake/"),
    ) -> None:
        self.app = app
        self.faults = faults
        self.covers = covers

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not self.covers(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.faults.delay_seconds > 0:
            await asyncio.sleep(self.faults.delay_seconds)
        fault = self.faults.next_fault()
        if fault is None:
            await self.app(scope, receive, send)
            return
        scope[SCOPE_KEY] = fault
        if fault == DROP:
            await drop_connection(scope, send)
            return
        await send_json(send, int(fault), *fault_response(int(fault), self.faults.retry_after))


async def send_json(send: Callable, status: int, body: Any, headers: list[tuple[bytes, bytes]]) -> None:
    raw = json.dumps(body).encode()
    headers = [*headers, (b"content-length", str(len(raw)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw, "more_body": False})


async def drop_connection(scope: Scope, send: Callable) -> None:
    """End the request with no answer at all (see the module docstring)."""
    poisoned = {"type": "http.response.start", "status": 500, "headers": [(b"x-fake-drop", b"\r\n")]}
    try:
        await send(poisoned)
    except Exception:  # noqa: BLE001 - the server refused the header: it now closes the socket
        return
    raise ConnectionDropped("Server disconnected without sending a response.", request=_request_of(scope))


def _request_of(scope: Scope) -> httpx.Request:
    host, port = scope.get("server") or ("testserver", None)
    netloc = f"{host}:{port}" if port else host
    query = scope.get("query_string", b"").decode()
    url = f"{scope.get('scheme', 'http')}://{netloc}{scope['path']}" + (f"?{query}" if query else "")
    return httpx.Request(scope["method"], url)
