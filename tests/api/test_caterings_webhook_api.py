"""POST /webhooks/caterings in-process: what is stored, and every answer of the contract."""

from __future__ import annotations

import json
import time

import httpx
from sqlalchemy import func, select

from app.caterings.signature import signed_headers
from app.models import Delivery, InboundEvent
from tests.support import processes as p


def paid() -> dict:  # type: ignore[type-arg]
    return next(r for r in p.sample_webhooks() if r["body"]["type"] == "order.paid")


async def post(client: httpx.AsyncClient, body: dict, webhook_id: str, **kw) -> httpx.Response:  # type: ignore[no-untyped-def,type-arg]
    raw, headers = p.signed_webhook(body, webhook_id, **kw)
    return await client.post("/webhooks/caterings", content=raw, headers=headers)


async def count(services, model) -> int:  # type: ignore[no-untyped-def]
    async with services.sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(model)))


async def test_accepted_webhook_is_stored_with_its_deliveries(client, services) -> None:  # type: ignore[no-untyped-def]
    answer = await post(client, paid()["body"], "msg_a")
    assert answer.status_code == 202
    assert answer.json() == {"id": "msg_a", "status": "accepted"}
    async with services.sessions() as s:
        inbound = (await s.scalars(select(InboundEvent))).one()
        kinds = [d.kind for d in (await s.scalars(select(Delivery).order_by(Delivery.id))).all()]
    assert (inbound.event_type, inbound.status) == ("order.paid", "accepted")
    # user, purchase on the diet-simple, the diet-variant, its reservation - in lane order
    assert kinds == ["usercom.user.upsert", "usercom.product_event", "usercom.product.upsert", "usercom.product_event"]


async def test_same_webhook_id_is_a_duplicate_and_nothing_is_done_twice(client, services) -> None:  # type: ignore[no-untyped-def]
    await post(client, paid()["body"], "msg_dup")
    again = await post(client, paid()["body"], "msg_dup")
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert await count(services, InboundEvent) == 1
    assert await count(services, Delivery) == 4


async def test_same_fact_under_another_id_adds_no_second_purchase_or_reservation(client, services) -> None:  # type: ignore[no-untyped-def]
    await post(client, paid()["body"], "msg_1")
    await post(client, paid()["body"], "msg_2")
    async with services.sessions() as s:
        kinds = [d.kind for d in (await s.scalars(select(Delivery))).all()]
    # the second carries only the (idempotent) upserts
    assert kinds.count("usercom.product_event") == 2
    assert len(kinds) == 6


async def test_unknown_type_is_ignored_but_kept(client, services) -> None:  # type: ignore[no-untyped-def]
    answer = await post(client, {"type": "loyalty.points_added", "occurred_at": "2026-10-14T12:05:00+01:00",
                                 "data": {"user_id": 3007}}, "msg_u")
    assert (answer.status_code, answer.json()["status"]) == (202, "ignored")
    assert await count(services, InboundEvent) == 1
    assert await count(services, Delivery) == 0


async def test_the_answer_does_not_wait_for_usercom(client) -> None:  # type: ignore[no-untyped-def]
    # User.com points at an unresolvable host here; accepting must not touch it.
    assert (await post(client, paid()["body"], "msg_fast")).status_code == 202


async def test_declared_body_over_the_limit_is_413(client) -> None:  # type: ignore[no-untyped-def]
    answer = await client.post("/webhooks/caterings", content=b"x" * (1_048_576 + 1))
    assert answer.status_code == 413


async def test_bad_content_length_is_400_not_500(app) -> None:  # type: ignore[no-untyped-def]
    # httpx always sets a correct Content-Length, so speak ASGI directly
    sent: list[dict] = []  # type: ignore[type-arg]

    async def receive() -> dict:  # type: ignore[type-arg]
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict) -> None:  # type: ignore[type-arg]
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/webhooks/caterings", "headers": [(b"content-length", b"abc")],
             "query_string": b"", "http_version": "1.1", "scheme": "http", "server": ("t", 80), "client": ("c", 1),
             "root_path": ""}
    await app(scope, receive, send)
    assert sent[0]["status"] == 400


async def test_validation_error_names_the_field(client) -> None:  # type: ignore[no-untyped-def]
    body = paid()["body"]
    body["data"]["order"]["items"][0]["diet_id"] = None
    answer = await post(client, body, "msg_v")
    assert answer.status_code == 422
    assert "data.order.items.0.diet_id" in answer.json()["detail"]


async def test_body_that_is_json_but_not_an_object_is_422(client) -> None:  # type: ignore[no-untyped-def]
    raw = json.dumps([1, 2, 3]).encode()
    answer = await client.post("/webhooks/caterings", content=raw,
                               headers=signed_headers(raw, "msg_list", int(time.time()), p.SAMPLE_SECRET))
    assert answer.status_code == 422


async def test_refused_webhooks_store_nothing(client, services) -> None:  # type: ignore[no-untyped-def]
    await post(client, paid()["body"], "msg_old", timestamp=int(time.time()) - 3600)
    assert await count(services, InboundEvent) == 0


async def test_probes(client) -> None:  # type: ignore[no-untyped-def]
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


async def test_ready_says_why_when_the_database_is_behind(client, services) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    async with services.engine.begin() as connection:
        await connection.execute(text("UPDATE alembic_version SET version_num = 'old'"))
    answer = await client.get("/ready")
    assert answer.status_code == 503
    assert "migration" in answer.json()["reason"]


async def test_operator_endpoints_need_the_admin_token(client, admin) -> None:  # type: ignore[no-untyped-def]
    assert (await client.get("/deliveries/summary")).status_code == 401
    assert (await client.get("/deliveries/summary", headers={"Authorization": "Bearer wrong"})).status_code == 401
    assert (await client.get("/deliveries/summary", headers=admin)).status_code == 200
