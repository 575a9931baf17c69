"""The full sync job (contract §5.1, §6): page through Caterings users, then orders, into the outbox.

Durability
----------
The job's position (``phase``, ``next_page``) and counts live in ``sync_jobs``. Each page is
planned in memory, then its deliveries and the job's new position are written in *one*
transaction, and the position update is conditional on the job still being ours and still at that
page (``UPDATE ... WHERE owner = me AND phase = p AND next_page = n``). A crash before the commit
loses nothing (the page is fetched again), a crash after it doubles nothing (the next run starts
at the next page), and a process that lost the job cannot write a page twice.

Ownership
---------
The process that starts a job owns it and refreshes ``heartbeat_at`` every
``SYNC_HEARTBEAT_SECONDS``. Every web process runs a supervisor that, at start-up and then every
heartbeat interval, claims a ``running`` job whose heartbeat is older than ``SYNC_STALE_SECONDS``
(or that was released by a graceful shutdown) with one conditional ``UPDATE``, so exactly one
process resumes it, from its ``next_page``. At most one job runs at a time: a partial unique index
on ``sync_jobs(kind) WHERE state = 'running'`` makes a second start fail in the database, across
processes, and the API answers ``409``.

Backpressure
------------
Before fetching a page the job waits while the outbox holds more open (pending or in-flight)
deliveries than ``SYNC_OUTBOX_HIGH_WATER`` (default: two seconds of ``USERCOM_RATE_LIMIT``, at
least 200), looking again every 0.2 s so the worker never runs dry. The outbox is claimed oldest
first, so this bounds how long a live webhook waits behind the sync (about high water plus one
page, divided by the drain rate), and it keeps the outbox - and the claim query, which looks at
every pending row - small; measured, a lower mark also drains faster (docs/sync.md). A dry run
enqueues nothing and does not wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.caterings.client import CateringsClient
from app.delivery.repository import OPEN_STATES
from app.delivery.worker import new_worker_id
from app.models import Delivery, SyncJob, utcnow
from app.settings import Settings
from app.sync.planning import Batch, InvalidRecord, plan_order_record, plan_user_record
from app.upstream import UpstreamError

log = structlog.get_logger("app.sync.jobs")

FULL = "full"
RUNNING, DONE, FAILED = "running", "done", "failed"
# A page that keeps failing with a retryable error (Caterings down, 429, 5xx) is retried with
# backoff for this long before the job is marked failed (an operator can resume it).
FETCH_GIVE_UP_SECONDS = 15 * 60
FETCH_BACKOFF_CAP_SECONDS = 60.0
ERROR_MAX = 1000


@dataclass(frozen=True)
class FullSyncOptions:
    users: bool = True
    orders: bool = True
    dry_run: bool = False
    page_size: int = 100  # fixed for the life of the job, so resuming reads the same pages

    @property
    def phases(self) -> list[str]:
        return [phase for phase, wanted in (("users", self.users), ("orders", self.orders)) if wanted]

    @classmethod
    def from_stored(cls, stored: Any) -> FullSyncOptions:
        stored = stored if isinstance(stored, dict) else {}
        known = {key: stored[key] for key in ("users", "orders", "dry_run", "page_size") if key in stored}
        return cls(**known)


class JobConflict(Exception):
    """A full sync is already running."""

    def __init__(self, job_id: int | None) -> None:
        super().__init__(f"a full sync is already running (job {job_id})")
        self.job_id = job_id


class _LostJob(Exception):
    """Another process took the job over (our heartbeat went stale): stop without writing."""


class _JobFailed(Exception):
    """The job cannot go on (e.g. Caterings refuses our token); it is marked failed."""


# --- queries ------------------------------------------------------------------------------------


async def running_job_id(session: AsyncSession, kind: str = FULL) -> int | None:
    return await session.scalar(
        select(SyncJob.id).where(SyncJob.kind == kind, SyncJob.state == RUNNING).limit(1)
    )


async def create_job(session: AsyncSession, options: FullSyncOptions, owner: str) -> SyncJob:
    """Insert a running job owned by ``owner``; ``JobConflict`` when one is already running.

    When another process inserted its job between our look and our insert, the database refuses
    ours (the transaction is then unusable) and the conflict carries no job id."""
    existing = await running_job_id(session)
    if existing is not None:
        raise JobConflict(existing)
    now = utcnow()
    phases = options.phases
    job = SyncJob(
        kind=FULL,
        state=RUNNING,
        options=asdict(options),
        phase=phases[0],
        next_page=1,
        done=0,
        failed=0,
        deliveries=0,
        started_at=now,
        heartbeat_at=now,
        owner=owner,
    )
    session.add(job)
    try:
        await session.flush()
    except IntegrityError:
        raise JobConflict(None) from None
    return job


async def claim_stale(session: AsyncSession, owner: str, stale_seconds: float) -> int | None:
    """Take over one running job whose owner went silent (or let it go); None when there is none.

    One conditional UPDATE: when several processes try at once, the database lets one of them
    change the row and the others' condition no longer holds."""
    now = utcnow()
    stale = (
        (SyncJob.owner.is_(None))
        | (SyncJob.heartbeat_at.is_(None))
        | (SyncJob.heartbeat_at < now - timedelta(seconds=stale_seconds))
    )
    candidate = await session.scalar(
        select(SyncJob.id).where(SyncJob.state == RUNNING, stale).order_by(SyncJob.id).limit(1)
    )
    if candidate is None:
        return None
    result = await session.execute(
        update(SyncJob)
        .where(SyncJob.id == candidate, SyncJob.state == RUNNING, stale)
        .values(owner=owner, heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    return candidate if result.rowcount == 1 else None


def _ours(job_id: int, owner: str) -> Any:
    return (SyncJob.id == job_id) & (SyncJob.owner == owner) & (SyncJob.state == RUNNING)


async def beat(session: AsyncSession, job_id: int, owner: str) -> bool:
    result = await session.execute(
        update(SyncJob)
        .where(_ours(job_id, owner))
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def note_error(session: AsyncSession, job_id: int, owner: str, error: str) -> None:
    await session.execute(
        update(SyncJob)
        .where(_ours(job_id, owner))
        .values(last_error=error[:ERROR_MAX], heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )


async def advance(
    session: AsyncSession,
    job: SyncJob,
    owner: str,
    *,
    phase: str,
    next_page: int,
    done: int,
    failed: int,
    deliveries: int,
    last_error: str | None,
    finished: bool,
) -> bool:
    """Record a page as done, only if the job is still ours and still at that page."""
    now = utcnow()
    values: dict[str, Any] = {
        "phase": phase,
        "next_page": next_page,
        "done": SyncJob.done + done,
        "failed": SyncJob.failed + failed,
        "deliveries": SyncJob.deliveries + deliveries,
        "heartbeat_at": now,
    }
    if last_error is not None:
        values["last_error"] = last_error[:ERROR_MAX]
    if finished:
        values.update(state=DONE, finished_at=now, total=SyncJob.done + done + SyncJob.failed + failed)
    result = await session.execute(
        update(SyncJob)
        .where(_ours(job.id, owner), SyncJob.phase == job.phase, SyncJob.next_page == job.next_page)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def fail(session: AsyncSession, job_id: int, owner: str, error: str) -> None:
    now = utcnow()
    await session.execute(
        update(SyncJob)
        .where(_ours(job_id, owner))
        .values(
            state=FAILED,
            finished_at=now,
            last_error=error[:ERROR_MAX],
            heartbeat_at=now,
            total=SyncJob.done + SyncJob.failed,
        )
        .execution_options(synchronize_session=False)
    )


async def release(session: AsyncSession, job_id: int, owner: str) -> None:
    """Graceful shutdown: give the job back so the next process resumes it without waiting."""
    await session.execute(
        update(SyncJob)
        .where(_ours(job_id, owner))
        .values(owner=None, heartbeat_at=None)
        .execution_options(synchronize_session=False)
    )


async def resume_failed(session: AsyncSession, job_id: int) -> SyncJob:
    """Put a failed job back to running (from its page); the supervisors pick it up.

    Raises ``LookupError`` (unknown job), ``ValueError`` (not failed) or ``JobConflict``."""
    job = await session.get(SyncJob, job_id)
    if job is None:
        raise LookupError(job_id)
    if job.state != FAILED:
        raise ValueError(f"job {job_id} is {job.state}, only a failed job can be resumed")
    existing = await running_job_id(session)
    if existing is not None:
        raise JobConflict(existing)
    job.state, job.owner, job.heartbeat_at, job.finished_at, job.total = RUNNING, None, None, None, None
    try:
        await session.flush()
    except IntegrityError:
        raise JobConflict(None) from None
    return job


async def open_deliveries(session: AsyncSession) -> int:
    return int(
        await session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.state.in_(OPEN_STATES))
        )
        or 0
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def job_view(job: SyncJob) -> dict[str, Any]:
    options = FullSyncOptions.from_stored(job.options)
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "options": asdict(options),
        "dry_run": options.dry_run,
        "phase": job.phase,
        "next_page": job.next_page,
        "done": job.done,
        "failed": job.failed,
        # Caterings' listing does not say how many records there are: known once the job ends.
        "total": job.total,
        "deliveries": job.deliveries,
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "heartbeat_at": _iso(job.heartbeat_at),
        "owner": job.owner,
        "last_error": job.last_error,
    }


def recent_jobs_query(limit: int) -> Any:
    return select(SyncJob).order_by(SyncJob.id.desc()).limit(limit)


# --- the runner ---------------------------------------------------------------------------------


def _retryable(error: UpstreamError) -> bool:
    return error.status is None or error.status in (408, 429) or error.status >= 500


class SyncRunner:
    """Runs full sync jobs in this process: the ones it starts and the stale ones it takes over."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        caterings: CateringsClient,
        wake_worker: Callable[[], None] = lambda: None,
        owner: str | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.caterings = caterings
        self.wake_worker = wake_worker
        self.owner = owner or new_worker_id()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._lost: set[int] = set()
        self._stopping = asyncio.Event()

    @property
    def high_water(self) -> int:
        configured = self.settings.sync_outbox_high_water
        return configured or max(200, int(self.settings.usercom_rate_limit * 2))

    @property
    def running_here(self) -> list[int]:
        return [job_id for job_id, task in self._tasks.items() if not task.done()]

    # --- control
    async def start_full(self, options: FullSyncOptions) -> SyncJob:
        try:
            async with self.sessions.begin() as session:
                job = await create_job(session, options, self.owner)
        except JobConflict as conflict:
            raise await self.named(conflict) from None
        log.info("full sync started", job_id=job.id, **asdict(options))
        self._spawn(job.id)
        return job

    async def named(self, conflict: JobConflict) -> JobConflict:
        """The conflict with the running job's id (looked up afresh when the database refused us)."""
        if conflict.job_id is not None:
            return conflict
        async with self.sessions() as session:
            return JobConflict(await running_job_id(session))

    def _spawn(self, job_id: int) -> None:
        task = asyncio.create_task(self._run(job_id), name=f"sync-job-{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(job_id, None))

    async def supervise(self) -> None:
        """Take over stale jobs now and every heartbeat interval, until ``stop``."""
        while not self._stopping.is_set():
            if not self.running_here:
                try:
                    async with self.sessions.begin() as session:
                        job_id = await claim_stale(session, self.owner, self.settings.sync_stale_seconds)
                    if job_id is not None:
                        log.info("full sync resumed", job_id=job_id, owner=self.owner)
                        self._spawn(job_id)
                except Exception:  # a database hiccup must not end supervision
                    log.exception("could not look for sync jobs to resume")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.settings.sync_heartbeat_seconds)

    async def stop(self) -> None:
        self._stopping.set()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- one job
    async def _run(self, job_id: int) -> None:
        bound = log.bind(job_id=job_id)
        heart = asyncio.create_task(self._heartbeat(job_id, asyncio.current_task()))
        try:
            await self._pages(job_id, bound)
        except _LostJob:
            self._lost.add(job_id)
        except _JobFailed as exc:
            await self._fail(job_id, str(exc), bound)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must fail the job visibly, not leave it hanging
            bound.exception("full sync crashed")
            await self._fail(job_id, f"internal error: {exc!r}", bound)
        finally:
            heart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heart
            lost = job_id in self._lost
            self._lost.discard(job_id)
            if lost:  # not ours any more: touch nothing
                bound.warning("full sync is no longer ours (taken over or changed); stopping here")
            elif self._stopping.is_set():
                with contextlib.suppress(Exception):
                    async with self.sessions.begin() as session:
                        await release(session, job_id, self.owner)
                    bound.info("full sync paused for shutdown; it resumes from its page")

    async def _fail(self, job_id: int, error: str, bound: Any) -> None:
        async with self.sessions.begin() as session:
            await fail(session, job_id, self.owner, error)
        bound.warning("full sync failed", error=error)

    async def _heartbeat(self, job_id: int, job_task: asyncio.Task[Any] | None) -> None:
        while True:
            await asyncio.sleep(self.settings.sync_heartbeat_seconds)
            try:
                async with self.sessions.begin() as session:
                    still_ours = await beat(session, job_id, self.owner)
            except Exception:
                log.warning("sync heartbeat failed", job_id=job_id, exc_info=True)
                continue
            if not still_ours:
                self._lost.add(job_id)
                if job_task is not None:
                    job_task.cancel()
                return

    async def _pages(self, job_id: int, bound: Any) -> None:
        while True:
            async with self.sessions() as session:
                job = await session.get(SyncJob, job_id)
            if job is None or job.state != RUNNING or job.owner != self.owner:
                raise _LostJob()
            options = FullSyncOptions.from_stored(job.options)
            phases = options.phases
            if job.phase not in phases:
                raise _JobFailed(f"job phase {job.phase!r} is not among {phases}")
            if not options.dry_run:
                await self._wait_for_outbox(job_id)
            items, next_page = await self._fetch(job, options.page_size)
            if next_page is not None and next_page <= job.next_page:
                raise _JobFailed(
                    f"Caterings answered next_page {next_page} for {job.phase} page {job.next_page}"
                )

            batch = Batch()
            done = failed = 0
            last_error: str | None = None
            plan = plan_user_record if job.phase == "users" else plan_order_record
            for raw in items:
                try:
                    batch.extend(plan(raw, tz=self.settings.tz))
                    done += 1
                except InvalidRecord as exc:
                    failed += 1
                    last_error = f"{job.phase} page {job.next_page}: {exc}"

            finished = False
            phase, page = job.phase, next_page
            if page is None:
                following = phases[phases.index(job.phase) + 1 :]
                if following:
                    phase, page = following[0], 1
                else:
                    finished, page = True, job.next_page
            async with self.sessions.begin() as session:
                if options.dry_run:
                    deliveries = len(await batch.filtered(session))
                else:
                    deliveries = await batch.store(session)
                moved = await advance(
                    session,
                    job,
                    self.owner,
                    phase=phase,
                    next_page=page,
                    done=done,
                    failed=failed,
                    deliveries=deliveries,
                    last_error=last_error,
                    finished=finished,
                )
                if not moved:
                    raise _LostJob()  # rolls the page's deliveries back with it
            if deliveries:
                self.wake_worker()
            bound.info(
                "sync page stored",
                phase=job.phase,
                page=job.next_page,
                records=len(items),
                failed=failed,
                deliveries=deliveries,
                dry_run=options.dry_run,
            )
            if finished:
                bound.info("full sync finished")
                return

    async def _wait_for_outbox(self, job_id: int) -> None:
        limit = self.high_water
        waited = False
        while True:
            async with self.sessions() as session:
                open_now = await open_deliveries(session)
            if open_now < limit:
                if waited:
                    log.info("sync paging resumed", job_id=job_id, open_deliveries=open_now)
                return
            if not waited:
                log.info(
                    "sync paging paused: outbox is full", job_id=job_id, open_deliveries=open_now, limit=limit
                )
                waited = True
            await asyncio.sleep(min(0.2, self.settings.sync_heartbeat_seconds))  # an indexed count

    async def _fetch(self, job: SyncJob, page_size: int) -> tuple[list[Any], int | None]:
        deadline = time.monotonic() + FETCH_GIVE_UP_SECONDS
        delay = 1.0
        while True:
            try:
                return await self.caterings.list_page(job.phase, job.next_page, page_size)
            except UpstreamError as error:
                where = f"Caterings {job.phase} page {job.next_page}: {error}"
                if not _retryable(error) or time.monotonic() > deadline:
                    raise _JobFailed(where) from None
                wait = (
                    error.retry_after if error.retry_after is not None else delay * random.uniform(0.5, 1.0)
                )
                delay = min(delay * 2, FETCH_BACKOFF_CAP_SECONDS)
                log.info(
                    "sync page fetch will be retried",
                    job_id=job.id,
                    error=str(error)[:200],
                    wait=round(wait, 2),
                )
                async with self.sessions.begin() as session:
                    await note_error(session, job.id, self.owner, f"retrying: {where}")
                await asyncio.sleep(wait)
            except ValueError as error:  # not JSON
                raise _JobFailed(
                    f"Caterings {job.phase} page {job.next_page}: unreadable answer ({error})"
                ) from None


__all__ = [
    "FULL",
    "FullSyncOptions",
    "JobConflict",
    "SyncRunner",
    "claim_stale",
    "create_job",
    "job_view",
]
