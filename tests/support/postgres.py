"""Throwaway PostgreSQL databases for tests: one fresh database per use, dropped afterwards.

``TEST_POSTGRES_URL`` (default ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``) names a
server and a database to connect to for administration; each test gets its own
``bridge_t_<random>`` database on that server, so concurrent runs never collide. When no server
answers, the tests that need one are skipped with a message saying where it looked.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import make_url

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def admin_url() -> str:
    return os.environ.get("TEST_POSTGRES_URL") or DEFAULT_URL


def _dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url)
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def where(url: str | None = None) -> str:
    """The server, for messages (never with a password)."""
    parsed = make_url(url or admin_url())
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"


async def _execute(url: str, *statements: str, timeout: float = 5.0) -> None:
    import asyncpg

    connection = await asyncpg.connect(_dsn(url), timeout=timeout)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


def _run(coroutine: Any) -> None:
    """Run a coroutine to the end from sync code, even when an event loop runs in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coroutine)
        return
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coroutine).result()


def reachable(url: str | None = None) -> str | None:
    """None when the server answers, else why not."""
    try:
        _run(_execute(url or admin_url(), "SELECT 1", timeout=3.0))
    except Exception as exc:  # noqa: BLE001 - any failure means: no PostgreSQL for these tests
        return f"{type(exc).__name__}: {exc}"
    return None


def create_database(url: str | None = None) -> str:
    """Create ``bridge_t_<random>``; the SQLAlchemy URL of the new database."""
    url = url or admin_url()
    name = f"bridge_t_{secrets.token_hex(6)}"
    _run(_execute(url, f'CREATE DATABASE "{name}"'))
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_database(database_url: str, admin: str | None = None) -> None:
    name = make_url(database_url).database
    assert name and name.startswith("bridge_t_"), name
    _run(_execute(admin or admin_url(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def throwaway_database(url: str | None = None) -> Iterator[str]:
    database_url = create_database(url)
    try:
        yield database_url
    finally:
        drop_database(database_url, url)
