"""Everything a running bridge holds: settings, database, upstream clients, the worker.

Built once per process by ``build_services`` and closed by ``Services.close``. The web app
keeps it on ``app.state.services``; the ``worker`` command uses it without the web app.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app import consents
from app.caterings import client as caterings_client
from app.caterings.accept_writer import AcceptWriter
from app.db import create_engine, create_session_factory
from app.delivery.handlers import HandlerContext
from app.delivery.plan import CONSENT_UPDATE
from app.delivery.worker import SettleHook, Worker, retry_policy_from
from app.ops.metrics import Metrics
from app.ratelimit import AdaptiveRateLimiter
from app.settings import Settings
from app.usercom import client as usercom_client


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    usercom: usercom_client.UserComClient
    caterings: caterings_client.CateringsClient
    metrics: Metrics
    worker: Worker
    _http: list[httpx.AsyncClient]
    _engines: list[AsyncEngine] = field(default_factory=list)  # besides ``engine``
    accept_writer: AcceptWriter = field(init=False)  # accepted webhooks, stored in group commits

    def __post_init__(self) -> None:
        self.accept_writer = AcceptWriter(lambda: self.sessions)

    def wake_worker(self) -> None:
        self.worker.wake()

    async def close(self) -> None:
        for http in self._http:
            await http.aclose()
        await self.engine.dispose()
        for other in self._engines:
            await other.dispose()


# Hooks other features register to run when a delivery of their kind settles (done or dead).
SETTLE_HOOKS: dict[str, SettleHook] = {}
SETTLE_HOOKS[CONSENT_UPDATE] = consents.on_consent_delivery_settled  # the consent log follows its delivery


def build_services(settings: Settings) -> Services:
    metrics = Metrics()
    engine = create_engine(
        settings.database_url, pool_size=settings.database_pool_size, max_overflow=settings.database_max_overflow
    )
    sessions = create_session_factory(engine)
    # Lease heartbeats get a connection of their own, so they never queue behind busy work.
    lease_engine = None if settings.is_sqlite else create_engine(settings.database_url, pool_size=1, max_overflow=0)
    share = settings.sender_processes  # each sending process takes its share of the limits
    usercom_http = usercom_client.build_http(
        settings.usercom_api_url, settings.usercom_api_key.get_secret_value(), settings.usercom_timeout_seconds
    )
    caterings_http = caterings_client.build_http(
        settings.caterings_api_url, settings.caterings_api_token.get_secret_value(), settings.caterings_brand_id,
        settings.caterings_timeout_seconds,
    )
    usercom = usercom_client.UserComClient(
        usercom_http, AdaptiveRateLimiter(settings.usercom_rate_limit / share), metrics.observe_upstream
    )
    caterings = caterings_client.CateringsClient(
        caterings_http, AdaptiveRateLimiter(settings.caterings_rate_limit / share), metrics.observe_upstream
    )
    worker = Worker(
        HandlerContext(sessions=sessions, usercom=usercom, caterings=caterings),
        policy=retry_policy_from(settings),
        concurrency=settings.worker_concurrency,
        batch_size=settings.worker_batch_size,
        poll_seconds=settings.worker_poll_seconds,
        lease_seconds=settings.lease_seconds,
        settle_hooks=SETTLE_HOOKS,
        observer=metrics.observe_delivery,
        lease_sessions=create_session_factory(lease_engine) if lease_engine is not None else None,
    )
    return Services(
        settings=settings, engine=engine, sessions=sessions, usercom=usercom, caterings=caterings,
        metrics=metrics, worker=worker, _http=[usercom_http, caterings_http],
        _engines=[lease_engine] if lease_engine is not None else [],
    )
