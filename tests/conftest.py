"""Fixtures for every test folder: PostgreSQL when one is reachable.

``--postgres-url`` (or the environment variable ``TEST_POSTGRES_URL``; default
``postgresql+asyncpg://postgres@127.0.0.1:5432/test``) names the server. Each test that asks
for ``postgres_url`` gets a fresh ``bridge_t_<random>`` database there, dropped afterwards, so
concurrent runs never collide. No server: those tests are skipped, saying where they looked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import postgres as pg


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--postgres-url", default=None,
        help="PostgreSQL server for the postgres tests (default: $TEST_POSTGRES_URL or " + pg.DEFAULT_URL + ")",
    )


@pytest.fixture(scope="session")
def postgres_admin_url(request: pytest.FixtureRequest) -> str:
    url = request.config.getoption("--postgres-url") or pg.admin_url()
    problem = pg.reachable(url)
    if problem is not None:
        pytest.skip(f"PostgreSQL not reachable at {pg.where(url)}: skipped ({problem})")
    return str(url)


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test (SQLAlchemy asyncpg URL)."""
    with pg.throwaway_database(postgres_admin_url) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The test runs twice: on a SQLite file, and on a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}"
    return str(request.getfixturevalue("postgres_url"))
