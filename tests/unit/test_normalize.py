from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.normalize import (
    local_midnight_utc_iso,
    normalize_email,
    parse_decimal,
    parse_id,
    to_e164,
    truncate,
    unix_seconds,
    utc_iso,
)

WARSAW = ZoneInfo("Europe/Warsaw")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1249.5, Decimal("1249.5")),
        (1249, Decimal("1249")),
        (Decimal("7.10"), Decimal("7.10")),
        ("1249.50", Decimal("1249.50")),
        ("1249,50", Decimal("1249.50")),
        ("1 499,00", Decimal("1499.00")),
        ("1\u00a0499,00", Decimal("1499.00")),
        ("1\u202f499,00", Decimal("1499.00")),
        ("1.499,00", Decimal("1499.00")),
        ("1,499.00", Decimal("1499.00")),
        ("1,234,567", Decimal("1234567")),
        (" 399,90 ", Decimal("399.90")),
        ("0", Decimal("0")),
        ("-12,5", Decimal("-12.5")),
        (0.1, Decimal("0.1")),
    ],
)
def test_parse_decimal_accepts(raw: object, expected: Decimal) -> None:
    assert parse_decimal(raw) == expected


@pytest.mark.parametrize(
    "raw", ["abc", "", " ", "12,34,5", "1.2.3", "NaN", "Infinity", "1e5", True, None, float("nan"), [1]]
)
def test_parse_decimal_rejects(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_decimal(raw)


@given(st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False))
def test_parse_decimal_round_trips_polish_format(value: Decimal) -> None:
    assert parse_decimal(str(value).replace(".", ",")) == value


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Anna.Kowalska@Example.com ", "anna.kowalska@example.com"),
        ("  x@y.pl", "x@y.pl"),
        ("already@lower.pl", "already@lower.pl"),
    ],
)
def test_normalize_email(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("600 100 200", "+48600100200"),
        ("+48 600-100-200", "+48600100200"),
        ("0048600100200", "+48600100200"),
        ("(+48) 600 100 200", "+48600100200"),
        ("+48 512-345-678", "+48512345678"),
        (600100200, "+48600100200"),
        ("+1 202 555 0143", "+12025550143"),
        ("12345", None),
        ("", None),
        ("   ", None),
        ("abc", None),
        ("+48", None),
        (None, None),
        (True, None),
    ],
)
def test_to_e164(raw: object, expected: str | None) -> None:
    assert to_e164(raw) == expected


def test_to_e164_uses_default_region() -> None:
    assert to_e164("030 1234567", default_region="DE") == "+49301234567"


@given(st.text(max_size=30))
def test_to_e164_never_raises(raw: str) -> None:
    result = to_e164(raw)
    assert result is None or result.startswith("+")


@pytest.mark.parametrize(
    ("raw", "expected"), [(1043, "1043"), ("1043", "1043"), (" 2210 ", "2210"), ("abc", "abc")]
)
def test_parse_id_accepts(raw: object, expected: str) -> None:
    assert parse_id(raw) == expected


@pytest.mark.parametrize("raw", [True, False, None, "", "  ", 1.5, [1]])
def test_parse_id_rejects(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_id(raw)


@pytest.mark.parametrize(
    ("dt", "expected"),
    [
        (datetime(2025, 3, 1, 9, 12, 44, tzinfo=timezone(timedelta(hours=1))), "2025-03-01T08:12:44Z"),
        (
            datetime(2026, 7, 2, 18, 22, 5, 999_999, tzinfo=timezone(timedelta(hours=2))),
            "2026-07-02T16:22:05Z",
        ),
        (datetime(2026, 1, 1, 0, 0, tzinfo=UTC), "2026-01-01T00:00:00Z"),
        (datetime(2026, 1, 1, 0, 30, tzinfo=WARSAW), "2025-12-31T23:30:00Z"),
    ],
)
def test_utc_iso(dt: datetime, expected: str) -> None:
    assert utc_iso(dt) == expected


def test_utc_iso_rejects_naive() -> None:
    with pytest.raises(ValueError):
        utc_iso(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2026, 7, 6), "2026-07-05T22:00:00Z"),
        (date(2026, 1, 12), "2026-01-11T23:00:00Z"),
        # Spring forward happens at 02:00 on 2026-03-29: that midnight is still CET (+1).
        (date(2026, 3, 28), "2026-03-27T23:00:00Z"),
        (date(2026, 3, 29), "2026-03-28T23:00:00Z"),
        (date(2026, 3, 30), "2026-03-29T22:00:00Z"),
        # Fall back happens at 03:00 on 2026-10-25: that midnight is still CEST (+2).
        (date(2026, 10, 24), "2026-10-23T22:00:00Z"),
        (date(2026, 10, 25), "2026-10-24T22:00:00Z"),
        (date(2026, 10, 26), "2026-10-25T23:00:00Z"),
    ],
)
def test_local_midnight_utc_iso_warsaw(day: date, expected: str) -> None:
    assert local_midnight_utc_iso(day, WARSAW) == expected


def test_local_midnight_in_utc_zone() -> None:
    assert local_midnight_utc_iso(date(2026, 3, 29), ZoneInfo("UTC")) == "2026-03-29T00:00:00Z"


@pytest.mark.parametrize(
    ("dt", "expected"),
    [
        (datetime(1970, 1, 1, tzinfo=UTC), 0),
        (datetime(2026, 7, 2, 18, 24, 41, tzinfo=timezone(timedelta(hours=2))), 1783009481),
        (datetime(2026, 7, 2, 16, 24, 41, 900_000, tzinfo=UTC), 1783009481),
    ],
)
def test_unix_seconds(dt: datetime, expected: int) -> None:
    assert unix_seconds(dt) == expected


def test_unix_seconds_rejects_naive() -> None:
    with pytest.raises(ValueError):
        unix_seconds(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("Kowalska", 40, "Kowalska"),
        ("Zielińska-Grzybowska-Wójcik-Szczepańska-Nowak", 40, "Zielińska-Grzybowska-Wójcik-Szczepańska-"),
        ("abc", 0, ""),
        # decomposed "ń" (n + combining acute) counts as one character
        ("Zielin\u0301ska", 6, "Zieli\u0144"),
    ],
)
def test_truncate(text: str, limit: int, expected: str) -> None:
    assert truncate(text, limit) == expected
    assert len(truncate(text, limit)) <= limit
