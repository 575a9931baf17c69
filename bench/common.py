"""What every benchmark section shares: the stack on loopback, throwaway databases, measuring.

Servers are real processes (``python -m ...``) started through the same helpers the end-to-end
tests use; each benchmark gets a fresh database (a new SQLite file, or a new PostgreSQL database
``bench_<random>`` that is dropped afterwards).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

try:  # the helpers moved from tests/support into the app (the demo uses them too)
    from app import local_stack as stack
except ImportError:  # pragma: no cover - older tree
    from tests.support import processes as stack  # type: ignore[no-redef]

PROJECT_ROOT = stack.PROJECT_ROOT
RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
ADMIN_HEADERS = {"Authorization": f"Bearer {stack.ADMIN_TOKEN}"}

# Settings the end-to-end helpers shorten for fast tests; a benchmark runs as deployed.
_TEST_ONLY_SETTINGS = ("RETRY_BASE_SECONDS", "RETRY_CAP_SECONDS", "LEASE_SECONDS")


_T0 = time.monotonic()


def progress(message: str) -> None:
    """A line on stderr with the seconds since the run started: where a long run is."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


# --- numbers ---------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def latency_summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "p50_ms": round(percentile(ms, 50), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2) if ms else 0.0,
        "mean_ms": round(statistics.fmean(ms), 2) if ms else 0.0,
    }


# --- processes -------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (``/proc/stat``), all CPUs together."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait (guest is within user)
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended (servers, load generators)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class OtherWork:
    """How busy the machine was with work that is not this benchmark, over some span.

    Every process the benchmark starts has ended (and been waited for) by the end of a part, so
    its CPU time is in ``own_cpu_seconds``; the rest of the machine's busy time is someone else's.
    """

    def __init__(self) -> None:
        self.wall = time.monotonic()
        self.machine = machine_busy_seconds()
        self.own = own_cpu_seconds()

    def share(self) -> float:
        """Other work as a share of all the machine's CPUs over the span (0 = none, 1 = all)."""
        wall = time.monotonic() - self.wall
        other = (machine_busy_seconds() - self.machine) - (own_cpu_seconds() - self.own)
        return round(max(0.0, other) / (wall * (os.cpu_count() or 1)), 3) if wall > 0 else 0.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class RssSampler:
    """Samples a process's VmRSS every ``interval`` seconds in the background; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError, ValueError):
                self.peak_kib = max(self.peak_kib, rss_kib(self.pid))
            await asyncio.sleep(self.interval)

    def start(self) -> RssSampler:
        self.peak_kib = rss_kib(self.pid)
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def stop(self) -> int:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.peak_kib


@dataclass
class RunDir:
    """Where one benchmark run keeps its SQLite files and server logs (under bench/results/)."""

    path: Path

    @classmethod
    def create(cls) -> RunDir:
        path = RESULTS_DIR / "runs" / time.strftime("%Y%m%d-%H%M%S")
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    def log(self, name: str) -> Path:
        return self.path / f"{name}.log"


def start_all(*servers: stack.ServerProcess, timeout: float = 60) -> None:
    """Start servers side by side (each start waits for its health check); all or none."""
    with ThreadPoolExecutor(len(servers)) as pool:
        futures = [pool.submit(server.start, timeout) for server in servers]
    failed = [f.exception() for f in futures if f.exception() is not None]
    if failed:
        for server in servers:
            server.kill()
        raise failed[0]  # type: ignore[misc]


def fake_usercom(run: RunDir, name: str, rate_limit: float | None = None) -> stack.ServerProcess:
    port = stack.free_port()
    args = [
        "-m",
        "app.fakes.usercom",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--api-key",
        stack.USERCOM_KEY,
        "--log-level",
        "warning",
    ]
    if rate_limit:
        args += ["--rate-limit", str(rate_limit)]
    return stack.ServerProcess(name, args, port, "/_fake/health", log_path=run.log(name))


def start_fake_usercom(run: RunDir, name: str, rate_limit: float | None = None) -> stack.ServerProcess:
    return fake_usercom(run, name, rate_limit).start()


def fake_caterings(run: RunDir, users: int, orders: int) -> stack.ServerProcess:
    return stack.fake_caterings(users=users, orders=orders, log_path=run.log("fake-caterings"))


def bridge_env(
    database_url: str, usercom_url: str, caterings_url: str = "http://127.0.0.1:9", **overrides: str
) -> dict[str, str]:
    env = stack.bridge_env(database_url, usercom_url, caterings_url)
    for name in _TEST_ONLY_SETTINGS:
        env.pop(name, None)
    env.update(overrides)
    return env


def bridge(run: RunDir, name: str, env: dict[str, str]) -> stack.ServerProcess:
    return stack.bridge(env, log_path=run.log(name))


def start_bridge(run: RunDir, name: str, env: dict[str, str]) -> stack.ServerProcess:
    return bridge(run, name, env).start(timeout=60)


def start_bare(run: RunDir, name: str, database_url: str) -> stack.ServerProcess:
    port = stack.free_port()
    args = [
        "-m",
        "bench.bare_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--database-url",
        database_url,
    ]
    return stack.ServerProcess(name, args, port, "/health", log_path=run.log(name)).start(timeout=60)


@contextlib.contextmanager
def running(server: stack.ServerProcess) -> Iterator[stack.ServerProcess]:
    try:
        yield server
    finally:
        server.terminate(timeout=30)


def fake_state(base_url: str, requests: bool = False) -> dict[str, Any]:
    response = httpx.get(base_url + "/_fake/state", params={"requests": str(requests).lower()}, timeout=120)
    response.raise_for_status()
    return response.json()


def outbox_by_state(bridge_url: str) -> dict[str, int]:
    response = httpx.get(bridge_url + "/deliveries/summary", headers=ADMIN_HEADERS, timeout=30)
    response.raise_for_status()
    return dict(response.json()["by_state"])


async def done_deliveries(database_url: str) -> dict[str, Any]:
    """From the outbox itself: deliveries done, by outcome, and the span of their ``done_at``."""
    from sqlalchemy import func, select

    from app.db import create_engine
    from app.models import Delivery

    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            first, last, count = (
                await connection.execute(
                    select(func.min(Delivery.done_at), func.max(Delivery.done_at), func.count()).where(
                        Delivery.state == "done"
                    )
                )
            ).one()
            outcomes = dict(
                (
                    await connection.execute(
                        select(Delivery.outcome, func.count())
                        .where(Delivery.state == "done")
                        .group_by(Delivery.outcome)
                    )
                ).all()
            )
            by_kind = dict(
                (await connection.execute(select(Delivery.kind, func.count()).group_by(Delivery.kind))).all()
            )
    finally:
        await engine.dispose()
    span = (last - first).total_seconds() if first is not None and last is not None else 0.0
    return {
        "count": int(count),
        "span_s": span,
        "first": first,
        "last": last,
        "outcomes": outcomes,
        "by_kind": by_kind,
    }


# --- databases -------------------------------------------------------------------------------


def postgres_admin_url() -> str:
    return os.environ.get("BENCH_POSTGRES_URL") or os.environ.get("TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _pg_execute(url: str, sql: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def postgres_reachable() -> tuple[bool, str]:
    """Whether the PostgreSQL server answers, and why not when it does not."""
    try:
        asyncio.run(_pg_execute(postgres_admin_url(), "SELECT 1"))
        return True, ""
    except Exception as exc:  # noqa: BLE001 - any failure to connect means: skip the PostgreSQL part
        return False, f"{type(exc).__name__}: {exc}"


class Databases:
    """Hands out fresh databases for one run and removes the PostgreSQL ones at the end."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self._created_pg: list[str] = []

    def new(self, backend: str, name: str) -> str:
        if backend == "sqlite":
            path = self.run.path / f"{name}.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            return f"sqlite+aiosqlite:///{path}"
        database = f"bench_{secrets.token_hex(4)}_{name.replace('-', '_')}"[:63]
        asyncio.run(_pg_execute(postgres_admin_url(), f'CREATE DATABASE "{database}"'))
        self._created_pg.append(database)
        base = postgres_admin_url().rsplit("/", 1)[0]
        return f"{base}/{database}"

    def drop_all(self) -> None:
        for database in self._created_pg:
            with contextlib.suppress(Exception):
                asyncio.run(
                    _pg_execute(postgres_admin_url(), f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                )
        self._created_pg.clear()
