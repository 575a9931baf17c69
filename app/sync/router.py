"""Operator API for syncs (contract §6), and what a web process runs for them in the background."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Body, HTTPException, Query, Request, status
from fastapi import Path as FastApiPath
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, model_validator

from app.deps import AdminDep, ServicesDep
from app.models import SyncJob
from app.services import Services
from app.sync import jobs
from app.sync.feed_sync import FeedSync, FeedUnavailable

log = structlog.get_logger("app.sync")
router = APIRouter(tags=["sync"], dependencies=[AdminDep])
# A job id the database can hold (a bigger number is a 422, not a database error).
JobId = Annotated[int, FastApiPath(ge=1, le=2**63 - 1)]


@dataclass
class SyncRuntime:
    runner: jobs.SyncRunner
    feed: FeedSync


@contextlib.asynccontextmanager
async def sync_background(services: Services) -> AsyncIterator[SyncRuntime]:
    """The sync supervisor (resumes stale full syncs) and, when configured, the periodic feed sync."""
    settings = services.settings
    runtime = SyncRuntime(
        runner=jobs.SyncRunner(settings, services.sessions, services.caterings, services.wake_worker),
        feed=FeedSync(settings.caterings_feed_url, services.sessions, services.wake_worker),
    )
    tasks = [asyncio.create_task(runtime.runner.supervise(), name="sync-supervisor")]
    if settings.feed_sync_interval_seconds > 0 and settings.caterings_feed_url:
        tasks.append(
            asyncio.create_task(runtime.feed.every(settings.feed_sync_interval_seconds), name="feed-sync")
        )
    try:
        yield runtime
    finally:
        await runtime.runner.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _runtime(request: Request) -> SyncRuntime:
    runtime: SyncRuntime | None = getattr(request.app.state, "sync", None)
    if runtime is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "sync is not running in this process")
    return runtime


class FullSyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: bool = True
    orders: bool = True
    dry_run: bool = False

    @model_validator(mode="after")
    def _something_to_do(self) -> FullSyncRequest:
        if not (self.users or self.orders):
            raise ValueError("at least one of users, orders must be true")
        return self


def _conflict(exc: jobs.JobConflict) -> JSONResponse:
    return JSONResponse(
        {"detail": "a full sync is already running", "job_id": exc.job_id},
        status_code=status.HTTP_409_CONFLICT,
    )


@router.post("/sync/full", status_code=202)
async def start_full_sync(
    request: Request, services: ServicesDep, body: FullSyncRequest | None = Body(default=None)
) -> Any:
    """Start the full sync: users, then orders. ``409`` while one is running."""
    body = body or FullSyncRequest()
    options = jobs.FullSyncOptions(
        users=body.users, orders=body.orders, dry_run=body.dry_run, page_size=services.settings.sync_page_size
    )
    try:
        job = await _runtime(request).runner.start_full(options)
    except jobs.JobConflict as exc:
        return _conflict(exc)
    return {"job_id": job.id, "status": "started", "job": jobs.job_view(job)}


@router.get("/sync/jobs")
async def list_sync_jobs(services: ServicesDep, limit: int = Query(20, ge=1, le=200)) -> dict[str, Any]:
    async with services.sessions() as session:
        found = (await session.execute(jobs.recent_jobs_query(limit))).scalars().all()
    return {"jobs": [jobs.job_view(job) for job in found]}


@router.get("/sync/jobs/{job_id}")
async def get_sync_job(job_id: JobId, services: ServicesDep) -> dict[str, Any]:
    async with services.sessions() as session:
        job = await session.get(SyncJob, job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no sync job {job_id}")
    return jobs.job_view(job)


@router.post("/sync/jobs/{job_id}/resume", status_code=202)
async def resume_sync_job(job_id: JobId, request: Request, services: ServicesDep) -> Any:
    """Put a failed job back to work from the page it stopped at (after fixing the cause)."""
    try:
        async with services.sessions.begin() as session:
            job = await jobs.resume_failed(session, job_id)
    except LookupError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no sync job {job_id}") from None
    except ValueError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except jobs.JobConflict as exc:
        return _conflict(await _runtime(request).runner.named(exc))
    return {"job_id": job.id, "status": "resuming", "job": jobs.job_view(job)}


@router.post("/sync/feed")
async def sync_feed(request: Request) -> Any:
    """Sync diet-simples from the product feed now; answers with what was queued."""
    try:
        report = await _runtime(request).feed.run()
    except FeedUnavailable as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return report.as_dict()


__all__ = ["SyncRuntime", "router", "sync_background"]
