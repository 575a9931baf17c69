"""Marketing consent from User.com to Caterings: the real bridge process against the fake APIs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support import processes as p

pytestmark = pytest.mark.e2e

ADMIN = {"Authorization": f"Bearer {p.ADMIN_TOKEN}"}


def sample_callbacks() -> list[dict[str, Any]]:
    path = p.PROJECT_ROOT / "samples" / "consent-callbacks.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def post_callback(bridge_url: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("params", {"token": p.CONSENT_TOKEN})
    return httpx.post(bridge_url + "/webhooks/usercom/consent", json=body, timeout=10, **kwargs)


def post_webhook(bridge_url: str, body: dict[str, Any], webhook_id: str) -> None:
    raw, headers = p.signed_webhook(body, webhook_id)
    answer = httpx.post(bridge_url + "/webhooks/caterings", content=raw, headers=headers, timeout=10)
    assert answer.status_code == 202, answer.text


def user_updated(user_id: int, marketing: bool, at: datetime, email: str | None = None) -> dict[str, Any]:
    user: dict[str, Any] = {"id": user_id, "agreements": {"data_processing": True, "marketing": marketing}}
    if email:
        user["email"] = email
    return {"type": "user.updated", "occurred_at": at.isoformat(), "brand_id": 1, "data": {"user": user}}


def consent(user_id: str, marketing: bool, at: datetime) -> dict[str, Any]:
    return {"path": 11, "timestamp": at.isoformat(), "extra": {"marketing_terms": marketing},
            "user": {"id": 4711, "custom_id": user_id}}


def consent_log(bridge_url: str, user_id: str | None = None) -> list[dict[str, Any]]:
    params = {"user_id": user_id} if user_id else {}
    answer = httpx.get(bridge_url + "/consents", params=params, headers=ADMIN, timeout=10)
    answer.raise_for_status()
    return answer.json()["items"]


def agreements(caterings: p.ServerProcess) -> list[tuple[str, bool]]:
    return [(a["user_id"], a["marketing"]) for a in p.fake_state(caterings.url)["agreements"]]


def test_sample_callbacks_after_the_sample_webhooks(
    bridge: p.ServerProcess, fake_caterings: p.ServerProcess
) -> None:
    for record in p.sample_webhooks():
        raw, headers = p.signed_webhook(record["body"], record["webhook_id"])
        httpx.post(bridge.url + "/webhooks/caterings", content=raw, headers=headers, timeout=10)
    answers = [post_callback(bridge.url, body) for body in sample_callbacks()]

    assert [(a.status_code, a.json()["status"]) for a in answers] == [
        (202, "accepted"),  # 1043 withdraws (Caterings last said true)
        # 2210: the sample webhooks already carry marketing=true for him, so both callbacks
        # (by custom id, and by e-mail in capitals) equal what is known and are not forwarded
        (200, "unchanged"), (200, "unchanged"),
        (422, "rejected"),  # marketing_terms "yes"
        (422, "rejected"),  # user 999999 unknown
    ]
    p.wait_until(lambda: p.drained(bridge.url), what="outbox drained")
    assert agreements(fake_caterings) == [("1043", False)]

    log = consent_log(bridge.url)
    usercom = [(e["user_id"], e["status"]) for e in reversed(log) if e["source"] == "usercom"]
    assert usercom == [("1043", "delivered"), ("2210", "unchanged"), ("2210", "unchanged"),
                       ("1043", "rejected"), ("999999", "rejected")]


def test_one_consent_asked_twice_by_id_and_by_email_reaches_caterings_once(
    bridge: p.ServerProcess, fake_caterings: p.ServerProcess
) -> None:
    now = datetime.now(UTC)
    post_webhook(bridge.url, user_updated(2210, False, now - timedelta(minutes=5), "piotr.wisniewski@example.org"),
                 "msg_e2e_2210")
    by_id = post_callback(bridge.url, {"timestamp": now.isoformat(),
                                       "extra": {"marketing_terms": True, "custom_id": "2210"}, "user": {}})
    by_email = post_callback(bridge.url, {"timestamp": now.isoformat(), "extra": {"marketing_terms": True},
                                          "user": {"id": 4802, "email": "PIOTR.WISNIEWSKI@example.org"}})
    assert (by_id.status_code, by_email.status_code, by_email.json()["status"]) == (202, 200, "unchanged")
    p.wait_until(lambda: p.drained(bridge.url), what="outbox drained")
    assert agreements(fake_caterings) == [("2210", True)]


def test_wrong_or_missing_token_is_401_and_nothing_is_recorded(
    bridge: p.ServerProcess, fake_caterings: p.ServerProcess
) -> None:
    post_webhook(bridge.url, user_updated(1043, True, datetime.now(UTC) - timedelta(hours=1)), "msg_e2e_tok")
    body = consent("1043", False, datetime.now(UTC))
    answers = [
        post_callback(bridge.url, body, params={}),
        post_callback(bridge.url, body, params={"token": "not-the-token"}),
        post_callback(bridge.url, body, params={}, headers={"Authorization": "Token not-the-token"}),
    ]
    assert [a.status_code for a in answers] == [401, 401, 401]
    assert [e["source"] for e in consent_log(bridge.url)] == ["caterings"]  # only the webhook's fact
    p.wait_until(lambda: p.drained(bridge.url), what="outbox drained")
    assert agreements(fake_caterings) == []


def test_caterings_down_for_a_while_pending_then_delivered(
    bridge: p.ServerProcess, fake_caterings: p.ServerProcess
) -> None:
    now = datetime.now(UTC)
    post_webhook(bridge.url, user_updated(1043, True, now - timedelta(hours=1)), "msg_e2e_down")
    p.fake_config(fake_caterings.url, down=True)
    accepted = post_callback(bridge.url, consent("1043", False, now),
                             headers={"Authorization": f"Token {p.CONSENT_TOKEN}"}, params={})
    assert accepted.status_code == 202
    p.wait_until(lambda: p.fake_state(fake_caterings.url)["statuses"].get("503", 0) >= 2,
                 what="attempts refused while Caterings is down")
    assert consent_log(bridge.url, "1043")[0]["status"] == "pending"

    p.fake_config(fake_caterings.url, down=False)
    p.wait_until(lambda: consent_log(bridge.url, "1043")[0]["status"] == "delivered", what="consent delivered")
    assert agreements(fake_caterings) == [("1043", False)]


def test_withdrawn_then_caterings_reports_the_same_value_nothing_more_is_sent(
    bridge: p.ServerProcess, fake_caterings: p.ServerProcess, fake_usercom: p.ServerProcess
) -> None:
    now = datetime.now(UTC)
    post_webhook(bridge.url, user_updated(1043, True, now - timedelta(hours=1), "anna.kowalska@example.com"),
                 "msg_e2e_w1")
    assert post_callback(bridge.url, consent("1043", False, now - timedelta(minutes=2))).status_code == 202
    p.wait_until(lambda: agreements(fake_caterings) == [("1043", False)], what="withdrawal in Caterings")

    # Caterings applied it and says so; the bridge upserts the user in User.com, whose automation
    # may fire once more with the same value.
    post_webhook(bridge.url, user_updated(1043, False, now - timedelta(minutes=1), "anna.kowalska@example.com"),
                 "msg_e2e_w2")
    p.wait_until(lambda: p.drained(bridge.url), what="outbox drained")
    echo = post_callback(bridge.url, consent("1043", False, now))
    assert (echo.status_code, echo.json()["status"]) == (200, "unchanged")
    p.wait_until(lambda: p.drained(bridge.url), what="outbox drained")

    assert agreements(fake_caterings) == [("1043", False)]
    assert p.fake_state(fake_usercom.url)["users"]["1043"]["agreement_marketing"] is False
    statuses = [(e["source"], e["status"]) for e in reversed(consent_log(bridge.url, "1043"))]
    assert statuses == [("caterings", "recorded"), ("usercom", "delivered"), ("usercom", "unchanged")]


def test_a_stale_callback_is_not_forwarded(bridge: p.ServerProcess, fake_caterings: p.ServerProcess) -> None:
    now = datetime.now(UTC)
    post_webhook(bridge.url, user_updated(1043, True, now - timedelta(minutes=1)), "msg_e2e_stale")
    late = post_callback(bridge.url, consent("1043", False, now - timedelta(minutes=10)))
    assert (late.status_code, late.json()["status"]) == (200, "stale")
    p.wait_until(lambda: p.drained(bridge.url), what="outbox drained")
    assert agreements(fake_caterings) == []
    assert consent_log(bridge.url, "1043")[0]["status"] == "stale"
