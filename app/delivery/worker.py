"""The delivery worker: claims due deliveries, performs them, settles each one.

One asyncio task claims in batches and starts a task per delivery, at most ``concurrency`` at
once. The claim takes at most one delivery per lane, so one user's deliveries go out in order.
While an upstream asks us to wait (429 with Retry-After), the worker sleeps instead of polling.
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

from app.delivery import repository
from app.delivery.handlers import HANDLERS, HandlerContext
from app.delivery.policy import RetryPolicy, decide
from app.models import Delivery, utcnow
from app.upstream import UpstreamError

log = structlog.get_logger("app.delivery.worker")

# (session, delivery, new state) -> None; runs in the transaction that settles the delivery.
SettleHook = Callable[..., Awaitable[None]]
# (kind, outcome or state, seconds) -> None
DeliveryObserver = Callable[[str, str, float], None]


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


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
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._in_flight: dict[int, asyncio.Task[None]] = {}

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

    async def run(self, *, drain_timeout: float = 20.0) -> None:
        log.info("worker started", worker_id=self.worker_id, concurrency=self.concurrency)
        try:
            while not self._stopping.is_set():
                await self._wait_while_throttled()
                free = self.concurrency - len(self._in_flight)
                claimed = await self._claim(free) if free > 0 else []
                for delivery in claimed:
                    task = asyncio.create_task(self._perform(delivery))
                    self._in_flight[delivery.id] = task
                    task.add_done_callback(lambda _t, d=delivery.id: self._finished(d))
                if free <= 0 or len(claimed) < free:
                    await self._idle()
        finally:
            await self._shutdown(drain_timeout)
            log.info("worker stopped", worker_id=self.worker_id)

    def _finished(self, delivery_id: int) -> None:
        self._in_flight.pop(delivery_id, None)
        self._wake.set()  # a lane may have opened up

    async def _idle(self) -> None:
        self._wake.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)

    async def _wait_while_throttled(self) -> None:
        limiters = [self.ctx.usercom.limiter] + ([self.ctx.caterings.limiter] if self.ctx.caterings else [])
        pause = min(limiter.paused_for for limiter in limiters)
        # Only sleep when every upstream is paused; one paused upstream must not stall the other.
        if pause > 0 and not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=pause)

    async def _claim(self, limit: int) -> list[Delivery]:
        try:
            async with self.ctx.sessions.begin() as session:
                return await repository.claim(
                    session, worker_id=self.worker_id, limit=min(limit, self.batch_size),
                    lease_seconds=self.lease_seconds,
                )
        except Exception:  # a database hiccup must not kill the worker
            log.exception("claim failed", worker_id=self.worker_id)
            await asyncio.sleep(self.poll_seconds)
            return []

    async def _shutdown(self, drain_timeout: float) -> None:
        """Let in-flight deliveries finish within the deadline; give back the rest untouched."""
        if self._in_flight:
            _done, pending = await asyncio.wait(list(self._in_flight.values()), timeout=drain_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        leftover = list(self._in_flight)
        if leftover:
            with contextlib.suppress(Exception):
                async with self.ctx.sessions.begin() as session:
                    await repository.release(session, leftover, self.worker_id)

    # --- one delivery
    async def _perform(self, delivery: Delivery) -> None:
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
        async with self.ctx.sessions.begin() as session:
            if await repository.mark_done(session, delivery.id, self.worker_id, outcome, 200):
                await self._run_hook(session, delivery, "done")
        self.observe(delivery.kind, outcome, time.perf_counter() - started)
        bound.debug("delivered", outcome=outcome)

    async def _settle_failure(self, delivery: Delivery, error: UpstreamError, bound: structlog.BoundLogger) -> None:
        decision = decide(
            error, attempts_before=delivery.attempts, created_at=delivery.created_at, now=utcnow(), policy=self.policy
        )
        async with self.ctx.sessions.begin() as session:
            if decision.action == "dead":
                if await repository.park_dead(session, delivery.id, self.worker_id, status=error.status, error=str(error)):
                    await self._run_hook(session, delivery, "dead")
                bound.warning("delivery parked as dead", status=error.status, reason=decision.reason)
            else:
                await repository.schedule_retry(
                    session, delivery.id, self.worker_id, delay_seconds=decision.delay_seconds,
                    counts_attempt=decision.counts_attempt, status=error.status, error=str(error),
                )
                bound.info(
                    "delivery will be retried", status=error.status, reason=decision.reason,
                    retry_in=round(decision.delay_seconds, 2),
                )

    async def _run_hook(self, session, delivery: Delivery, state: str) -> None:  # type: ignore[no-untyped-def]
        hook = self.settle_hooks.get(delivery.kind)
        if hook is not None:
            await hook(session, delivery, state)


def retry_policy_from(settings) -> RetryPolicy:  # type: ignore[no-untyped-def]
    return RetryPolicy(
        base_seconds=settings.retry_base_seconds,
        cap_seconds=settings.retry_cap_seconds,
        max_attempts=settings.retry_max_attempts,
        min_age=timedelta(hours=settings.retry_min_age_hours),
    )
