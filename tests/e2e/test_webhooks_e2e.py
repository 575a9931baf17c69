"""Caterings webhooks into User.com: the real bridge process against the fake User.com."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest

from tests.support import processes as p

pytestmark = pytest.mark.e2e


def post_sample(bridge_url: str, record: dict, **kwargs) -> httpx.Response:  # type: ignore[type-arg]
    raw, headers = p.signed_webhook(record["body"], record["webhook_id"], **kwargs)
    return httpx.post(bridge_url + "/webhooks/caterings", content=raw, headers=headers, timeout=10)


def send_all_samples(bridge_url: str) -> list[httpx.Response]:
    return [post_sample(bridge_url, record) for record in p.sample_webhooks()]


def events_of(state: dict, **match: str) -> list[dict]:  # type: ignore[type-arg]
    return [e for e in state["product_events"] if all(e[k] == v for k, v in match.items())]


def test_sample_webhooks_land_in_usercom(
    bridge_factory, fake_usercom: p.ServerProcess, database_url: str  # type: ignore[no-untyped-def]
) -> None:
    bridge = bridge_factory(DATABASE_URL=database_url)  # on SQLite, and on PostgreSQL when one answers
    answers = send_all_samples(bridge.url)
    statuses = [(r.status_code, r.json()["status"]) for r in answers]
    assert statuses[4] == (200, "duplicate")  # the fifth line redelivers the fourth
    assert statuses[-2] == (202, "ignored")  # loyalty.points_added
    assert all(s == (202, "accepted") for i, s in enumerate(statuses) if i not in (4, len(statuses) - 2))

    p.wait_until(lambda: p.drained(bridge.url), what="outbox drained")
    state = p.fake_state(fake_usercom.url)

    anna = state["users"]["1043"]
    assert anna["email"] == "anna.kowalska@example.com"
    assert anna["phone_number"] == "+48600100200"
    assert anna["agreement_marketing"] is True
    assert anna["total_spent"] == 399.9
    assert anna["active_code"] == "LATO2026"
    assert anna["miejscowosc"] == "Kraków"
    assert anna["account_creation_date"] == "2025-03-01T08:12:44Z"
    assert state["users"]["2210"]["phone_number"] == "+48512345678"
    assert "3007" not in state["users"]
    assert any(d.get("custom_id") == "3007" for d in state["deleted_users"])

    office = state["products"]["12_3_41_50231"]
    assert office["order_delivery_time_beginning"] == "2026-07-05T22:00:00Z"
    assert office["order_delivery_time_end"] == "2026-07-12T22:00:00Z"
    assert office["order_delivery_time_days_total"] == 5
    assert (office["first"], office["trial"], office["price"]) == (True, False, 399.9)
    assert (office["purchase_id"], office["user_id"], office["user_email"]) == (
        "50231", "1043", "anna.kowalska@example.com")

    assert len(events_of(state, product_custom_id="12-3-41", user_custom_id="1043", event_type="order")) == 1
    assert len(events_of(state, product_custom_id="12-3-41", user_custom_id="1043", event_type="purchase")) == 1
    assert len(events_of(state, product_custom_id="12_3_41_50231", event_type="reservation")) == 1

    sport, trial = state["products"]["15_1_77_50880"], state["products"]["9_2_30_50880"]
    assert sport["active"] is False and trial["active"] is False
    assert (trial["trial"], trial["price"], trial["order_delivery_time_end"]) == (True, 59.9, "2026-10-24T22:00:00Z")
    # 404s are the bridge asking after products it then creates; nothing was ever refused as invalid
    assert [r for r in state["rejected"] if r["status"] != 404] == []


def test_same_fact_under_a_new_webhook_id_fires_once(bridge: p.ServerProcess, fake_usercom: p.ServerProcess) -> None:
    paid = next(r for r in p.sample_webhooks() if r["body"]["type"] == "order.paid")
    assert post_sample(bridge.url, paid).status_code == 202
    assert post_sample(bridge.url, {**paid, "webhook_id": "msg_resent_by_hand"}).status_code == 202
    p.wait_until(lambda: p.drained(bridge.url), what="outbox drained")
    kinds = Counter((e["product_custom_id"], e["event_type"]) for e in p.fake_state(fake_usercom.url)["product_events"])
    assert kinds[("12-3-41", "purchase")] == 1
    assert kinds[("12_3_41_50231", "reservation")] == 1


@pytest.mark.parametrize(
    "case",
    ["forged signature", "stale timestamp", "future timestamp", "no signature", "too large", "not json",
     "no items", "no user id"],
)
def test_bad_input_is_refused_and_nothing_is_delivered(
    case: str, bridge_factory, fake_usercom: p.ServerProcess  # type: ignore[no-untyped-def]
) -> None:
    bridge = bridge_factory(MAX_BODY_BYTES="4096")
    record = next(r for r in p.sample_webhooks() if r["body"]["type"] == "order.paid")
    body = record["body"]
    timestamp = None
    secret = p.SAMPLE_SECRET
    if case == "no items":
        body = {**body, "data": {"order": {**body["data"]["order"], "items": []}}}
    if case == "no user id":
        body = {"type": "user.updated", "occurred_at": "2026-07-02T18:20:00+02:00", "data": {"user": {"email": "x@y.pl"}}}
    if case == "stale timestamp":
        timestamp = int(time.time()) - 6 * 60
    if case == "future timestamp":
        timestamp = int(time.time()) + 6 * 60
    if case == "forged signature":
        secret = "whsec_" + "Zm9yZ2VkLXNlY3JldC1mb3ItdGVzdHM="
    raw, headers = p.signed_webhook(body, "msg_bad_" + case.replace(" ", "_"), secret=secret, timestamp=timestamp)
    if case == "too large":
        raw = raw[:-1] + b', "padding": "' + b"x" * 5000 + b'"}'
    if case == "not json":
        raw = b"{not json"
        from app.caterings.signature import signed_headers

        headers = signed_headers(raw, "msg_bad_not_json", int(time.time()), p.SAMPLE_SECRET)
    if case == "no signature":
        headers = {k: v for k, v in headers.items() if k != "webhook-signature"}

    response = httpx.post(bridge.url + "/webhooks/caterings", content=raw, headers=headers, timeout=10)

    expected = {"forged signature": 401, "stale timestamp": 401, "future timestamp": 401, "no signature": 401,
                "too large": 413, "not json": 422, "no items": 422, "no user id": 422}[case]
    assert response.status_code == expected, response.text
    if case == "no items":
        assert "data.order.items" in response.json()["detail"]
    if case == "no user id":
        assert "data.user.id" in response.json()["detail"]
    time.sleep(0.5)
    assert p.outbox_summary(bridge.url) == {}
    assert p.fake_state(fake_usercom.url)["request_count"] == 0


def test_sigkill_during_outage_loses_nothing_and_fires_nothing_twice(
    bridge_factory, fake_usercom: p.ServerProcess, database_url: str  # type: ignore[no-untyped-def]
) -> None:
    port = p.free_port()
    bridge = bridge_factory(port=port, DATABASE_URL=database_url)
    p.fake_config(fake_usercom.url, down=True)
    send_all_samples(bridge.url)
    p.wait_until(lambda: p.fake_state(fake_usercom.url)["request_count"] > 0, what="first attempts during outage")
    assert not p.drained(bridge.url)
    bridge.kill()

    restarted = bridge_factory(port=port, DATABASE_URL=database_url)  # still during the outage
    seen = p.fake_state(fake_usercom.url)["request_count"]
    p.wait_until(lambda: p.fake_state(fake_usercom.url)["request_count"] > seen, what="retries after restart")
    assert not p.drained(restarted.url)
    p.fake_config(fake_usercom.url, down=False)
    p.wait_until(lambda: p.drained(restarted.url), timeout=60, what="outbox drained after restart")
    state = p.fake_state(fake_usercom.url)
    kinds = Counter((e["product_custom_id"], e["event_type"]) for e in state["product_events"])
    assert kinds == {
        ("12-3-41", "order"): 1, ("12-3-41", "purchase"): 1, ("12_3_41_50231", "reservation"): 1,
        ("15-1-77", "purchase"): 1, ("9-2-30", "purchase"): 1,
        ("15_1_77_50880", "reservation"): 1, ("9_2_30_50880", "reservation"): 1,
    }
    assert set(state["users"]) == {"1043", "2210"}
    assert state["products"]["12_3_41_50231"]["order_delivery_time_end"] == "2026-07-12T22:00:00Z"
    assert p.outbox_summary(restarted.url).get("dead", 0) == 0


def test_bridge_settles_under_the_rate_limit(bridge_factory, fake_usercom: p.ServerProcess) -> None:  # type: ignore[no-untyped-def]
    # Low enough that even a starved 2-core machine sends faster than it: the 429s must come.
    limit = 3
    p.fake_config(fake_usercom.url, rate_limit=limit)
    # Configured above what User.com allows: the bridge must find the real limit from the 429s.
    bridge = bridge_factory(USERCOM_RATE_LIMIT="20")
    users = 30
    for n in range(users):
        body = {"type": "user.created", "occurred_at": "2026-07-02T18:20:00+02:00",
                "data": {"user": {"id": 70000 + n, "email": f"klient{n}@example.com"}}}
        raw, headers = p.signed_webhook(body, f"msg_rate_{n}")
        assert httpx.post(bridge.url + "/webhooks/caterings", content=raw, headers=headers).status_code == 202
    p.wait_until(lambda: p.drained(bridge.url), timeout=120, what="outbox drained")
    state = p.fake_state(fake_usercom.url)
    assert len(state["users"]) == users
    assert p.outbox_summary(bridge.url).get("dead", 0) == 0
    assert state["rate_limited_count"] > 0  # the limit was really hit, and honoured


def test_bridge_configured_at_the_limit_stays_under_it(bridge_factory, fake_usercom: p.ServerProcess) -> None:  # type: ignore[no-untyped-def]
    limit = 10
    p.fake_config(fake_usercom.url, rate_limit=limit)
    bridge = bridge_factory(USERCOM_RATE_LIMIT=str(limit))
    for n in range(40):
        body = {"type": "user.created", "occurred_at": "2026-07-02T18:20:00+02:00",
                "data": {"user": {"id": 80000 + n}}}
        raw, headers = p.signed_webhook(body, f"msg_limit_{n}")
        httpx.post(bridge.url + "/webhooks/caterings", content=raw, headers=headers).raise_for_status()
    p.wait_until(lambda: p.drained(bridge.url), timeout=60, what="outbox drained")
    state = p.fake_state(fake_usercom.url)
    assert len(state["users"]) == 40
    assert state["max_rate_1s"] <= limit
    # Requests leave us evenly spaced but may arrive a little bunched on a loaded machine:
    # a stray 429 is honoured (and costs no attempt); a stream of them would mean we overshoot.
    assert state["rate_limited_count"] <= 2
