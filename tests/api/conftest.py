"""The app in-process (ASGI), with its lifespan, on a temporary SQLite store.

The in-process worker is off here, so a test sees exactly what the endpoint stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.services import Services
from app.settings import Settings, load_settings
from tests.support import processes as p


def api_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
        "usercom_api_url": "http://usercom.invalid/api/public/",
        "usercom_api_key": p.USERCOM_KEY,
        "caterings_api_url": "http://caterings.invalid/",
        "caterings_api_token": p.CATERINGS_TOKEN,
        "caterings_webhook_secret": p.SAMPLE_SECRET,
        "consent_callback_token": p.CONSENT_TOKEN,
        "admin_token": p.ADMIN_TOKEN,
        "worker_in_process": False,
        "log_format": "json",
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    application = create_app(api_settings(tmp_path))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bridge") as c:
        yield c


@pytest.fixture
def services(app: FastAPI) -> Services:
    return app.state.services


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {p.ADMIN_TOKEN}"}


# The sync tests' fixtures: the bridge in-process against a fake Caterings on loopback.
from tests.api.sync_support import bridge, caterings_app, caterings_url, fake  # noqa: E402, F401
