"""The sync jobs, the feed sync and the orders import on PostgreSQL (skipped when none is reachable)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from app.db import create_engine, create_session_factory
from app.delivery.plan import PRODUCT_EVENT
from app.fakes.caterings import FakeCaterings
from app.models import Delivery, SyncJob, utcnow
from app.sync import jobs
from app.sync.orders_import import import_orders, read_export
from tests.api.sync_support import ADMIN, open_bridge, sync_settings

pytestmark = pytest.mark.postgres
SAMPLES = Path(__file__).resolve().parents[2] / "samples"


async def test_full_sync_feed_and_import_on_postgresql(
    tmp_path: Path, caterings_url: str, fake: FakeCaterings, postgres_url: str
) -> None:
    settings = sync_settings(tmp_path, caterings_url, database_url=postgres_url)
    async for bridge in open_bridge(settings):
        started = await bridge.client.post("/sync/full", headers=ADMIN)
        assert started.status_code == 202
        assert (await bridge.client.post("/sync/full", headers=ADMIN)).status_code in (202, 409)
        job = await bridge.wait_finished(started.json()["job_id"])
        assert (job["state"], job["done"], job["failed"]) == ("done", 45, 0)
        assert sum((await bridge.kinds()).values()) == job["deliveries"]

        report = (await bridge.client.post("/sync/feed", headers=ADMIN)).json()
        assert (report["items"], report["sent"]) == (5, 5)

        orders, errors = read_export(SAMPLES / "orders-export.csv")
        first = await import_orders(bridge.sessions, orders, errors, tz=settings.tz, file_name="x.csv")
        again = await import_orders(bridge.sessions, orders, errors, tz=settings.tz, file_name="x.csv")
        assert [e.line for e in first.errors] == [5]
        assert first.deliveries > again.deliveries  # facts fire once
        async with bridge.sessions() as session:
            events = (
                await session.execute(
                    select(func.count())
                    .select_from(Delivery)
                    .where(Delivery.kind == PRODUCT_EVENT, Delivery.lane.in_(["user:1043", "user:2210"]))
                )
            ).scalar_one()
        assert events >= 6


async def test_one_of_many_connections_claims_a_stale_job_on_postgresql(
    tmp_path: Path, caterings_url: str, postgres_url: str
) -> None:
    from app.migrate import upgrade_to_head_async

    settings = sync_settings(tmp_path, caterings_url, database_url=postgres_url)
    await upgrade_to_head_async(postgres_url)
    engine = create_engine(postgres_url)
    sessions = create_session_factory(engine)
    try:
        async with sessions.begin() as session:
            job = SyncJob(
                kind="full",
                state="running",
                options={},
                phase="users",
                next_page=4,
                done=0,
                failed=0,
                deliveries=0,
                started_at=utcnow(),
                owner="dead",
                heartbeat_at=utcnow() - timedelta(hours=1),
            )
            session.add(job)

        async def claim(owner: str) -> Any:
            async with sessions.begin() as session:
                return await jobs.claim_stale(session, owner, settings.sync_stale_seconds)

        claims = await asyncio.gather(*(claim(f"p{n}") for n in range(8)))
        assert [c for c in claims if c is not None] == [job.id]

        runner = jobs.SyncRunner(settings, sessions, caterings=None)  # type: ignore[arg-type]
        with pytest.raises(jobs.JobConflict) as conflict:
            await runner.start_full(jobs.FullSyncOptions())
        assert conflict.value.job_id == job.id
    finally:
        await engine.dispose()
