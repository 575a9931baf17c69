"""Engine and session factory, and the SQLite pragmas the embedded default needs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def _ensure_sqlite_folder(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        from pathlib import Path

        Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)


def create_engine(url: str, *, pool_size: int = 10, max_overflow: int = 10) -> AsyncEngine:
    """``pool_size``/``max_overflow`` apply to PostgreSQL: each process holds at most their sum."""
    if url.startswith("sqlite"):
        _ensure_sqlite_folder(url)
        # The pool's usual reset (a rollback whenever a connection is returned) costs aiosqlite a
        # round trip to its thread even after a commit, when there is nothing to roll back:
        # one in five of a delivery's trips (bench/, docs/benchmarks.md). Roll back only then.
        engine = create_async_engine(url, connect_args={"timeout": 30}, pool_reset_on_return=None)

        @event.listens_for(engine.sync_engine, "reset")
        def _rollback_if_in_transaction(dbapi_connection, _record, state):  # type: ignore[no-untyped-def]
            if state.asyncio_safe and dbapi_connection.driver_connection.in_transaction:
                dbapi_connection.rollback()

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            # WAL lets readers run beside the one writer; NORMAL is durable in WAL mode
            # against a process crash (only an OS crash may lose the last commits).
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_async_engine(url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True)


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def dialect_of(session: AsyncSession) -> str:
    """``postgresql`` or ``sqlite``: what the session's engine speaks."""
    return session.bind.dialect.name if session.bind is not None else "sqlite"


def insert_for(dialect: str) -> Any:
    """The dialect's ``insert`` (both have ``on_conflict_do_*``).

    The hot paths (accepting a webhook, settling a delivery) build their statements once per
    dialect from the tables (``Model.__table__``) and pass the values at execution: a statement
    on an ORM entity goes through the ORM's bulk-insert machinery, and ``.values(...)`` makes a
    new statement whose cache key SQLAlchemy must compute again on every call. Together that was
    a third of the CPU of an accepted webhook (docs/benchmarks.md).
    """
    return pg_insert if dialect == "postgresql" else sqlite_insert
