"""Prometheus metrics. One registry per app instance, so tests and several apps never collide."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.webhooks = Counter(
            "bridge_webhooks_received", "Inbound webhooks by source, type and outcome",
            ["source", "type", "outcome"], registry=r,
        )
        self.accept_latency = Histogram(
            "bridge_accept_seconds", "Time to verify, store and answer an inbound webhook", ["source"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=r,
        )
        self.deliveries_settled = Counter(
            "bridge_deliveries_settled", "Deliveries performed, by kind and outcome", ["kind", "outcome"], registry=r,
        )
        self.delivery_latency = Histogram(
            "bridge_delivery_seconds", "Time to perform one delivery (all its upstream calls)", ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r,
        )
        self.upstream_calls = Counter(
            "bridge_upstream_calls", "Calls to upstream systems by status", ["system", "status"], registry=r,
        )
        self.upstream_latency = Histogram(
            "bridge_upstream_seconds", "Upstream call latency", ["system"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15), registry=r,
        )
        self.deliveries_by_state = Gauge(
            "bridge_deliveries", "Deliveries in the outbox by state", ["state"], registry=r,
        )
        self.queue_depth = Gauge("bridge_queue_depth", "Deliveries pending or in flight", registry=r)
        self.oldest_pending_age = Gauge(
            "bridge_oldest_pending_age_seconds", "Age of the oldest pending or in-flight delivery", registry=r,
        )
        self.rate_limit = Gauge(
            "bridge_rate_limit_per_second", "Current adaptive rate limit of this process", ["system"], registry=r,
        )
        self.store_up = Gauge(
            "bridge_store_up", "1 when the last scrape could read the outbox from the database", registry=r,
        )

    def observe_upstream(self, system: str, status: str, seconds: float) -> None:
        self.upstream_calls.labels(system, status).inc()
        self.upstream_latency.labels(system).observe(seconds)

    def observe_delivery(self, kind: str, outcome: str, seconds: float) -> None:
        self.deliveries_settled.labels(kind, outcome).inc()
        self.delivery_latency.labels(kind).observe(seconds)


# --- at scrape time (app.ops.metrics_api): gauges read from the store, this process's rates

DELIVERY_STATES = ("pending", "in_flight", "done", "dead")


async def refresh_gauges(metrics: Metrics, sessions: Any, limiters: dict[str, Any], now: datetime | None = None) -> None:
    """Deliveries by state, queue depth and oldest open age from the store; this process's rates."""
    from app.delivery import repository

    async with sessions() as session:
        by_state = await repository.counts_by_state(session)
        oldest = await repository.oldest_open_created_at(session)
    for state in sorted(set(DELIVERY_STATES) | set(by_state)):
        metrics.deliveries_by_state.labels(state).set(by_state.get(state, 0))
    metrics.queue_depth.set(by_state.get("pending", 0) + by_state.get("in_flight", 0))
    now = now or datetime.now(timezone.utc)
    metrics.oldest_pending_age.set(max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0)
    for system, limiter in limiters.items():
        metrics.rate_limit.labels(system).set(limiter.rate)
