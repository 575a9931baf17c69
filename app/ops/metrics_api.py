"""``GET /metrics``: Prometheus text, behind the admin token like every operator endpoint.

Counters and histograms are this process's; the outbox gauges are read from the database at
scrape time, so every replica reports the same queue.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.deps import AdminDep, ServicesDep
from app.ops.metrics import refresh_gauges

router = APIRouter(tags=["operators"], dependencies=[AdminDep])


@router.get("/metrics", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    limiters = {"usercom": services.usercom.limiter, "caterings": services.caterings.limiter}
    try:
        await refresh_gauges(services.metrics, services.sessions, limiters)
    except Exception:  # the store is away: still serve the counters, and say so
        services.metrics.store_up.set(0)
    else:
        services.metrics.store_up.set(1)
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
