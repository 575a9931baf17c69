"""Pure parser of the Caterings orders export CSV (contract §5.4). No I/O: bytes in, orders out.

Each order comes out shaped like the ``Order`` of a webhook (contract §2.5), so the import can go
through the same translation as ``order.paid``::

    {"id": 41001, "user": {"id": 1043, "email": "..."}, "status": "paid",
     "created_at": "2026-01-10T10:00:00+01:00", "paid_at": "...", "first_order": true,
     "items": [{"diet_id": 12, "variant_id": 3, "calorific_id": 41, "item_xml_id": "12-3-41",
                "diet_name": "Office", "kcal": 800, "daily_meals": 3, "trial": false,
                "price": "399.90", "delivery_dates": ["2026-01-12", ...]}]}

What is accepted
----------------
* Text: UTF-8 (with or without a byte-order mark), else Windows-1250. CRLF or LF line ends.
* Separator: ``;``, ``,`` or a tab, whichever occurs most in the header line.
* Numbers: decimal commas and spaces as thousand separators (``"1 499,00"``); ``zł``/``PLN``
  after a price is ignored. Prices are emitted as decimal strings with two places (``"1499.00"``),
  like the webhooks carry them.
* Ids: digits only (no leading zero) become ints, anything else stays a string.
* Datetimes: ``YYYY-MM-DD HH:MM[:SS]`` (also with ``T``) or ``DD.MM.YYYY HH:MM[:SS]`` without an
  offset are local Europe/Warsaw time and are emitted as ISO 8601 with the right offset
  (``+01:00`` in winter, ``+02:00`` in summer); one with an offset is kept as given. An empty
  ``paid_at`` is null.
* Booleans: ``1/0``, ``true/false``, ``tak/nie``, ``yes/no``, ``t/n``; an empty cell is false.
* Dates: ``YYYY-MM-DD`` or ``DD.MM.YYYY``.
* Delivery dates: a ``delivery_dates`` column (dates separated by ``|``; emitted sorted, without
  repeats), or ``delivery_first_date``, ``delivery_last_date``, ``delivery_days_total``. With the
  latter the full list is emitted when it is known (one day; two days; or as many days as the
  calendar span, i.e. every day). Otherwise ``delivery_dates`` is ``[first, last]`` and the item
  carries an extra ``delivery_days_total`` key with the real count; the key is present only in
  that case. When both styles of column exist, a non-empty ``delivery_dates`` cell wins.
* Optional columns ``variant_name``, ``discount_code`` and ``total_price`` are carried over when
  present and non-empty.

Errors
------
* A missing required column, an empty file, or no header: ``ExportError`` naming the columns.
* A bad row is listed in ``errors`` with its physical line number (the header is line 1) and a
  reason naming every bad field, and is not imported.
* All-or-nothing per order: when one row of an order is bad, the whole order is skipped and each
  of its other rows is reported as ``order N has a bad row at line X``. Importing half an order
  would fire half its events and leave a wrong picture of what the customer bought; the operator
  fixes the row and imports the file again (the import is idempotent downstream).
* Rows of one order must agree on the order's fields (user, status, times, first_order);
  a row that disagrees with the first row of its order is a bad row, and so is a row repeating an
  item (same diet, variant and calorific id) already in the order.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

LOCAL_TZ = ZoneInfo("Europe/Warsaw")

ORDER_COLUMNS = ("order_id", "user_id", "user_email", "status", "created_at", "paid_at", "first_order")
ITEM_COLUMNS = (
    "diet_id", "variant_id", "calorific_id", "item_xml_id", "diet_name", "kcal", "daily_meals",
    "trial", "price",
)  # fmt: skip
DATES_COLUMN = "delivery_dates"
RANGE_COLUMNS = ("delivery_first_date", "delivery_last_date", "delivery_days_total")
REQUIRED_COLUMNS = ORDER_COLUMNS + ITEM_COLUMNS

STATUSES = {"new": "new", "paid": "paid", "cancelled": "cancelled", "canceled": "cancelled"}
_TRUE = {"1", "true", "tak", "yes", "t", "y"}
_FALSE = {"0", "false", "nie", "no", "n", "f", ""}
_SEPARATORS = (";", ",", "\t")
_DATETIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M",
    "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M",
)  # fmt: skip
_DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y")
_CURRENCY = re.compile(r"\s*(zł|zl|pln)\.?$", re.IGNORECASE)
# Order-level fields that must be equal on every row of one order.
_ORDER_FIELDS = ("user_id", "user_email", "status", "created_at", "paid_at", "first_order")


class ExportError(ValueError):
    """The file cannot be imported at all (e.g. a required column is missing)."""


@dataclass(frozen=True)
class RowError:
    line: int
    reason: str


@dataclass
class ExportResult:
    orders: list[dict[str, Any]] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


@dataclass
class _Row:
    """One parsed CSV row: its line, the order-level fields and the item."""

    line: int
    order_id: str
    order: dict[str, Any] = field(default_factory=dict)
    item: dict[str, Any] = field(default_factory=dict)
    bad: bool = False


class _BadRow(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# --------------------------------------------------------------------------------------------
# Entry point


def parse_export(data: bytes) -> ExportResult:
    """Parse an orders export (see the module docstring for what is accepted and how errors work)."""
    text = decode(data)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sniff_separator(text))
    header = _read_header(reader)
    rows, errors = _read_rows(reader, header)
    return _group_orders(rows, errors)


def decode(data: bytes) -> str:
    """UTF-8 (a byte-order mark is dropped), else Windows-1250."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("cp1250", errors="replace")
    return text.removeprefix("\ufeff")


def sniff_separator(text: str) -> str:
    """The separator that occurs most in the header line (``;`` on a tie)."""
    header = text.split("\n", 1)[0]
    return max(_SEPARATORS, key=header.count)


def _read_header(reader: Any) -> list[str]:
    for row in reader:
        if any(cell.strip() for cell in row):
            header = [cell.strip().lower().removeprefix("\ufeff") for cell in row]
            _check_columns(header)
            return header
    raise ExportError("the file is empty: no header line")


def _check_columns(header: list[str]) -> None:
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    has_range = all(name in header for name in RANGE_COLUMNS)
    if DATES_COLUMN not in header and not has_range:
        missing.append(f"{DATES_COLUMN} (or {', '.join(RANGE_COLUMNS)})")
    if missing:
        raise ExportError(f"missing required column(s): {', '.join(missing)}")


def _read_rows(reader: Any, header: list[str]) -> tuple[list[_Row], list[RowError]]:
    rows: list[_Row] = []
    errors: list[RowError] = []
    last_line = reader.line_num
    for cells in reader:
        line, last_line = last_line + 1, reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            errors.append(RowError(line, f"expected {len(header)} fields, found {len(cells)}"))
            continue
        record = {name: cell.strip() for name, cell in zip(header, cells)}
        try:
            rows.append(_parse_row(record, line))
        except _BadRow as exc:
            errors.append(RowError(line, str(exc)))
            rows.append(_Row(line, record.get("order_id", ""), bad=True))
    return rows, errors


# --------------------------------------------------------------------------------------------
# One row


def _parse_row(record: dict[str, str], line: int) -> _Row:
    """Parse one row (a dict of column -> stripped cell); raise ``_BadRow`` naming every problem."""
    problems: list[str] = []

    def field_(column: str, parse: Any) -> Any:
        try:
            return parse(record.get(column, ""), column)
        except ValueError as exc:
            problems.append(str(exc))
            return None

    order_id = field_("order_id", _id)
    order = {
        "user_id": field_("user_id", _id),
        "user_email": record.get("user_email", ""),
        "status": field_("status", _status),
        "created_at": field_("created_at", _datetime),
        "paid_at": field_("paid_at", _optional_datetime),
        "first_order": field_("first_order", _bool),
    }
    item: dict[str, Any] = {
        "diet_id": field_("diet_id", _id),
        "variant_id": field_("variant_id", _id),
        "calorific_id": field_("calorific_id", _id),
        "item_xml_id": field_("item_xml_id", _required_text),
        "diet_name": field_("diet_name", _required_text),
        "kcal": field_("kcal", _whole),
        "daily_meals": field_("daily_meals", _whole),
        "trial": field_("trial", _bool),
        "price": field_("price", _price),
    }
    try:
        item.update(_delivery(record))
    except ValueError as exc:
        problems.append(str(exc))
    if record.get("variant_name"):
        item["variant_name"] = record["variant_name"]
    if record.get("discount_code"):
        order["discount_code"] = record["discount_code"]
    if record.get("total_price"):
        order["total_price"] = field_("total_price", _price)
    if problems:
        raise _BadRow(problems)
    order["order_id"] = order_id
    return _Row(line, record["order_id"], order, item)


def _required_text(value: str, column: str) -> str:
    if not value:
        raise ValueError(f"{column} is empty")
    return value


def _id(value: str, column: str) -> int | str:
    """Digits without a leading zero become an int; any other non-empty text stays a string."""
    value = _required_text(value, column)
    if value.isdigit() and (value == "0" or not value.startswith("0")):
        return int(value)
    return value


def _status(value: str, column: str) -> str:
    status = STATUSES.get(value.lower())
    if status is None:
        raise ValueError(f"{column} {value!r} is not one of new, paid, cancelled")
    return status


def _bool(value: str, column: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{column} {value!r} is not a boolean (1/0, true/false, tak/nie)")


def _decimal(value: str, column: str) -> Decimal:
    if not value:
        raise ValueError(f"{column} is empty")
    text = _CURRENCY.sub("", value.replace("\xa0", " ").replace("\u202f", " ")).replace(" ", "")
    if "," in text and "." in text:
        decimal_mark = "," if text.rfind(",") > text.rfind(".") else "."
        text = text.replace("." if decimal_mark == "," else ",", "")
    text = text.replace(",", ".")
    try:
        number = Decimal(text)
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite():
        raise ValueError(f"{column} {value!r} is not a number")
    return number


def _price(value: str, column: str) -> str:
    number = _decimal(value, column)
    if number < 0:
        raise ValueError(f"{column} {value!r} is negative")
    return str(number.quantize(Decimal("0.01")))


def _whole(value: str, column: str) -> int:
    number = _decimal(value, column)
    if number != number.to_integral_value() or number < 0:
        raise ValueError(f"{column} {value!r} is not a whole number")
    return int(number)


def _datetime(value: str, column: str) -> str:
    if not value:
        raise ValueError(f"{column} is empty")
    return parse_local_datetime(value, column).isoformat()


def _optional_datetime(value: str, column: str) -> str | None:
    return _datetime(value, column) if value else None


def parse_local_datetime(value: str, column: str = "datetime") -> datetime:
    """A spreadsheet datetime; without an offset it is local Europe/Warsaw time."""
    for fmt in _DATETIME_FORMATS:
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=LOCAL_TZ)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{column} {value!r} is not a datetime (YYYY-MM-DD HH:MM:SS)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=LOCAL_TZ)


def _date(value: str, column: str) -> date:
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"{column} {value!r} is not a date (YYYY-MM-DD)")


def _delivery(record: dict[str, str]) -> dict[str, Any]:
    """``delivery_dates`` from the list column, else from first/last/total (module docstring)."""
    listed = record.get(DATES_COLUMN, "")
    if listed or not all(name in record for name in RANGE_COLUMNS):
        parts = [part.strip() for part in listed.split("|") if part.strip()]
        if not parts:
            raise ValueError(f"{DATES_COLUMN} is empty")
        days = sorted({_date(part, DATES_COLUMN) for part in parts})
        return {"delivery_dates": [day.isoformat() for day in days]}
    return _delivery_from_range(record)


def _delivery_from_range(record: dict[str, str]) -> dict[str, Any]:
    first_name, last_name, total_name = RANGE_COLUMNS
    first = _date(_required_text(record[first_name], first_name), first_name)
    last = _date(_required_text(record[last_name], last_name), last_name)
    total = _whole(record[total_name], total_name)
    span = (last - first).days + 1
    if span < 1:
        raise ValueError(f"{last_name} {last} is before {first_name} {first}")
    if total < 1 or total > span or (span > 1 and total < 2):
        raise ValueError(f"{total_name} {total} does not fit {first}..{last}")
    if total == span:
        days = [first + timedelta(days=offset) for offset in range(span)]
        return {"delivery_dates": [day.isoformat() for day in days]}
    if total == 2:
        return {"delivery_dates": [first.isoformat(), last.isoformat()]}
    return {"delivery_dates": [first.isoformat(), last.isoformat()], "delivery_days_total": total}


# --------------------------------------------------------------------------------------------
# Rows -> orders


def _group_orders(rows: list[_Row], errors: list[RowError]) -> ExportResult:
    by_order: dict[str, list[_Row]] = {}
    for row in rows:
        if row.order_id:
            by_order.setdefault(row.order_id, []).append(row)
    result = ExportResult(errors=list(errors))
    for order_id, order_rows in by_order.items():
        problems = _order_problems(order_rows)
        result.errors.extend(problems)
        bad_lines = sorted({row.line for row in order_rows if row.bad} | {error.line for error in problems})
        if bad_lines:
            result.errors.extend(_collateral_errors(order_id, order_rows, bad_lines))
            continue
        result.orders.append(_build_order(order_rows))
    result.errors.sort(key=lambda error: error.line)
    return result


def _order_problems(order_rows: list[_Row]) -> list[RowError]:
    """Rows that disagree with the order's first good row, or repeat one of its items."""
    good = [row for row in order_rows if not row.bad]
    if not good:
        return []
    first = good[0]
    seen: dict[tuple[Any, Any, Any], int] = {}
    problems: list[RowError] = []
    for row in good:
        differing = [name for name in _ORDER_FIELDS if row.order[name] != first.order[name]]
        key = (row.item["diet_id"], row.item["variant_id"], row.item["calorific_id"])
        if differing:
            reason = f"{', '.join(differing)} differ(s) from line {first.line} of order {row.order_id}"
            problems.append(RowError(row.line, reason))
        elif key in seen:
            problems.append(RowError(row.line, f"repeats the item at line {seen[key]}"))
        seen.setdefault(key, row.line)
    return problems


def _collateral_errors(order_id: str, order_rows: list[_Row], bad_lines: list[int]) -> list[RowError]:
    where = ", ".join(str(line) for line in bad_lines)
    reason = f"order {order_id} has a bad row at line {where}; the whole order is skipped"
    return [RowError(row.line, reason) for row in order_rows if row.line not in bad_lines]


def _build_order(order_rows: list[_Row]) -> dict[str, Any]:
    head = order_rows[0].order
    user: dict[str, Any] = {"id": head["user_id"]}
    if head["user_email"]:
        user["email"] = head["user_email"]
    order: dict[str, Any] = {
        "id": head["order_id"],
        "user": user,
        "status": head["status"],
        "created_at": head["created_at"],
        "paid_at": head["paid_at"],
        "first_order": head["first_order"],
    }
    for optional in ("discount_code", "total_price"):
        if optional in head:
            order[optional] = head[optional]
    order["items"] = [row.item for row in order_rows]
    return order
