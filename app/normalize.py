"""Lenient value parsers and formatters shared by the schemas and the mapping.

Pure functions: no I/O, no settings. Everything Polish-spreadsheet, phone or time-zone shaped is
handled here, once.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

import phonenumbers

__all__ = [
    "local_midnight_utc_iso",
    "normalize_email",
    "parse_decimal",
    "parse_id",
    "to_e164",
    "truncate",
    "unix_seconds",
    "utc_iso",
]

# Spaces people and spreadsheets put between thousands: space, no-break space, narrow no-break
# space, thin space, and the apostrophe used in Swiss-style exports.
_GROUP_SEPARATORS = re.compile(r"[\s\u00a0\u202f\u2009']")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_THOUSANDS_GROUPED = re.compile(r"[+-]?\d{1,3}(,\d{3})+")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_decimal(value: object) -> Decimal:
    """A decimal amount from a number or a human-written string.

    Accepts ``1249.5``, ``"1249.50"``, ``"1249,50"``, ``"1 499,00"``, ``"1\u00a0499,00"``,
    ``"1.499,00"`` and ``"1,499.00"``. Raises ``ValueError`` for anything else (``"abc"``, booleans,
    NaN, infinity).
    """
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        # str() gives the shortest repr, so 1249.5 becomes Decimal("1249.5"), not its binary tail.
        result = Decimal(str(value))
    elif isinstance(value, str):
        result = _parse_decimal_text(value)
    else:
        raise ValueError(f"expected a number or a decimal string, got {type(value).__name__}")
    if not result.is_finite():
        raise ValueError("expected a finite number")
    return result


def _parse_decimal_text(text: str) -> Decimal:
    cleaned = _GROUP_SEPARATORS.sub("", text)
    if "," in cleaned and "." in cleaned:
        # Both present: whichever comes last is the decimal separator, the other groups thousands.
        if cleaned.rfind(",") > cleaned.rfind("."):
            cleaned = cleaned.replace(".", "").replace(",", ".")
        else:
            cleaned = cleaned.replace(",", "")
    elif cleaned.count(",") == 1:
        cleaned = cleaned.replace(",", ".")
    elif cleaned.count(",") > 1 and _THOUSANDS_GROUPED.fullmatch(cleaned):
        cleaned = cleaned.replace(",", "")
    if not _PLAIN_NUMBER.fullmatch(cleaned):
        raise ValueError(f"not a decimal number: {text!r}")
    try:
        return Decimal(cleaned)
    except InvalidOperation as exc:  # pragma: no cover - the regex already rules this out
        raise ValueError(f"not a decimal number: {text!r}") from exc


def normalize_email(value: str) -> str:
    """Trim and lower-case an e-mail address."""
    return value.strip().lower()


def to_e164(raw: object, default_region: str = "PL") -> str | None:
    """A phone number in E.164 (``+48600100200``), or ``None`` when it is not a usable number.

    Numbers without a country code are read as ``default_region``. Never raises.
    """
    if raw is None or isinstance(raw, bool):
        return None
    text = str(raw).strip()
    if not text:
        return None
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def parse_id(value: object) -> str:
    """An identifier given as an integer or a non-empty string, as a string (``1043`` -> ``"1043"``)."""
    if isinstance(value, bool):
        raise ValueError("an id must be an integer or a non-empty string, not a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise ValueError("an id must be an integer or a non-empty string")


def _require_aware(dt: datetime) -> None:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("expected a timezone-aware datetime")


def utc_iso(dt: datetime) -> str:
    """An aware datetime as ISO 8601 in UTC with ``Z``, whole seconds: ``2025-03-01T08:12:44Z``."""
    _require_aware(dt)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_midnight_utc_iso(day: date, tz: ZoneInfo) -> str:
    """The start of a local calendar day in ``tz``, as a UTC ``Z`` string.

    ``2026-07-06`` in Europe/Warsaw (CEST, +02:00) is ``2026-07-05T22:00:00Z``; ``2026-01-12``
    (CET, +01:00) is ``2026-01-11T23:00:00Z``.
    """
    # fold=0 picks the earlier reading of an ambiguous midnight and, for zones that skip midnight,
    # the instant of the switch; both are the moment the local day begins.
    return utc_iso(datetime.combine(day, time(0), tzinfo=tz))


def unix_seconds(dt: datetime) -> int:
    """Whole UNIX seconds of an aware datetime (sub-seconds dropped)."""
    _require_aware(dt)
    return (dt - _EPOCH) // timedelta(seconds=1)


def truncate(text: str, limit: int) -> str:
    """At most ``limit`` characters.

    The text is NFC-normalised first so that a decomposed letter (``n`` + combining acute) counts
    as one character and is never cut in half.
    """
    if limit < 0:
        raise ValueError("limit must not be negative")
    return unicodedata.normalize("NFC", text)[:limit]
