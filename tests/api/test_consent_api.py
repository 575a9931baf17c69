"""POST /webhooks/usercom/consent and GET /consents in-process: answers, the audit log, the outbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from app import consents
from app.delivery import plan
from app.models import ConsentLog, ConsentState, Delivery, IdMapEntry
from tests.support import processes as p

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
TOKEN = {"token": p.CONSENT_TOKEN}


def sample_callbacks() -> list[dict[str, Any]]:
    lines = (SAMPLES / "consent-callbacks.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


async def callback(client: httpx.AsyncClient, body: Any, **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("params", TOKEN)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post("/webhooks/usercom/consent", content=content,
                             headers={"content-type": "application/json", **kwargs.pop("headers", {})}, **kwargs)


async def webhook(client: httpx.AsyncClient, body: dict[str, Any], webhook_id: str) -> httpx.Response:
    raw, headers = p.signed_webhook(body, webhook_id)
    answer = await client.post("/webhooks/caterings", content=raw, headers=headers)
    assert answer.status_code == 202, answer.text
    return answer


def user_updated(user_id: str, marketing: bool, occurred_at: str, email: str | None = None) -> dict[str, Any]:
    user: dict[str, Any] = {"id": user_id, "agreements": {"data_processing": True, "marketing": marketing}}
    if email:
        user["email"] = email
    return {"type": "user.updated", "occurred_at": occurred_at, "data": {"user": user}}


def consent(user_id: str, marketing: Any, timestamp: str = "2026-07-06T12:00:00+00:00") -> dict[str, Any]:
    return {"path": 11, "timestamp": timestamp, "extra": {"marketing_terms": marketing}, "user": {"custom_id": user_id}}


async def rows(services, model) -> list:  # type: ignore[no-untyped-def,type-arg]
    async with services.sessions() as s:
        return list((await s.scalars(select(model))).all())


async def consent_deliveries(services) -> list[Delivery]:  # type: ignore[no-untyped-def]
    async with services.sessions() as s:
        query = select(Delivery).where(Delivery.kind == plan.CONSENT_UPDATE).order_by(Delivery.id)
        return list((await s.scalars(query)).all())


async def log_count(services) -> int:  # type: ignore[no-untyped-def]
    async with services.sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(ConsentLog)))


# --- authentication -------------------------------------------------------------------------------


async def test_wrong_or_missing_token_is_401_and_nothing_is_recorded(client, services) -> None:  # type: ignore[no-untyped-def]
    await webhook(client, user_updated("1043", True, "2026-07-01T10:00:00+02:00"), "msg_u1")
    body = consent("1043", False)
    for kwargs in ({"params": {}}, {"params": {"token": "wrong"}}, {"params": {"token": ""}},
                   {"params": {}, "headers": {"Authorization": "Token wrong"}},
                   {"params": {}, "headers": {"Authorization": f"Bearer {p.CONSENT_TOKEN}"}}):
        answer = await callback(client, body, **kwargs)
        assert answer.status_code == 401, kwargs
    # the webhook's own "recorded" row is the only one
    assert [e.status for e in await rows(services, ConsentLog)] == ["recorded"]
    assert await consent_deliveries(services) == []


async def test_token_in_the_header_is_accepted(client, services) -> None:  # type: ignore[no-untyped-def]
    await webhook(client, user_updated("1043", True, "2026-07-01T10:00:00+02:00"), "msg_u1")
    answer = await callback(client, consent("1043", False), params={},
                            headers={"Authorization": f"Token {p.CONSENT_TOKEN}"})
    assert answer.status_code == 202, answer.text


# --- the samples ----------------------------------------------------------------------------------


async def test_sample_callbacks_after_the_sample_webhooks(client, services, admin) -> None:  # type: ignore[no-untyped-def]
    for record in p.sample_webhooks():
        raw, headers = p.signed_webhook(record["body"], record["webhook_id"])
        await client.post("/webhooks/caterings", content=raw, headers=headers)
    answers = [await callback(client, body) for body in sample_callbacks()]
    assert [(a.status_code, a.json()["status"]) for a in answers] == [
        (202, "accepted"),  # 1043 withdraws; Caterings said true
        (200, "unchanged"),  # 2210 by custom id: Caterings already says true
        (200, "unchanged"),  # 2210 by e-mail in capitals: the same
        (422, "rejected"),  # "yes" is not a boolean
        (422, "rejected"),  # nobody knows 999999
    ]
    assert answers[2].json()["user_id"] == "2210"
    assert "marketing_terms" in answers[3].json()["detail"]
    assert "unknown user" in answers[4].json()["detail"]

    (delivery,) = await consent_deliveries(services)
    assert (delivery.lane, delivery.payload["user_id"], delivery.payload["marketing"]) == ("user:1043", "1043", False)
    assert delivery.payload["consent_id"] == answers[0].json()["id"]

    log = (await client.get("/consents", params={"user_id": "1043"}, headers=admin)).json()
    assert [(e["source"], e["status"], e["marketing"]) for e in log["items"]] == [
        ("usercom", "rejected", None), ("usercom", "pending", False),
        ("caterings", "recorded", True), ("caterings", "recorded", False),
    ]
    assert log["items"][1]["delivery_id"] == delivery.id
    assert log["current"]["marketing"] is False and log["current"]["source"] == "usercom"
    unknown = (await client.get("/consents", params={"user_id": "999999"}, headers=admin)).json()["items"]
    assert [(e["status"], e["marketing"]) for e in unknown] == [("rejected", True)]


# --- finding the user -----------------------------------------------------------------------------


async def test_user_found_by_email_case_insensitively_before_any_delivery(client, services) -> None:  # type: ignore[no-untyped-def]
    await webhook(client, user_updated("555", False, "2026-07-01T10:00:00+02:00", "ola.nowak@example.com"), "m1")
    body = {"extra": {"marketing_terms": True}, "user": {"id": 99, "email": "OLA.Nowak@Example.COM"}}
    answer = await callback(client, body)
    assert (answer.status_code, answer.json()["user_id"]) == (202, "555")
    async with services.sessions() as s:
        entry = await s.get(IdMapEntry, ("user", "555"))
    assert entry.usercom_id is None and entry.payload_hash is None  # only the e-mail was noted


async def test_unknown_email_and_no_identifier_are_422_and_recorded(client, services) -> None:  # type: ignore[no-untyped-def]
    first = await callback(client, {"extra": {"marketing_terms": True}, "user": {"email": "nobody@example.com"}})
    second = await callback(client, {"extra": {"marketing_terms": True}})
    assert (first.status_code, second.status_code) == (422, 422)
    assert "e-mail" in first.json()["detail"] and "nobody" not in first.json()["detail"]
    assert [e.status for e in await rows(services, ConsentLog)] == ["rejected", "rejected"]
    assert await consent_deliveries(services) == []


async def test_bad_bodies_are_4xx_never_500(client, services) -> None:  # type: ignore[no-untyped-def]
    assert (await callback(client, b"{not json")).status_code == 422
    assert (await callback(client, b"\xff\xfe")).status_code == 422
    assert (await callback(client, [1, 2])).status_code == 422
    assert (await callback(client, {"timestamp": "soon", "extra": {"marketing_terms": True}})).status_code == 422
    assert (await callback(client, b"[" * 100_000 + b"]" * 100_000)).status_code in (413, 422)
    assert await log_count(services) >= 4
    assert await consent_deliveries(services) == []


async def test_body_over_the_limit_is_413_and_not_recorded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from app.main import create_app
    from tests.api.conftest import api_settings

    app = create_app(api_settings(tmp_path, max_body_bytes=200))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://b") as small:
        answer = await callback(small, {**consent("1", True), "padding": "x" * 500})
        assert answer.status_code == 413
        async with app.state.services.sessions() as s:
            assert await s.scalar(select(func.count()).select_from(ConsentLog)) == 0


# --- echo loop, newer fact wins -------------------------------------------------------------------


async def test_same_value_twice_is_forwarded_once(client, services) -> None:  # type: ignore[no-untyped-def]
    await webhook(client, user_updated("2210", False, "2026-06-30T21:40:00+02:00", "piotr@example.org"), "m1")
    one = await callback(client, {**consent("2210", True, "2026-07-06T12:05:00+00:00"), "user": {}} | {
        "extra": {"marketing_terms": True, "custom_id": "2210"}})
    two = await callback(client, {"timestamp": "2026-07-06T12:06:00+00:00", "extra": {"marketing_terms": True},
                                  "user": {"email": "PIOTR@example.org"}})
    assert (one.status_code, two.status_code, two.json()["status"]) == (202, 200, "unchanged")
    assert len(await consent_deliveries(services)) == 1


async def test_withdrawn_then_caterings_confirms_the_same_value_sends_nothing_more(client, services) -> None:  # type: ignore[no-untyped-def]
    await webhook(client, user_updated("1043", True, "2026-07-02T18:20:00+02:00"), "m1")
    assert (await callback(client, consent("1043", False, "2026-07-06T12:00:00+00:00"))).status_code == 202
    await webhook(client, user_updated("1043", False, "2026-07-06T14:10:00+02:00"), "m2")
    echo = await callback(client, consent("1043", False, "2026-07-06T12:20:00+00:00"))  # User.com re-fires
    assert (echo.status_code, echo.json()["status"]) == (200, "unchanged")
    assert len(await consent_deliveries(services)) == 1
    statuses = [(e.source, e.status) for e in await rows(services, ConsentLog)]
    assert statuses == [("caterings", "recorded"), ("usercom", "pending"), ("usercom", "unchanged")]


async def test_a_callback_older_than_the_known_change_is_stale(client, services) -> None:  # type: ignore[no-untyped-def]
    await webhook(client, user_updated("1043", True, "2026-07-06T14:00:00+02:00"), "m1")
    answer = await callback(client, consent("1043", False, "2026-07-06T11:59:59+00:00"))
    assert (answer.status_code, answer.json()["status"]) == (200, "stale")
    assert await consent_deliveries(services) == []
    async with services.sessions() as s:
        assert (await consents.known(s, "1043")).marketing is True


async def test_an_older_caterings_fact_does_not_overwrite_a_newer_consent(client, services) -> None:  # type: ignore[no-untyped-def]
    await webhook(client, user_updated("1043", False, "2026-07-01T10:00:00+02:00"), "m1")
    assert (await callback(client, consent("1043", True, "2026-07-06T12:00:00+00:00"))).status_code == 202
    # a late order webhook from before the consent, still carrying false
    late = {"type": "order.updated", "occurred_at": "2026-07-05T10:00:00+02:00",
            "data": {"order": {"id": 1, "user": {"id": 1043, "agreements": {"marketing": False}},
                               "items": [{"diet_id": 1, "variant_id": 1, "calorific_id": 1}]}}}
    await webhook(client, late, "m2")
    async with services.sessions() as s:
        current = await consents.known(s, "1043")
    assert (current.marketing, current.source) == (True, "usercom")
    assert [e.status for e in await rows(services, ConsentLog)][-1] == "stale"


async def test_while_a_withdrawal_is_on_its_way_caterings_true_does_not_undo_it(client, services) -> None:  # type: ignore[no-untyped-def]
    await webhook(client, user_updated("1043", True, "2026-07-01T10:00:00+02:00"), "m1")
    assert (await callback(client, consent("1043", False, "2026-07-06T12:00:00+00:00"))).status_code == 202
    # newer than the withdrawal, but Caterings has not received it yet: it still reports true
    await webhook(client, user_updated("1043", True, "2026-07-06T16:00:00+02:00"), "m2")
    async with services.sessions() as s:
        assert (await consents.known(s, "1043")).marketing is False
        assert not await consents.superseded(s, "1043", False)


async def test_caterings_withdrawal_supersedes_a_consent_on_its_way(client, services) -> None:  # type: ignore[no-untyped-def]
    await webhook(client, user_updated("1043", False, "2026-07-01T10:00:00+02:00"), "m1")
    assert (await callback(client, consent("1043", True, "2026-07-06T12:00:00+00:00"))).status_code == 202
    await webhook(client, user_updated("1043", False, "2026-07-06T16:00:00+02:00"), "m2")
    async with services.sessions() as s:
        current = await consents.known(s, "1043")
        assert (current.marketing, current.source) == (False, "caterings")
        assert await consents.superseded(s, "1043", True)


async def test_a_future_timestamp_counts_as_now(client, services) -> None:  # type: ignore[no-untyped-def]
    await webhook(client, user_updated("1043", True, "2026-07-01T10:00:00+02:00"), "m1")
    assert (await callback(client, consent("1043", False, "2999-01-01T00:00:00+00:00"))).status_code == 202
    async with services.sessions() as s:
        assert (await consents.known(s, "1043")).changed_at.year < 2999


async def test_deleted_user_forgets_the_consent_state(client, services) -> None:  # type: ignore[no-untyped-def]
    await webhook(client, user_updated("3007", False, "2026-10-14T12:00:00+01:00"), "m1")
    await webhook(client, {"type": "user.deleted", "occurred_at": "2026-10-20T08:00:00+02:00",
                           "data": {"user": {"id": 3007}}}, "m2")
    assert await rows(services, ConsentState) == []


async def test_a_duplicate_webhook_records_nothing_twice(client, services) -> None:  # type: ignore[no-untyped-def]
    body = user_updated("1043", True, "2026-07-01T10:00:00+02:00")
    await webhook(client, body, "same")
    raw, headers = p.signed_webhook(body, "same")
    assert (await client.post("/webhooks/caterings", content=raw, headers=headers)).status_code == 200
    assert await log_count(services) == 1


# --- the operator's view ----------------------------------------------------------------------------


async def test_consent_log_needs_the_admin_token_and_pages_newest_first(client, services, admin) -> None:  # type: ignore[no-untyped-def]
    assert (await client.get("/consents")).status_code == 401
    assert (await client.get("/consents", headers={"Authorization": "Bearer nope"})).status_code == 401
    await webhook(client, user_updated("1043", True, "2026-07-01T10:00:00+02:00"), "m1")
    for n, value in enumerate([False, True, False]):
        await callback(client, consent("1043", value, f"2026-07-06T12:0{n}:00+00:00"))
    everything = (await client.get("/consents", headers=admin)).json()["items"]
    assert [e["id"] for e in everything] == sorted((e["id"] for e in everything), reverse=True)
    two = (await client.get("/consents", params={"user_id": "1043", "limit": 2}, headers=admin)).json()
    assert [e["marketing"] for e in two["items"]] == [False, True]
    assert (await client.get("/consents", params={"limit": 0}, headers=admin)).status_code == 422
    pending = (await client.get("/consents", params={"status": "pending"}, headers=admin)).json()["items"]
    assert len(pending) == 3
    assert (await client.get("/consents", params={"user_id": "42"}, headers=admin)).json() == {
        "items": [], "user_id": "42", "current": None}


# --- delivery to Caterings: the log follows the delivery ---------------------------------------------

CATERINGS = "http://caterings.invalid/"


async def run_worker_until(services, predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    task = asyncio.create_task(services.worker.run(drain_timeout=1))
    try:
        async with asyncio.timeout(timeout):
            while not await predicate():
                await asyncio.sleep(0.05)
    finally:
        services.worker.stop()
        await task


def statuses_of(services, user_id: str):  # type: ignore[no-untyped-def]
    async def read() -> list[str]:
        async with services.sessions() as s:
            query = select(ConsentLog.status).where(ConsentLog.user_id == user_id, ConsentLog.source == "usercom")
            return list((await s.scalars(query.order_by(ConsentLog.id))).all())
    return read


def mock_upstreams(respx_mock, agreements_status: int | list[int] = 200):  # type: ignore[no-untyped-def]
    respx_mock.post("http://usercom.invalid/api/public/users/update_or_create/").respond(200, json={"id": 1})
    statuses = agreements_status if isinstance(agreements_status, list) else [agreements_status]
    answers = [httpx.Response(code, json={}) for code in statuses]
    route = respx_mock.put(url__regex=r"http://caterings\.invalid/users/\d+/agreements")
    route.side_effect = answers + [answers[-1]] * 50
    return route


async def test_consent_is_put_to_caterings_and_the_log_says_delivered(client, services) -> None:  # type: ignore[no-untyped-def]
    import respx

    with respx.mock(assert_all_called=False) as respx_mock:
        route = mock_upstreams(respx_mock)
        await webhook(client, user_updated("1043", True, "2026-07-01T10:00:00+02:00"), "m1")
        await callback(client, consent("1043", False))
        read = statuses_of(services, "1043")
        await run_worker_until(services, lambda: _equals(read, ["delivered"]))
    request = route.calls.last.request
    assert request.url.path == "/users/1043/agreements"
    assert json.loads(request.content) == {"marketing": False}
    assert request.headers["authorization"] == f"Bearer {p.CATERINGS_TOKEN}"
    assert route.call_count == 1


async def test_a_transient_failure_is_retried_and_an_unknown_user_parks_it_dead(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import respx

    from app.main import create_app
    from tests.api.conftest import api_settings

    app = create_app(api_settings(tmp_path, retry_base_seconds=0.05, retry_cap_seconds=0.1, worker_poll_seconds=0.05))
    async with app.router.lifespan_context(app):
        services = app.state.services
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as client:
            with respx.mock(assert_all_called=False) as respx_mock:
                route = mock_upstreams(respx_mock, [503, 500, 404])
                await webhook(client, user_updated("1043", True, "2026-07-01T10:00:00+02:00"), "m1")
                await callback(client, consent("1043", False))
                await run_worker_until(services, lambda: _equals(statuses_of(services, "1043"), ["dead"]))
            assert route.call_count == 3
            async with services.sessions() as s:
                entry = (await s.scalars(select(ConsentLog).where(ConsentLog.status == "dead"))).one()
                assert "404" in entry.detail
                # Caterings does not have it: the bridge stops claiming it, so asking again goes through
                assert await consents.known(s, "1043") is None
            again = await callback(client, consent("1043", False, "2026-07-06T13:00:00+00:00"))
            assert again.status_code == 202


async def test_a_consent_overtaken_by_a_newer_one_is_not_sent(client, services) -> None:  # type: ignore[no-untyped-def]
    import respx

    with respx.mock(assert_all_called=False) as respx_mock:
        route = mock_upstreams(respx_mock)
        await webhook(client, user_updated("1043", False, "2026-07-01T10:00:00+02:00"), "m1")
        await callback(client, consent("1043", True, "2026-07-06T12:00:00+00:00"))
        await webhook(client, user_updated("1043", False, "2026-07-06T16:00:00+02:00"), "m2")  # withdrawn in Caterings
        await run_worker_until(services, lambda: _equals(statuses_of(services, "1043"), ["superseded"]))
    assert route.call_count == 0


async def test_an_upsert_planned_from_an_older_fact_does_not_carry_the_outdated_consent(client, services) -> None:  # type: ignore[no-untyped-def]
    import respx

    with respx.mock(assert_all_called=False) as respx_mock:
        mock_upstreams(respx_mock)
        upserts = respx_mock.routes[0]
        await webhook(client, user_updated("1043", True, "2026-07-01T10:00:00+02:00"), "m1")
        await callback(client, consent("1043", False))  # withdrawn in User.com before the upsert went out

        async def settled() -> bool:
            async with services.sessions() as s:
                return not await s.scalar(select(func.count()).where(Delivery.state.in_(("pending", "in_flight"))))

        await run_worker_until(services, settled)
    sent = json.loads(upserts.calls.last.request.content)
    assert sent["custom_id"] == "1043" and "agreement_marketing" not in sent


async def _equals(read, expected: list[str]) -> bool:  # type: ignore[no-untyped-def]
    return await read() == expected
