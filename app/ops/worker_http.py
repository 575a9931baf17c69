"""``bridge worker``'s own small HTTP server: ``/health`` and ``/metrics`` (admin token).

A worker process has no web app, but its counters (deliveries settled, upstream calls, latency)
live only in it: Prometheus scrapes each worker here. Runs inside the worker's event loop and
leaves signal handling to the worker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from app.ops.health import router as health_router
from app.ops.metrics_api import router as metrics_router
from app.services import Services


def create_worker_app(services: Services) -> FastAPI:
    app = FastAPI(title="bridge worker", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.services = services
    app.include_router(health_router)
    app.include_router(metrics_router)
    return app


class _QuietServer(uvicorn.Server):
    """A uvicorn server that installs no signal handlers (the worker owns SIGTERM/SIGINT)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn
        return None


def worker_http_server(services: Services, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(create_worker_app(services), host=host, port=port, log_config=None, lifespan="off")
    return _QuietServer(config)
