from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import create_engine, create_session_factory
from app.migrate import upgrade_to_head_async


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A migrated SQLite store in a temporary folder."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    await upgrade_to_head_async(url)
    engine = create_engine(url)
    yield create_session_factory(engine)
    await engine.dispose()
