"""The sync operator API in-process (ASGI), against a fake Caterings served on loopback.

The delivery worker is off, so each test sees exactly what the sync put in the outbox.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from app.delivery.plan import PRODUCT_EVENT, PRODUCT_UPSERT, USER_UPSERT
from app.fakes.caterings import FakeCaterings
from app.models import Delivery, SyncJob, utcnow
from app.settings import Settings
from app.sync import jobs
from tests.api.sync_support import ADMIN, Bridge, open_bridge, sync_settings
from tests.support import processes as p

# --- starting, reading, refusing -----------------------------------------------------------------


async def test_full_sync_pages_users_then_orders_into_the_outbox(bridge: Bridge, fake: FakeCaterings) -> None:
    response = await bridge.client.post("/sync/full", headers=ADMIN)
    assert response.status_code == 202, response.text
    job = await bridge.wait_finished(response.json()["job_id"])

    assert job["state"] == "done"
    assert (job["done"], job["failed"], job["total"]) == (30 + 15, 0, 45)  # 4 sample + 26 users, 15 orders
    assert job["finished_at"] and job["started_at"] and job["last_error"] is None
    assert fake.pages == [f"users:{n}" for n in (1, 2, 3)] + [f"orders:{n}" for n in (1, 2)]
    kinds = await bridge.kinds()
    assert kinds[USER_UPSERT] >= 30
    assert kinds[PRODUCT_EVENT] > 0 and kinds[PRODUCT_UPSERT] > 0
    assert sum(kinds.values()) == job["deliveries"]


async def test_dry_run_counts_and_queues_nothing(bridge: Bridge) -> None:
    response = await bridge.client.post("/sync/full", json={"dry_run": True}, headers=ADMIN)
    job = await bridge.wait_finished(response.json()["job_id"])
    assert job["state"] == "done" and job["dry_run"] is True
    assert job["done"] == 45 and job["deliveries"] > 45
    assert await bridge.kinds() == {}


async def test_options_narrow_the_sync(bridge: Bridge, fake: FakeCaterings) -> None:
    response = await bridge.client.post("/sync/full", json={"users": False}, headers=ADMIN)
    job = await bridge.wait_finished(response.json()["job_id"])
    assert job["done"] == 15
    assert all(page.startswith("orders:") for page in fake.pages)


async def test_a_second_start_while_one_runs_is_409(bridge: Bridge, fake: FakeCaterings) -> None:
    fake.faults.update({"delay_seconds": 0.3})
    first = await bridge.client.post("/sync/full", headers=ADMIN)
    assert first.status_code == 202
    second = await bridge.client.post("/sync/full", json={"dry_run": True}, headers=ADMIN)
    assert second.status_code == 409
    assert second.json()["job_id"] == first.json()["job_id"]
    fake.faults.update({"delay_seconds": 0})
    assert (await bridge.wait_finished(first.json()["job_id"]))["state"] == "done"
    third = await bridge.client.post("/sync/full", json={"dry_run": True}, headers=ADMIN)
    assert third.status_code == 202  # once the first has ended


@pytest.mark.parametrize(
    "body",
    [{"users": False, "orders": False}, {"users": "maybe"}, {"dryrun": True}, [1, 2]],
    ids=["nothing to do", "not a boolean", "unknown key", "not an object"],
)
async def test_bad_start_bodies_are_422(bridge: Bridge, body: Any) -> None:
    response = await bridge.client.post("/sync/full", json=body, headers=ADMIN)
    assert response.status_code == 422, response.text


async def test_not_json_body_is_422_and_auth_is_required(bridge: Bridge) -> None:
    response = await bridge.client.post(
        "/sync/full", content=b"{nope", headers={**ADMIN, "content-type": "application/json"}
    )
    assert response.status_code == 422
    assert (await bridge.client.post("/sync/full")).status_code == 401
    assert (await bridge.client.get("/sync/jobs/1")).status_code == 401
    assert (
        await bridge.client.post("/sync/feed", headers={"Authorization": "Bearer wrong"})
    ).status_code == 401


async def test_unknown_job_is_404(bridge: Bridge) -> None:
    assert (await bridge.client.get("/sync/jobs/999", headers=ADMIN)).status_code == 404
    assert (await bridge.client.get("/sync/jobs/abc", headers=ADMIN)).status_code == 422
    assert (await bridge.client.get("/sync/jobs/99999999999999999999", headers=ADMIN)).status_code == 422
    assert (await bridge.client.get("/sync/jobs/0", headers=ADMIN)).status_code == 422
    assert (await bridge.client.get("/sync/jobs", params={"limit": 0}, headers=ADMIN)).status_code == 422
    assert (await bridge.client.post("/sync/jobs/999/resume", headers=ADMIN)).status_code == 404


async def test_invalid_records_are_counted_as_failed_and_the_job_goes_on(
    bridge: Bridge, fake: FakeCaterings
) -> None:
    fake.add_user({"id": 777, "email": "bad.date@example.com", "created_at": "yesterday"})
    fake.add_user({"email": "no.id@example.com", "id": None})
    response = await bridge.client.post("/sync/full", json={"orders": False}, headers=ADMIN)
    job = await bridge.wait_finished(response.json()["job_id"])
    assert job["state"] == "done"
    assert (job["done"], job["failed"]) == (30, 2)
    assert job["last_error"].startswith("users page 1: user ?: id:")  # the last bad one on the page
    assert "bad.date" not in job["last_error"]  # reasons name fields, never personal values


async def test_caterings_refusing_the_token_fails_the_job_and_it_can_be_resumed(
    bridge: Bridge, fake: FakeCaterings
) -> None:
    fake.token = "rotated"
    response = await bridge.client.post("/sync/full", json={"orders": False}, headers=ADMIN)
    job = await bridge.wait_finished(response.json()["job_id"])
    assert job["state"] == "failed" and "401" in job["last_error"]

    fake.token = p.CATERINGS_TOKEN
    resumed = await bridge.client.post(f"/sync/jobs/{job['id']}/resume", headers=ADMIN)
    assert resumed.status_code == 202, resumed.text
    assert (await bridge.client.post(f"/sync/jobs/{job['id']}/resume", headers=ADMIN)).status_code == 409
    job = await bridge.wait_finished(job["id"])
    assert job["state"] == "done" and job["done"] == 30


async def test_a_retryable_caterings_error_is_retried(bridge: Bridge, fake: FakeCaterings) -> None:
    fake.faults.update({"status_sequence": [503, 503]})
    response = await bridge.client.post("/sync/full", json={"orders": False}, headers=ADMIN)
    job = await bridge.wait_finished(response.json()["job_id"], timeout=30)
    assert job["state"] == "done" and job["done"] == 30
    assert fake.pages[0] == "users:1"


# --- resuming after a crash -------------------------------------------------------------------------


async def _insert_job(settings: Settings, **values: Any) -> int:
    from app.db import create_engine, create_session_factory
    from app.migrate import upgrade_to_head_async

    await upgrade_to_head_async(settings.database_url)
    engine = create_engine(settings.database_url)
    try:
        async with create_session_factory(engine).begin() as session:
            fields: dict[str, Any] = {
                "kind": "full",
                "state": "running",
                "phase": "users",
                "next_page": 1,
                "done": 0,
                "failed": 0,
                "deliveries": 0,
                "started_at": utcnow(),
                "options": {"users": True, "orders": True, "dry_run": False, "page_size": 10},
            }
            job = SyncJob(**{**fields, **values})
            session.add(job)
            await session.flush()
            return job.id
    finally:
        await engine.dispose()


async def test_a_stale_job_is_resumed_from_its_page_not_page_1(
    tmp_path: Path, caterings_url: str, fake: FakeCaterings
) -> None:
    settings = sync_settings(tmp_path, caterings_url)
    job_id = await _insert_job(
        settings, next_page=3, done=20, owner="dead-host-1-abc", heartbeat_at=utcnow() - timedelta(minutes=5)
    )
    async for bridge in open_bridge(settings):
        job = await bridge.wait_finished(job_id)
    assert job["state"] == "done"
    assert fake.pages == ["users:3", "orders:1", "orders:2"]
    assert job["done"] == 20 + 10 + 15


async def test_a_job_with_a_fresh_heartbeat_is_left_to_its_owner(
    tmp_path: Path, caterings_url: str, fake: FakeCaterings
) -> None:
    settings = sync_settings(tmp_path, caterings_url, sync_stale_seconds=60)
    job_id = await _insert_job(settings, owner="alive-host-1-abc", heartbeat_at=utcnow())
    async for bridge in open_bridge(settings):
        await asyncio.sleep(0.6)
        job = await bridge.job(job_id)
        assert job["state"] == "running" and job["owner"] == "alive-host-1-abc"
        assert (await bridge.client.post("/sync/full", headers=ADMIN)).status_code == 409
    assert fake.pages == []


async def test_only_one_of_several_processes_claims_a_stale_job(tmp_path: Path, caterings_url: str) -> None:
    from app.db import create_engine, create_session_factory

    settings = sync_settings(tmp_path, caterings_url)
    job_id = await _insert_job(settings, owner=None, heartbeat_at=None)
    engine = create_engine(settings.database_url)
    sessions = create_session_factory(engine)

    async def claim(owner: str) -> int | None:
        async with sessions.begin() as session:
            return await jobs.claim_stale(session, owner, settings.sync_stale_seconds)

    try:
        claims = await asyncio.gather(*(claim(f"process-{n}") for n in range(6)))
        assert [c for c in claims if c is not None] == [job_id]
        async with sessions() as session:
            job = await session.get(SyncJob, job_id)
        assert job is not None and job.owner in {f"process-{n}" for n in range(6)}
    finally:
        await engine.dispose()


async def test_a_page_is_recorded_only_by_the_owner_at_that_page(tmp_path: Path, caterings_url: str) -> None:
    from app.db import create_engine, create_session_factory

    settings = sync_settings(tmp_path, caterings_url)
    job_id = await _insert_job(settings, owner="me", heartbeat_at=utcnow())
    engine = create_engine(settings.database_url)
    sessions = create_session_factory(engine)
    try:
        async with sessions.begin() as session:
            job = await session.get(SyncJob, job_id)
            assert job is not None
            step = {
                "phase": "users",
                "next_page": 2,
                "done": 10,
                "failed": 0,
                "deliveries": 10,
                "last_error": None,
                "finished": False,
            }
            assert not await jobs.advance(session, job, "someone-else", **step)
            assert await jobs.advance(session, job, "me", **step)
            assert not await jobs.advance(session, job, "me", **step)  # the same page twice: refused
        async with sessions.begin() as session:
            await session.execute(update(SyncJob).values(owner="thief"))
        async with sessions() as session:
            job = await session.get(SyncJob, job_id)
            assert job is not None and (job.next_page, job.done) == (2, 10)
    finally:
        await engine.dispose()


async def test_shutdown_releases_the_job_and_the_next_process_resumes_it(
    tmp_path: Path, caterings_url: str, fake: FakeCaterings
) -> None:
    settings = sync_settings(tmp_path, caterings_url, sync_stale_seconds=600)
    fake.faults.update({"delay_seconds": 0.2})
    async for bridge in open_bridge(settings):
        job_id = (await bridge.client.post("/sync/full", headers=ADMIN)).json()["job_id"]
        for _ in range(600):  # up to 30 s on a loaded machine: page 1 must be recorded first
            if (await bridge.job(job_id))["next_page"] >= 2:
                break
            await asyncio.sleep(0.05)
        assert (await bridge.job(job_id))["next_page"] >= 2
    fake.faults.update({"delay_seconds": 0})
    async for bridge in open_bridge(settings):  # stale_seconds is long: only the release lets it resume now
        job = await bridge.wait_finished(job_id)
    assert job["state"] == "done" and job["done"] == 45
    assert fake.pages.count("users:1") == 1


# --- backpressure ------------------------------------------------------------------------------------


async def test_paging_pauses_while_the_outbox_is_full(
    tmp_path: Path, caterings_url: str, fake: FakeCaterings
) -> None:
    settings = sync_settings(tmp_path, caterings_url, sync_outbox_high_water=5)
    async for bridge in open_bridge(settings):
        job_id = (await bridge.client.post("/sync/full", json={"orders": False}, headers=ADMIN)).json()[
            "job_id"
        ]
        await asyncio.sleep(0.8)
        job = await bridge.job(job_id)
        assert job["state"] == "running" and job["next_page"] == 2  # one page in, then waiting
        assert fake.pages == ["users:1"]
        for _ in range(200):  # play the worker: drain the outbox, page by page
            async with bridge.sessions.begin() as session:
                await session.execute(update(Delivery).values(state="done"))
            job = await bridge.job(job_id)
            if job["state"] != "running":
                break
            await asyncio.sleep(0.05)
        assert job["state"] == "done"


async def test_a_start_that_loses_the_race_in_the_database_is_a_conflict(
    tmp_path: Path, caterings_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes may both see no running job; the partial unique index lets one insert win."""
    settings = sync_settings(tmp_path, caterings_url)
    first = await _insert_job(settings, owner="other-process", heartbeat_at=utcnow())
    real_lookup = jobs.running_job_id
    calls: list[int] = []

    async def blind_first_time(session):  # type: ignore[no-untyped-def]
        calls.append(1)
        return None if len(calls) == 1 else await real_lookup(session)

    monkeypatch.setattr(jobs, "running_job_id", blind_first_time)
    from app.db import create_engine, create_session_factory

    engine = create_engine(settings.database_url)
    runner = jobs.SyncRunner(settings, create_session_factory(engine), caterings=None)  # type: ignore[arg-type]
    try:
        with pytest.raises(jobs.JobConflict) as conflict:
            await runner.start_full(jobs.FullSyncOptions())
        assert conflict.value.job_id == first
        async with create_session_factory(engine)() as session:
            assert (await session.execute(select(func.count()).select_from(SyncJob))).scalar_one() == 1
    finally:
        await engine.dispose()
