"""A small load generator for signed ``order.paid`` webhooks, run as its own process.

    python -m bench.loadgen --url http://127.0.0.1:8000 --warmup 300 --rate 200 --rate-count 3000 \\
        --concurrency 32 --closed-count 6000

Every webhook is the sample ``order.paid`` with its own webhook id, order id and user id (so
each one is a new business fact, as in real traffic), signed with the sample secret. Bodies and
signatures are all made before the clock starts, so the generator spends its CPU on sending.

After a warm-up (not measured), up to two phases run, one after the other:

- ``rate`` (open loop): request *i* is scheduled at ``start + i / rate`` and sent then, however
  many answers are still outstanding; its latency is measured from the *scheduled* time, so a
  server (or generator) that falls behind shows up in the latency instead of hiding it.
- ``closed``: ``concurrency`` connections, each sending the next webhook as soon as its previous
  answer arrived (flat out); latency is from send to answer.

Prints one JSON object on stdout, ``{"rate": {...}, "closed": {...}}``: per phase the counts,
statuses, elapsed time, throughput, latency percentiles, how late the generator itself was, the
CPU seconds it used and (``--server-pid``) the CPU seconds the server used.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import hashlib
import hmac
import json
import resource
import ssl
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ORDER_ID_BASE = 7_000_000
USER_ID_BASE = 3_000_000
PREOPENED = 32  # clients made before an open-loop run starts


def sample_order_paid() -> dict[str, Any]:
    for line in (PROJECT_ROOT / "samples" / "webhooks.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            if record["body"]["type"] == "order.paid":
                return record["body"]
    raise LookupError("no order.paid in samples/webhooks.jsonl")


def make_requests(
    count: int, run_id: str, secret: str, offset: int = 0
) -> list[tuple[bytes, dict[str, str]]]:
    """``count`` distinct signed ``order.paid`` webhooks: (raw body, headers)."""
    from app.caterings.signature import signed_headers

    template = sample_order_paid()
    now = int(time.time())
    made = []
    for i in range(offset, offset + count):
        body = copy.deepcopy(template)
        order = body["data"]["order"]
        order["id"] = ORDER_ID_BASE + i
        order["user"]["id"] = USER_ID_BASE + i
        order["user"]["email"] = f"bench.{run_id}.{i}@example.com"
        raw = json.dumps(body).encode()
        made.append((raw, signed_headers(raw, f"msg_bench_{run_id}_{i}", now, secret)))
    return made


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# Signatures are made ahead of time, but a run can outlast the receiver's 5-minute tolerance:
# a request signed longer ago than this is signed again (an HMAC, a few microseconds).
RESIGN_AFTER_S = 60
_KEY = b""


def fresh_headers(raw: bytes, headers: dict[str, str]) -> dict[str, str]:
    now = int(time.time())
    if now - int(headers["webhook-timestamp"]) < RESIGN_AFTER_S or not _KEY:
        return headers
    signed = f"{headers['webhook-id']}.{now}.".encode() + raw
    signature = base64.b64encode(hmac.new(_KEY, signed, hashlib.sha256).digest()).decode()
    return {**headers, "webhook-timestamp": str(now), "webhook-signature": f"v1,{signature}"}


async def _send(client: httpx.AsyncClient, url: str, request: tuple[bytes, dict[str, str]]) -> int:
    try:
        response = await client.post(url, content=request[0], headers=fresh_headers(*request))
        await response.aread()
        return response.status_code
    except httpx.HTTPError as exc:
        return -1 if not isinstance(exc, httpx.TimeoutException) else -2


_SSL_CONTEXT: ssl.SSLContext | None = None


def _client(timeout: float) -> httpx.AsyncClient:
    # One client per connection: httpcore's pool looks at every pooled connection on every request,
    # which with dozens of connections costs the generator more CPU than the requests themselves.
    # One SSL context for all (plain HTTP here, but each client would load the CA store: ~35 ms).
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = ssl.create_default_context()
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        timeout=timeout,
        verify=_SSL_CONTEXT,
    )


async def open_loop(
    url: str, requests: list[tuple[bytes, dict[str, str]]], rate: float, timeout: float
) -> dict[str, Any]:
    latencies: list[float] = []
    lags: list[float] = []
    statuses: Counter[int] = Counter()
    # Connections with no request outstanding; more are opened when all are busy.
    clients = [_client(timeout) for _ in range(PREOPENED)]
    idle = list(clients)
    # perf_counter, not loop.time(): uvloop's clock only has millisecond resolution.
    clock = time.perf_counter

    async def one(request: tuple[bytes, dict[str, str]], scheduled: float) -> None:
        if idle:
            client = idle.pop()
        else:  # every connection is busy: open one more, as an open-loop sender must
            client = _client(timeout)
            clients.append(client)
        lags.append(clock() - scheduled)
        status = await _send(client, url, request)
        latencies.append(clock() - scheduled)
        statuses[status] += 1
        idle.append(client)

    tasks = []
    start = clock() + 0.05
    cpu_before = _cpu_seconds()
    try:
        for i, request in enumerate(requests):
            scheduled = start + i / rate
            delay = scheduled - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(request, scheduled)))
        await asyncio.gather(*tasks)
        elapsed = clock() - start
    finally:
        for client in clients:
            await client.aclose()
    return _result(
        "rate",
        statuses,
        latencies,
        elapsed,
        _cpu_seconds() - cpu_before,
        offered_rate=rate,
        generator_lag_max_ms=round(max(lags, default=0) * 1000, 2),
        connections_opened=len(clients),
    )


async def closed_loop(
    url: str, requests: list[tuple[bytes, dict[str, str]]], concurrency: int, timeout: float
) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    queue = iter(requests)
    clock = time.perf_counter

    async def connection() -> None:
        async with _client(timeout) as client:
            for request in queue:
                sent = clock()
                statuses[await _send(client, url, request)] += 1
                latencies.append(clock() - sent)

    cpu_before = _cpu_seconds()
    start = clock()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    elapsed = clock() - start
    return _result(
        "closed", statuses, latencies, elapsed, _cpu_seconds() - cpu_before, concurrency=concurrency
    )


def _result(
    mode: str, statuses: Counter[int], latencies: list[float], elapsed: float, cpu: float, **extra: Any
) -> dict[str, Any]:
    from bench.common import latency_summary

    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    return {
        "mode": mode,
        "sent": sum(statuses.values()),
        "ok": ok,
        "statuses": {str(status): n for status, n in sorted(statuses.items())},
        "elapsed_s": round(elapsed, 3),
        "throughput_rps": round(ok / elapsed, 1) if elapsed > 0 else 0.0,
        **latency_summary(latencies),
        "loadgen_cpu_s": round(cpu, 2),
        **extra,
    }


async def warm_up(url: str, requests: list[tuple[bytes, dict[str, str]]], timeout: float) -> None:
    if requests:
        await closed_loop(url, requests, concurrency=4, timeout=timeout)


def _server_cpu(pid: int | None) -> float:
    if not pid:
        return 0.0
    from bench.common import cpu_seconds

    return cpu_seconds(pid)


def _wait_until_quiet(pid: int, busy: float = 0.5, limit_s: float = 60.0) -> float:
    """Wait (at most ``limit_s``) until the server uses less than ``busy`` of a CPU for a second."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        before = _server_cpu(pid)
        time.sleep(1.0)
        if _server_cpu(pid) - before < busy:
            break
    return round(time.monotonic() - started, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL of the server")
    parser.add_argument("--path", default="/webhooks/caterings")
    parser.add_argument(
        "--warmup", type=int, default=0, help="requests sent first (4 connections), not measured"
    )
    parser.add_argument(
        "--rate-count", type=int, default=0, help="requests sent open loop at --rate (0: none)"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="offered requests/second")
    parser.add_argument(
        "--closed-count",
        type=int,
        default=0,
        help="requests then sent closed loop on --concurrency connections (0: none)",
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--run-id", default=str(int(time.time())), help="makes webhook ids unique per run")
    parser.add_argument(
        "--first",
        type=int,
        default=0,
        help="number of the first webhook: runs against one server must not overlap",
    )
    parser.add_argument("--secret", default=None, help="whsec_ secret (default: the sample one)")
    parser.add_argument(
        "--server-pid",
        type=int,
        default=None,
        help="the server's pid on this machine: report its CPU seconds per phase",
    )
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument(
        "--settle", action="store_true", help="between phases, wait until the server is quiet (--server-pid)"
    )
    args = parser.parse_args(argv)

    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        run = asyncio.run
    from bench.common import stack

    url = args.url.rstrip("/") + args.path
    secret = args.secret or stack.SAMPLE_SECRET
    global _KEY
    _KEY = base64.b64decode(secret.removeprefix("whsec_"))
    first = args.first
    warm = make_requests(args.warmup, args.run_id, secret, offset=first)
    first += args.warmup
    fixed = make_requests(args.rate_count, args.run_id, secret, offset=first)
    first += args.rate_count
    flat = make_requests(args.closed_count, args.run_id, secret, offset=first)

    results: dict[str, Any] = {}
    run(warm_up(url, warm, args.timeout))
    phases = [
        ("rate", fixed, lambda: open_loop(url, fixed, args.rate, args.timeout)),
        ("closed", flat, lambda: closed_loop(url, flat, args.concurrency, args.timeout)),
    ]
    for name, requests, phase in phases:
        if not requests:
            continue
        if results and args.server_pid and args.settle:
            # Requests the last phase gave up on may still be running in the server.
            results[name + "_settle_s"] = _wait_until_quiet(args.server_pid)
        cpu_before = _server_cpu(args.server_pid)
        results[name] = run(phase())
        if args.server_pid:
            results[name]["server_cpu_s"] = round(_server_cpu(args.server_pid) - cpu_before, 2)
    json.dump(results, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
