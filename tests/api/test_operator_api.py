"""Operator API in-process: /metrics, dead letters, replay, retention purge (and `bridge purge`)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from app.delivery import repository
from app.delivery.plan import PRODUCT_EVENT, USER_UPSERT, PlannedDelivery
from app.models import BusinessFact, ConsentLog, ConsentState, Delivery, IdMapEntry, InboundEvent, utcnow
from tests.support import processes as p


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text (labels in any order)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


async def post_webhook(client, body: dict, webhook_id: str) -> None:  # type: ignore[no-untyped-def,type-arg]
    raw, headers = p.signed_webhook(body, webhook_id)
    assert (await client.post("/webhooks/caterings", content=raw, headers=headers)).status_code == 202


def paid() -> dict:  # type: ignore[type-arg]
    return next(r for r in p.sample_webhooks() if r["body"]["type"] == "order.paid")["body"]


async def park(services, lanes: list[str], *, status: int = 400, error: str = "bad attribute") -> list[int]:  # type: ignore[no-untyped-def]
    async with services.sessions.begin() as s:
        added = await repository.enqueue(s, [PlannedDelivery(USER_UPSERT, lane, {"body": {}}) for lane in lanes])
    ids = [d.id for d in added]
    async with services.sessions.begin() as s:
        claimed = await repository.claim(s, worker_id="w", limit=len(lanes), lease_seconds=30)
        for d in claimed:
            await repository.park_dead(s, d.id, "w", status=status, error=error)
    return ids


# --- /metrics


async def test_metrics_need_the_admin_token(client) -> None:  # type: ignore[no-untyped-def]
    assert (await client.get("/metrics")).status_code == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401


async def test_metrics_count_webhooks_and_read_the_outbox_at_scrape_time(client, admin) -> None:  # type: ignore[no-untyped-def]
    await post_webhook(client, paid(), "msg_m1")
    raw, headers = p.signed_webhook(paid(), "msg_m2")
    await client.post("/webhooks/caterings", content=raw, headers={**headers, "webhook-signature": "v1,AAAA"})
    answer = await client.get("/metrics", headers=admin)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert metric(text, "bridge_webhooks_received_total", source="caterings", type="order.paid", outcome="accepted") == 1
    assert metric(text, "bridge_webhooks_received_total", source="caterings", type="?", outcome="unauthorized") == 1
    assert metric(text, "bridge_deliveries", state="pending") == 4
    assert metric(text, "bridge_deliveries", state="dead") == 0
    assert metric(text, "bridge_queue_depth") == 4
    assert 0 <= metric(text, "bridge_oldest_pending_age_seconds") < 60  # type: ignore[operator]
    assert metric(text, "bridge_rate_limit_per_second", system="usercom") == 10
    assert metric(text, "bridge_store_up") == 1
    assert "bridge_accept_seconds_bucket" in text and "bridge_upstream_seconds" in text


async def test_oldest_pending_age_follows_the_oldest_open_delivery(client, admin, services) -> None:  # type: ignore[no-untyped-def]
    await post_webhook(client, paid(), "msg_age")
    async with services.sessions.begin() as s:
        await s.execute(update(Delivery).values(created_at=utcnow() - timedelta(minutes=10)))
    age = metric((await client.get("/metrics", headers=admin)).text, "bridge_oldest_pending_age_seconds")
    assert 599 < age < 700  # type: ignore[operator]
    async with services.sessions.begin() as s:
        await s.execute(update(Delivery).values(state="done"))
    text = (await client.get("/metrics", headers=admin)).text
    assert metric(text, "bridge_oldest_pending_age_seconds") == 0
    assert metric(text, "bridge_deliveries", state="done") == 4


# --- dead letters and replay


async def test_dead_deliveries_are_listed_with_their_reason_page_by_page(client, admin, services) -> None:  # type: ignore[no-untyped-def]
    dead = await park(services, ["user:1", "user:2", "user:3"], error='{"errors": {"kcal": ["bad"]}}')
    await post_webhook(client, paid(), "msg_alive")  # pending ones are not listed as dead
    first = (await client.get("/deliveries", params={"state": "dead", "limit": 2}, headers=admin)).json()
    assert [d["id"] for d in first["items"]] == dead[:2]
    item = first["items"][0]
    assert (item["kind"], item["lane"], item["state"], item["attempts"], item["last_status"]) == (
        USER_UPSERT, "user:1", "dead", 1, 400)
    assert "kcal" in item["last_error"]
    assert item["created_at"] and item["updated_at"] and "payload" not in item
    second = (await client.get("/deliveries", params={"state": "dead", "limit": 2, "after_id": first["next_after_id"]},
                               headers=admin)).json()
    assert [d["id"] for d in second["items"]] == dead[2:] and second["next_after_id"] is None
    everything = (await client.get("/deliveries", headers=admin)).json()["items"]
    assert len(everything) == 7
    one = (await client.get(f"/deliveries/{dead[0]}", headers=admin)).json()
    assert one["payload"] == {"body": {}}


@pytest.mark.parametrize("query", [{"state": "gone"}, {"limit": 0}, {"limit": 501}, {"after_id": -1},
                                   {"after_id": 2**70}, {"after_id": "x"}])
async def test_a_bad_listing_query_is_422(client, admin, query) -> None:  # type: ignore[no-untyped-def]
    assert (await client.get("/deliveries", params=query, headers=admin)).status_code == 422


async def test_one_dead_delivery_is_replayed_and_only_a_dead_one(client, admin, services) -> None:  # type: ignore[no-untyped-def]
    (dead,) = await park(services, ["user:1"])
    answer = await client.post(f"/deliveries/{dead}/retry", headers=admin)
    assert answer.status_code == 200 and answer.json() == {"id": dead, "state": "pending"}
    async with services.sessions() as s:
        row = await s.get(Delivery, dead)
    assert (row.state, row.attempts, row.throttled, row.lease_until) == ("pending", 0, 0, None)
    assert row.next_attempt_at <= utcnow()
    again = await client.post(f"/deliveries/{dead}/retry", headers=admin)
    assert again.status_code == 409 and "pending" in again.json()["detail"]
    assert (await client.post("/deliveries/999999/retry", headers=admin)).status_code == 404
    assert (await client.post("/deliveries/abc/retry", headers=admin)).status_code == 422
    assert (await client.post(f"/deliveries/{2**64}/retry", headers=admin)).status_code == 422
    assert (await client.post(f"/deliveries/{dead}/retry")).status_code == 401


async def test_all_dead_deliveries_are_replayed_or_those_parked_since_a_time(client, admin, services) -> None:  # type: ignore[no-untyped-def]
    old = await park(services, ["user:1", "user:2"])
    async with services.sessions.begin() as s:
        await s.execute(update(Delivery).where(Delivery.id.in_(old)).values(updated_at=utcnow() - timedelta(days=2)))
    recent = await park(services, ["user:3"])
    since = (utcnow() - timedelta(days=1)).isoformat()
    answer = await client.post("/deliveries/retry", params={"state": "dead", "since": since}, headers=admin)
    assert answer.json() == {"retried": 1}
    async with services.sessions() as s:
        assert (await s.get(Delivery, recent[0])).state == "pending"
        assert (await s.get(Delivery, old[0])).state == "dead"
    naive = (datetime.now(timezone.utc) - timedelta(days=3)).replace(tzinfo=None).isoformat()
    assert (await client.post("/deliveries/retry", params={"state": "dead", "since": naive},
                              headers=admin)).json() == {"retried": 2}
    assert (await client.post("/deliveries/retry", params={"state": "dead"}, headers=admin)).json() == {"retried": 0}


@pytest.mark.parametrize("query", [{}, {"state": "pending"}, {"state": "dead", "since": "yesterday"}])
async def test_a_bad_bulk_replay_is_422(client, admin, query) -> None:  # type: ignore[no-untyped-def]
    assert (await client.post("/deliveries/retry", params=query, headers=admin)).status_code == 422


# --- retention


async def seed_for_purge(services) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Old and new records of every kind; ids of the interesting ones."""
    old = utcnow() - timedelta(days=40)
    new = utcnow() - timedelta(days=1)
    ids: dict[str, int] = {}
    async with services.sessions.begin() as s:
        for name, received, states in [("inbound_old_done", old, ["done", "done"]), ("inbound_old_dead", old, ["dead"]),
                                       ("inbound_new", new, ["done"])]:
            inbound = InboundEvent(source="caterings", external_id=name, event_type="order.paid", status="accepted",
                                   received_at=received, body={"x": 1})
            s.add(inbound)
            await s.flush()
            ids[name] = inbound.id
            for n, state in enumerate(states):
                delivery = Delivery(inbound_id=inbound.id, kind=PRODUCT_EVENT, target="usercom", lane="user:1",
                                    payload={}, state=state, attempts=1, throttled=0, created_at=received,
                                    next_attempt_at=received, updated_at=received,
                                    done_at=received if state == "done" else None)
                s.add(delivery)
                await s.flush()
                ids[f"{name}_{n}"] = delivery.id
        pending_old = Delivery(kind=USER_UPSERT, target="usercom", lane="user:2", payload={}, state="pending",
                               attempts=0, throttled=0, created_at=old, next_attempt_at=old, updated_at=old)
        s.add(pending_old)
        s.add(BusinessFact(key="purchase:old", created_at=old))
        s.add(IdMapEntry(kind="user", custom_id="1", usercom_id=5, updated_at=old))
        s.add(ConsentState(user_id="1", marketing=True, changed_at=old, source="usercom"))
        s.add(ConsentLog(user_id="1", marketing=True, source="usercom", recorded_at=old, status="delivered"))
        await s.flush()
        ids["pending_old"] = pending_old.id
    return ids


async def count(services, model) -> int:  # type: ignore[no-untyped-def]
    async with services.sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(model)))


async def test_purge_removes_only_old_done_work_and_keeps_what_keeps_the_bridge_correct(  # type: ignore[no-untyped-def]
    client, admin, services
) -> None:
    ids = await seed_for_purge(services)
    dry = (await client.post("/maintenance/purge", params={"dry_run": True}, headers=admin)).json()
    assert (dry["deliveries"], dry["inbound_events"], dry["dry_run"]) == (2, 1, True)
    assert await count(services, Delivery) == 5
    report = (await client.post("/maintenance/purge", headers=admin)).json()
    assert (report["deliveries"], report["inbound_events"], report["dry_run"]) == (2, 1, False)
    async with services.sessions() as s:
        left = set((await s.execute(select(Delivery.id))).scalars())
        inbound_left = set((await s.execute(select(InboundEvent.id))).scalars())
    assert left == {ids["inbound_old_dead_0"], ids["inbound_new_0"], ids["pending_old"]}
    assert inbound_left == {ids["inbound_old_dead"], ids["inbound_new"]}
    for model in (BusinessFact, IdMapEntry, ConsentState, ConsentLog):
        assert await count(services, model) == 1, model
    shorter = (await client.post("/maintenance/purge", params={"older_than_days": 0.5}, headers=admin)).json()
    assert (shorter["deliveries"], shorter["inbound_events"]) == (1, 1)


@pytest.mark.parametrize("query", [{"older_than_days": 0}, {"older_than_days": -3}, {"older_than_days": "x"}])
async def test_a_bad_purge_is_422(client, admin, query) -> None:  # type: ignore[no-untyped-def]
    assert (await client.post("/maintenance/purge", params=query, headers=admin)).status_code == 422


async def test_purge_needs_the_admin_token(client) -> None:  # type: ignore[no-untyped-def]
    assert (await client.post("/maintenance/purge")).status_code == 401


async def test_the_purge_command_uses_the_retention_setting(services, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ids = await seed_for_purge(services)
    from app.cli import cli

    env = {"DATABASE_URL": services.settings.database_url, "RETENTION_DAYS": "30", "LOG_FORMAT": "json"}
    def invoke(args: list[str], environment: dict[str, str]):  # type: ignore[no-untyped-def]
        return asyncio.to_thread(CliRunner().invoke, cli, args, env=environment)  # it runs its own loop

    dry = await invoke(["purge", "--dry-run"], env)
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout.strip().splitlines()[-1])["deliveries"] == 2
    done = await invoke(["purge"], env)
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert (report["deliveries"], report["inbound_events"]) == (2, 1)
    async with services.sessions() as s:
        assert await s.get(Delivery, ids["pending_old"]) is not None
    bad = await invoke(["purge"], {**env, "RETENTION_DAYS": "0"})
    assert bad.exit_code == 2 and "RETENTION_DAYS" in bad.output


# --- the store away


async def test_a_webhook_gets_503_with_retry_after_while_the_store_is_away(client, services, admin) -> None:  # type: ignore[no-untyped-def]
    from app.db import create_engine, create_session_factory

    dead_engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:9/none")
    working = services.sessions
    services.sessions = create_session_factory(dead_engine)
    try:
        raw, headers = p.signed_webhook(paid(), "msg_store_away")
        answer = await client.post("/webhooks/caterings", content=raw, headers=headers)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
        assert (await client.get("/deliveries", headers=admin)).status_code == 503
    finally:
        services.sessions = working
        await dead_engine.dispose()
    raw, headers = p.signed_webhook(paid(), "msg_store_away")
    assert (await client.post("/webhooks/caterings", content=raw, headers=headers)).status_code == 202
