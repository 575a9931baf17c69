"""Shared by the sync API tests: the bridge in-process (ASGI, worker off) against a fake Caterings
served on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.fakes.caterings import FakeCaterings
from app.fakes.caterings import create_app as create_fake_caterings
from app.fakes.usercom import running_server
from app.main import create_app
from app.models import Delivery
from app.settings import Settings, load_settings
from tests.support import processes as p

ADMIN = {"Authorization": f"Bearer {p.ADMIN_TOKEN}"}


def sync_settings(tmp_path: Path, caterings_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}",
        "usercom_api_url": "http://usercom.invalid/api/public/",
        "usercom_api_key": p.USERCOM_KEY,
        "caterings_api_url": caterings_url + "/",
        "caterings_api_token": p.CATERINGS_TOKEN,
        "caterings_rate_limit": 1000,
        "caterings_feed_url": caterings_url + "/feed.xml",
        "caterings_webhook_secret": p.SAMPLE_SECRET,
        "consent_callback_token": p.CONSENT_TOKEN,
        "admin_token": p.ADMIN_TOKEN,
        "worker_in_process": False,
        "log_format": "json",
        "sync_page_size": 10,
        "sync_heartbeat_seconds": 0.2,
        "sync_stale_seconds": 1.0,
        "sync_outbox_high_water": 100_000,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def caterings_app() -> FastAPI:
    return create_fake_caterings(token=p.CATERINGS_TOKEN, users=26, orders=15, seed=3)


@pytest.fixture
def fake(caterings_app: FastAPI) -> FakeCaterings:
    return caterings_app.state.fake


@pytest.fixture
def caterings_url(caterings_app: FastAPI) -> Iterator[str]:
    with running_server(caterings_app) as url:
        yield url


class Bridge:
    def __init__(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client

    @property
    def sessions(self):  # type: ignore[no-untyped-def]
        return self.app.state.services.sessions

    async def job(self, job_id: int) -> dict[str, Any]:
        response = await self.client.get(f"/sync/jobs/{job_id}", headers=ADMIN)
        assert response.status_code == 200, response.text
        return response.json()

    async def wait_finished(self, job_id: int, timeout: float = 60) -> dict[str, Any]:
        for _ in range(int(timeout / 0.05)):
            job = await self.job(job_id)
            if job["state"] in ("done", "failed"):
                return job
            await asyncio.sleep(0.05)
        raise AssertionError(f"job {job_id} did not finish: {job}")

    async def kinds(self) -> dict[str, int]:
        async with self.sessions() as session:
            rows = await session.execute(select(Delivery.kind, func.count()).group_by(Delivery.kind))
            return dict(rows.all())


async def open_bridge(settings: Settings) -> AsyncIterator[Bridge]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
            yield Bridge(application, client)


@pytest.fixture
async def bridge(tmp_path: Path, caterings_url: str) -> AsyncIterator[Bridge]:
    async for opened in open_bridge(sync_settings(tmp_path, caterings_url)):
        yield opened
