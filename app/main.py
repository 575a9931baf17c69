"""The ASGI app: ``app.main:app``. Routers, and a lifespan that owns the process's services."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from fastapi import FastAPI
from sqlalchemy import text
from tenacity import retry, stop_after_delay, wait_exponential

from app.caterings.webhooks import router as caterings_router
from app.logs import configure_logging
from app.migrate import upgrade_to_head_async
from app.ops.consents import router as consents_router
from app.ops.deliveries import router as deliveries_router
from app.ops.errors import install as install_store_error_handlers
from app.ops.health import router as health_router
from app.ops.maintenance import router as maintenance_router
from app.ops.metrics_api import router as metrics_router
from app.services import Services, build_services
from app.settings import Settings, get_settings
from app.sync.router import router as sync_router
from app.sync.router import sync_background
from app.usercom.consent import router as consent_router

log = structlog.get_logger("app.main")


async def wait_for_database(services: Services) -> None:
    """The database may still be starting beside us (a container, a restart): wait a little."""

    @retry(stop=stop_after_delay(30), wait=wait_exponential(multiplier=0.2, max=3), reraise=True)
    async def _ping() -> None:
        async with services.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    await _ping()


@contextlib.asynccontextmanager
async def start_services(settings: Settings, *, run_worker: bool) -> AsyncIterator[Services]:
    """Open the store (migrated), the clients and, if asked, the in-process worker."""
    services = build_services(settings)
    worker_task: asyncio.Task[None] | None = None
    try:
        await wait_for_database(services)
        await upgrade_to_head_async(settings.database_url)
        if run_worker:
            worker_task = asyncio.create_task(
                services.worker.run(drain_timeout=settings.shutdown_timeout_seconds), name="delivery-worker"
            )
        yield services
    finally:
        if worker_task is not None:
            services.worker.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await worker_task
        await services.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resolved = settings or get_settings()
        configure_logging(resolved.log_level, resolved.log_format)
        async with start_services(resolved, run_worker=resolved.worker_in_process) as services:
            app.state.services = services
            log.info("bridge started", database=resolved.database_url.split("://")[0],
                     worker_in_process=resolved.worker_in_process)
            async with sync_background(services) as app.state.sync:
                yield
        log.info("bridge stopped")

    app = FastAPI(title="Caterings ↔ User.com bridge", version="0.1.0", lifespan=lifespan)
    app.include_router(health_router)
    app.include_router(caterings_router)
    app.include_router(deliveries_router)
    app.include_router(metrics_router)
    app.include_router(maintenance_router)
    install_store_error_handlers(app)  # the database away: 503 + Retry-After, not 500
    app.include_router(sync_router)
    app.include_router(consent_router)
    app.include_router(consents_router)
    return app


def _app_from_environment() -> FastAPI:
    return create_app()


app = _app_from_environment()
