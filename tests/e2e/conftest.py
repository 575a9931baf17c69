"""End-to-end fixtures: the real bridge process on loopback, against the fake servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import processes as p


@pytest.fixture
def fake_usercom(tmp_path: Path) -> Iterator[p.ServerProcess]:
    server = p.fake_usercom(log_path=tmp_path / "fake-usercom.log").start()
    yield server
    server.kill()


@pytest.fixture
def fake_caterings(tmp_path: Path) -> Iterator[p.ServerProcess]:
    server = p.fake_caterings(log_path=tmp_path / "fake-caterings.log").start()
    yield server
    server.kill()


@pytest.fixture
def bridge_factory(
    request: pytest.FixtureRequest, tmp_path: Path, fake_usercom: p.ServerProcess
) -> Iterator[Callable[..., p.ServerProcess]]:
    """Start bridge processes on one SQLite file (or DATABASE_URL given); all killed at the end.

    The fake Caterings API is started only for tests that ask for the ``fake_caterings`` fixture;
    the others point the bridge at a closed port (nothing of theirs should call Caterings).
    """
    started: list[p.ServerProcess] = []
    caterings_url = (
        request.getfixturevalue("fake_caterings").url if "fake_caterings" in request.fixturenames
        else "http://127.0.0.1:9"
    )
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}"

    def start(port: int | None = None, command: str = "serve", **overrides: str) -> p.ServerProcess:
        env = p.bridge_env(overrides.pop("DATABASE_URL", database_url), fake_usercom.url, caterings_url,
                           **overrides)
        server = p.bridge(env, port=port, log_path=tmp_path / f"bridge-{len(started)}.log", command=command)
        started.append(server)
        return server.start() if command == "serve" else server

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def bridge(bridge_factory: Callable[..., p.ServerProcess]) -> p.ServerProcess:
    return bridge_factory()
