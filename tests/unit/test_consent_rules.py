"""The pure parts of the consent feature: reading a callback body, judging a value against the known one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.consents import CHANGED, STALE, UNCHANGED, Known, judge, not_after_now
from app.usercom.consent import CallbackError, parse_callback

T = datetime(2026, 7, 6, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("known", "marketing", "at", "verdict"),
    [
        (None, True, T, CHANGED),
        (Known(True, T, "caterings"), True, T + timedelta(days=1), UNCHANGED),
        (Known(True, T, "caterings"), True, T - timedelta(days=1), UNCHANGED),  # equal: nothing to do either way
        (Known(True, T, "caterings"), False, T + timedelta(seconds=1), CHANGED),
        (Known(True, T, "usercom"), False, T, CHANGED),  # a tie goes to the later message
        (Known(True, T, "caterings"), False, T - timedelta(seconds=1), STALE),
    ],
)
def test_judge(known: Known | None, marketing: bool, at: datetime, verdict: str) -> None:
    assert judge(known, marketing, at) == verdict


def test_a_time_from_the_future_counts_as_now() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert not_after_now(now + timedelta(days=300), now) == now
    assert not_after_now(now - timedelta(days=1), now) == now - timedelta(days=1)


def test_the_automation_body() -> None:
    parsed = parse_callback({
        "path": 12, "timestamp": "2026-07-06T12:00:01.512000+00:00", "extra": {"marketing_terms": False},
        "user": {"id": 4711, "key": "k", "custom_id": "1043", "email": " Anna.Kowalska@Example.com"},
    })
    assert (parsed.marketing, parsed.custom_id, parsed.email, parsed.usercom_id, parsed.path, parsed.problem) == (
        False, "1043", "anna.kowalska@example.com", 4711, 12, None)
    assert parsed.timestamp == datetime(2026, 7, 6, 12, 0, 1, 512000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "custom_id", "marketing"),
    [
        ({"extra": {"marketing_terms": True, "custom_id": "2210"}, "user": {}}, "2210", True),
        ({"extra": {"marketing_terms": True, "user_id": 2210}}, "2210", True),
        ({"marketing_terms": False, "user": {"custom_id": 1043}}, "1043", False),
        ({"extra": '{"marketing_terms": true, "custom_id": "7"}'}, "7", True),  # Extra data as a JSON string
        ({"extra": {"marketing_terms": True, "custom_id": "7"}, "user": {"custom_id": "7"}}, "7", True),
    ],
)
def test_the_accepted_variants(body: dict, custom_id: str, marketing: bool) -> None:  # type: ignore[type-arg]
    parsed = parse_callback(body)
    assert (parsed.custom_id, parsed.marketing, parsed.problem) == (custom_id, marketing, None)


@pytest.mark.parametrize(
    ("terms", "problem"),
    [({"marketing_terms": "yes"}, "JSON boolean"), ({"marketing_terms": 1}, "JSON boolean"),
     ({"marketing_terms": None}, "JSON boolean"), ({}, "missing")],
)
def test_marketing_terms_must_be_a_boolean(terms: dict, problem: str) -> None:  # type: ignore[type-arg]
    parsed = parse_callback({"extra": terms, "user": {"custom_id": "1043"}})
    assert parsed.marketing is None
    assert problem in (parsed.problem or "")
    assert parsed.custom_id == "1043"  # the rejection can still be logged against the user


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([1, 2], "JSON object"),
        ({"extra": {"marketing_terms": True, "custom_id": "1"}, "user": {"custom_id": "2"}}, "different users"),
        ({"timestamp": "yesterday", "extra": {"marketing_terms": True}}, "timestamp"),
        ({"timestamp": True, "extra": {"marketing_terms": True}}, "timestamp"),
    ],
)
def test_unusable_bodies(body: object, message: str) -> None:
    with pytest.raises(CallbackError, match=message):
        parse_callback(body)


def test_a_naive_timestamp_is_utc_and_unix_seconds_are_read() -> None:
    assert parse_callback({"timestamp": "2026-07-06T12:00:00"}).timestamp == T
    assert parse_callback({"timestamp": int(T.timestamp())}).timestamp == T
    assert parse_callback({}).timestamp is None
