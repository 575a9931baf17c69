"""The delivery worker: claims due deliveries, performs them, settles each one.

One asyncio task claims in batches and starts a task per delivery, at most ``concurrency`` at
once. The claim takes at most one delivery per lane, so one user's deliveries go out in order.
While an upstream asks us to wait (429 with Retry-After), the worker claims nothing for it, and
sleeps instead of polling when every upstream is paused. A heartbeat extends the leases of the
deliveries in hand, so a slow but live worker keeps them and a dead one loses them after
``lease_seconds``. On stop it claims nothing more, gives back at once what is only waiting for
the rate limiter, lets calls already sent finish until the deadline, and gives back the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.delivery import repository
from app.delivery.handlers import HANDLERS, WRITES_AFTER_CALLS, HandlerContext, Write
from app.delivery.policy import RetryPolicy, decide
from app.models import Delivery, utcnow
from app.ops.errors import store_unavailable
from app.ratelimit import AdaptiveRateLimiter
from app.upstream import CURRENT_PROGRESS, CallProgress, UpstreamError

log = structlog.get_logger("app.delivery.worker")

# (session, delivery, new state) -> None; runs in the transaction that settles the delivery.
SettleHook = Callable[..., Awaitable[None]]
# (kind, outcome or state, seconds) -> None
DeliveryObserver = Callable[[str, str, float], None]


def new_worker_id() -> str:
    # host:pid:random (colons, so the log masking never takes "1234-567890" for a phone number)
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(
        self,
        ctx: HandlerContext,
        *,
        policy: RetryPolicy,
        concurrency: int = 8,
        batch_size: int = 50,
        poll_seconds: float = 0.5,
        lease_seconds: float = 60.0,
        settle_hooks: dict[str, SettleHook] | None = None,
        observer: DeliveryObserver | None = None,
        worker_id: str | None = None,
        lease_sessions: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self.ctx = ctx
        self.policy = policy
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.lease_seconds = lease_seconds
        self.settle_hooks = settle_hooks or {}
        self.observe = observer or (lambda _k, _o, _t: None)
        self.worker_id = worker_id or new_worker_id()
        self.lease_sessions = lease_sessions or ctx.sessions  # heartbeats: best on a connection of their own
        self._claim_at_free = max(1, concurrency // 2)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._progress: dict[int, CallProgress] = {}
        self._lost: set[int] = set()  # leases taken over by another worker: never give them back
        self._settled: set[int] = set()  # settled and committed, the task still winding down

    # --- control
    def wake(self) -> None:
        """New work was committed in this process: look now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    @property
    def in_flight_count(self) -> int:
        return len(self._in_flight)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self, *, drain_timeout: float = 20.0) -> None:
        log.info("worker started", worker_id=self.worker_id, concurrency=self.concurrency)
        heartbeat = asyncio.create_task(self._heartbeat(), name="lease-heartbeat")
        try:
            while not self._stopping.is_set():
                targets = await self._wait_while_throttled()
                if self._stopping.is_set():
                    break
                free = self.concurrency - len(self._in_flight)
                self._wake.clear()  # a wake-up from here on (work stored, a lane freed) is kept for _idle
                # A claim is a write transaction: under load, claim once half the slots are free
                # rather than one slot at a time as each delivery finishes (docs/benchmarks.md).
                worth_claiming = free >= self._claim_at_free or not self._in_flight
                claimed = await self._claim(free, targets) if free > 0 and worth_claiming else []
                for delivery in claimed:
                    self._start(delivery)
                if not worth_claiming or len(claimed) < free:
                    await self._idle()
        finally:
            try:
                await self._shutdown(drain_timeout)
            finally:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
            log.info("worker stopped", worker_id=self.worker_id)

    def _start(self, delivery: Delivery) -> None:
        progress = CallProgress()
        self._progress[delivery.id] = progress
        task = asyncio.create_task(self._perform(delivery, progress), name=f"delivery-{delivery.id}")
        self._in_flight[delivery.id] = task
        task.add_done_callback(lambda _t, d=delivery.id: self._finished(d))

    def _finished(self, delivery_id: int) -> None:
        self._in_flight.pop(delivery_id, None)
        self._progress.pop(delivery_id, None)
        self._lost.discard(delivery_id)
        self._settled.discard(delivery_id)
        self._wake.set()  # a lane may have opened up

    async def _idle(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)

    def _limiters(self) -> dict[str, AdaptiveRateLimiter]:
        limiters: dict[str, AdaptiveRateLimiter] = {"usercom": self.ctx.usercom.limiter}
        if self.ctx.caterings is not None:
            limiters["caterings"] = self.ctx.caterings.limiter
        return limiters

    async def _wait_while_throttled(self) -> list[str]:
        """The upstream systems to claim work for now: those not asking us to wait.

        A paused upstream gets no new claims (its deliveries would only sit on a lease); when
        every upstream is paused the worker sleeps until the first pause ends, touching no database.
        """
        while not self._stopping.is_set():
            pauses = {system: limiter.paused_for for system, limiter in self._limiters().items()}
            open_systems = [system for system, pause in pauses.items() if pause <= 0]
            if open_systems:
                return open_systems
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=min(pauses.values()))
        return []

    async def _claim(self, limit: int, targets: list[str] | None = None) -> list[Delivery]:
        try:
            async with self.ctx.sessions.begin() as session:
                return await repository.claim(
                    session, worker_id=self.worker_id, limit=min(limit, self.batch_size),
                    lease_seconds=self.lease_seconds, targets=targets,
                )
        except Exception:  # a database hiccup must not kill the worker
            log.exception("claim failed", worker_id=self.worker_id)
            await asyncio.sleep(self.poll_seconds)
            return []

    async def _heartbeat(self) -> None:
        """Extend the leases in hand every third of a lease, so only a dead worker loses them."""
        interval = max(0.05, self.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            held = [d for d in self._in_flight if d not in self._lost and d not in self._settled]
            if not held:
                continue
            try:
                async with self.lease_sessions.begin() as session:
                    kept = await repository.renew_leases(session, held, self.worker_id, self.lease_seconds)
            except Exception:  # the database is away: the leases may lapse, fencing keeps us safe
                log.warning("lease renewal failed", worker_id=self.worker_id, deliveries=len(held))
                continue
            for delivery_id in set(held) - kept - self._settled:  # settled meanwhile: no longer leased, rightly
                task = self._in_flight.get(delivery_id)
                if task is not None:
                    # Another worker took it over (we were cut off longer than a lease): stop
                    # working on it; our settle would be refused anyway.
                    self._lost.add(delivery_id)
                    task.cancel()
                    log.warning("lease lost to another worker", delivery_id=delivery_id, worker_id=self.worker_id)

    async def _shutdown(self, drain_timeout: float) -> None:
        """Give back at once what only waits for the rate limiter; let calls already sent finish
        within the deadline; then cancel what is left and give it back untouched."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        to_release: set[int] = set()
        while self._in_flight:
            for delivery_id, task in list(self._in_flight.items()):
                progress = self._progress.get(delivery_id)
                if progress is not None and progress.waiting and not task.done():
                    task.cancel()  # it has not sent this call: safe to do again later
                    to_release.add(delivery_id)
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.wait(list(self._in_flight.values()), timeout=min(0.05, remaining))
        leftover = dict(self._in_flight)
        for delivery_id, task in leftover.items():
            task.cancel()
            to_release.add(delivery_id)
        if leftover:
            log.warning("shutdown deadline passed with deliveries in hand", count=len(leftover),
                        worker_id=self.worker_id)
            await asyncio.gather(*leftover.values(), return_exceptions=True)
        if to_release:
            try:
                async with self.ctx.sessions.begin() as session:
                    released = await repository.release(session, sorted(to_release), self.worker_id)
                log.info("deliveries given back", count=released, worker_id=self.worker_id)
            except Exception:
                log.exception("could not give deliveries back; their leases will lapse", worker_id=self.worker_id)

    # --- one delivery
    async def _perform(self, delivery: Delivery, progress: CallProgress | None = None) -> None:
        # Everything logged while this delivery is performed (handlers, clients) carries its id.
        structlog.contextvars.bind_contextvars(delivery_id=delivery.id, kind=delivery.kind)
        CURRENT_PROGRESS.set(progress)
        WRITES_AFTER_CALLS.set([])
        try:
            await self._perform_bound(delivery)
        except asyncio.CancelledError:
            raise
        except Exception:  # settling failed (the database went away): the lease will lapse
            log.exception("could not settle delivery; it will be retried after its lease", delivery_id=delivery.id)

    async def _perform_bound(self, delivery: Delivery) -> None:
        bound = log.bind(delivery_id=delivery.id, kind=delivery.kind, lane=delivery.lane)
        handler = HANDLERS.get(delivery.kind)
        started = time.perf_counter()
        try:
            if handler is None:
                raise UpstreamError(delivery.target, None, f"no handler for kind {delivery.kind}")
            outcome = await handler(self.ctx, delivery)
        except asyncio.CancelledError:
            # Shutdown deadline passed mid-call: the lease is released by _shutdown.
            raise
        except UpstreamError as error:
            await self._settle_failure(delivery, error, bound)
            self.observe(delivery.kind, "failed", time.perf_counter() - started)
            return
        except Exception as exc:  # a bug must park one delivery, not stop the worker
            bound.exception("handler crashed")
            await self._settle_failure(delivery, UpstreamError(delivery.target, None, f"internal: {exc!r}"), bound)
            return
        async def done(session: AsyncSession) -> None:
            await _write_after_calls(session)
            if await repository.mark_done(session, delivery.id, self.worker_id, outcome, 200):
                await self._run_hook(session, delivery, "done")

        # The call went through: recording it must not fail on a database blip, or the lease
        # lapses and the call is made again.
        await self._settle(delivery, done, bound)
        self.observe(delivery.kind, outcome, time.perf_counter() - started)
        bound.debug("delivered", outcome=outcome)

    async def _settle_failure(self, delivery: Delivery, error: UpstreamError, bound: structlog.BoundLogger) -> None:
        decision = decide(
            error, attempts_before=delivery.attempts, created_at=delivery.created_at, now=utcnow(), policy=self.policy,
            throttled_before=delivery.throttled or 0,
        )
        if decision.action == "dead":

            async def dead(session: AsyncSession) -> None:
                await _write_after_calls(session)
                if await repository.park_dead(session, delivery.id, self.worker_id, status=error.status, error=str(error)):
                    await self._run_hook(session, delivery, "dead")

            await self._settle(delivery, dead, bound)
            bound.warning("delivery parked as dead", status=error.status, reason=decision.reason,
                          error=str(error)[:300])
        else:

            async def retry(session: AsyncSession) -> None:
                await _write_after_calls(session)
                await repository.schedule_retry(
                    session, delivery.id, self.worker_id, delay_seconds=decision.delay_seconds,
                    counts_attempt=decision.counts_attempt, status=error.status, error=str(error),
                )

            await self._settle(delivery, retry, bound)
            bound.info(
                "delivery will be retried", status=error.status, reason=decision.reason,
                retry_in=round(decision.delay_seconds, 2),
            )

    async def _settle(self, delivery: Delivery, action: Callable[[AsyncSession], Awaitable[None]],
                      bound: structlog.BoundLogger) -> None:
        """Run one settling transaction, again a few times while the database is briefly away
        (a restart, a full connection table), for at most about a third of a lease."""
        waited = 0.0
        delay = 0.1
        while True:
            try:
                async with self.ctx.sessions.begin() as session:
                    await action(session)
                self._settled.add(delivery.id)  # its lease is gone: the heartbeat must not miss it
                return
            except Exception as exc:
                if not store_unavailable(exc) or waited + delay > self.lease_seconds / 3:
                    raise
                bound.warning("settling deferred: store unavailable", error=type(exc).__name__, retry_in=delay)
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 2.0)

    async def _run_hook(self, session, delivery: Delivery, state: str) -> None:  # type: ignore[no-untyped-def]
        hook = self.settle_hooks.get(delivery.kind)
        if hook is not None:
            await hook(session, delivery, state)


async def _write_after_calls(session: AsyncSession) -> None:
    """What the delivery's handler learnt from its calls (``handlers.record_after_calls``),
    written in the transaction that settles it. Each write is idempotent: a settle that is
    tried again after a database blip makes them again."""
    writes: list[Write] = WRITES_AFTER_CALLS.get() or []
    for write in writes:
        await write(session)


def retry_policy_from(settings) -> RetryPolicy:  # type: ignore[no-untyped-def]
    return RetryPolicy(
        base_seconds=settings.retry_base_seconds,
        cap_seconds=settings.retry_cap_seconds,
        max_attempts=settings.retry_max_attempts,
        min_age=timedelta(hours=settings.retry_min_age_hours),
    )
