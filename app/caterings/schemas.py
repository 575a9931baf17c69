"""Caterings webhook bodies (contract §2), parsed leniently.

Unknown keys are ignored everywhere. Every model keeps pydantic's ``model_fields_set`` so the
mapping can tell a field absent from the JSON (not sent to User.com) from an explicit ``null``
(sent as null).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from app.normalize import normalize_email, parse_decimal, parse_id, to_e164

__all__ = [
    "KNOWN_EVENT_TYPES",
    "Agreements",
    "CateringsEvent",
    "Envelope",
    "Order",
    "OrderEvent",
    "OrderItem",
    "UnknownEventType",
    "User",
    "UserDeletedEvent",
    "UserEvent",
    "describe_validation_error",
    "parse_envelope",
    "parse_event",
]

USER_EVENT_TYPES = frozenset({"user.created", "user.updated"})
USER_DELETED = "user.deleted"
ORDER_EVENT_TYPES = frozenset({"order.created", "order.paid", "order.updated", "order.cancelled"})
KNOWN_EVENT_TYPES = frozenset(USER_EVENT_TYPES | {USER_DELETED} | ORDER_EVENT_TYPES)

T = TypeVar("T")


def _none_or(parse: Callable[[Any], T]) -> Callable[[Any], T | None]:
    return lambda value: None if value is None else parse(value)


def _assume_utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def _email(value: Any) -> Any:
    if isinstance(value, str):
        return normalize_email(value) or None
    return value


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _status(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip().lower()
        return "cancelled" if value == "canceled" else value
    return value


Id = Annotated[str, BeforeValidator(parse_id)]
Money = Annotated[Decimal | None, BeforeValidator(_none_or(parse_decimal))]
# Naive datetimes are read as UTC rather than rejected: Caterings promises offsets, but a
# missing one should not cost us the whole webhook.
UtcDatetime = Annotated[datetime, AfterValidator(_assume_utc)]
Email = Annotated[str | None, BeforeValidator(_email)]
OptionalText = Annotated[str | None, BeforeValidator(_blank_to_none)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, coerce_numbers_to_str=True)


class Agreements(_Lenient):
    data_processing: bool | None = None
    marketing: bool | None = None


class User(_Lenient):
    id: Id
    email: Email = None
    first_name: str | None = None
    last_name: str | None = None
    # Stored as E.164. An unusable number is dropped before validation, so it counts as absent.
    phone: str | None = None
    created_at: UtcDatetime | None = None
    city: str | None = None
    agreements: Agreements | None = None
    total_spent: Money = None
    client_panel: bool | None = None
    active_code: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _phone_to_e164(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("phone") is None:
            return data
        data = dict(data)
        phone = to_e164(data.pop("phone"))
        if phone is not None:
            data["phone"] = phone
        return data


def _false_if_none(value: Any) -> Any:
    return False if value is None else value


def _empty_if_none(value: Any) -> Any:
    return [] if value is None else value


def _positive_int_or_none(value: Any) -> int | None:
    """Lenient: a count that is not a whole number >= 1 counts as not given."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 1 else None


class OrderItem(_Lenient):
    diet_id: Id
    variant_id: Id
    calorific_id: Id
    item_xml_id: OptionalText = None
    diet_name: str | None = None
    variant_name: str | None = None
    kcal: int | None = None
    daily_meals: int | None = None
    trial: Annotated[bool, BeforeValidator(_false_if_none)] = False
    price: Money = None
    delivery_dates: Annotated[list[date], BeforeValidator(_empty_if_none)] = Field(default_factory=list)
    # The real number of delivery days when only the first and last are listed (orders export, §5.4).
    delivery_days_total: Annotated[int | None, BeforeValidator(_positive_int_or_none)] = None


class Order(_Lenient):
    id: Id
    user: User
    status: Annotated[str | None, BeforeValidator(_status)] = None
    created_at: UtcDatetime | None = None
    paid_at: UtcDatetime | None = None
    first_order: bool | None = None
    discount_code: OptionalText = None
    total_price: Money = None
    items: list[OrderItem] = Field(min_length=1)


class Envelope(_Lenient):
    type: str
    occurred_at: UtcDatetime
    brand_id: int | str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class UserEvent:
    type: str
    occurred_at: datetime
    user: User


@dataclass(frozen=True)
class UserDeletedEvent:
    type: str
    occurred_at: datetime
    user_id: str


@dataclass(frozen=True)
class OrderEvent:
    type: str
    occurred_at: datetime
    order: Order


CateringsEvent = UserEvent | UserDeletedEvent | OrderEvent


class UnknownEventType(ValueError):
    """``parse_event`` was given a type outside ``KNOWN_EVENT_TYPES`` (not a schema error: such
    webhooks are acknowledged and ignored)."""


# Wrappers validated against {"data": envelope.data}, so that error locations carry the full path
# from the body root, e.g. ("data", "order", "items").
class _UserData(_Lenient):
    user: User


class _UserBody(_Lenient):
    data: _UserData


class _DeletedUser(_Lenient):
    id: Id


class _DeletedUserData(_Lenient):
    user: _DeletedUser


class _DeletedUserBody(_Lenient):
    data: _DeletedUserData


class _OrderData(_Lenient):
    order: Order


class _OrderBody(_Lenient):
    data: _OrderData


def parse_envelope(body: object) -> Envelope:
    """The envelope of a webhook body. Raises ``pydantic.ValidationError``."""
    return Envelope.model_validate(body)


def parse_event(envelope: Envelope) -> CateringsEvent:
    """The typed event inside an envelope.

    Raises ``pydantic.ValidationError`` (locations start at the body root, e.g.
    ``("data", "user", "id")``) and ``UnknownEventType`` for a type outside ``KNOWN_EVENT_TYPES``.
    """
    body = {"data": envelope.data}
    kind, occurred_at = envelope.type, envelope.occurred_at
    if kind in USER_EVENT_TYPES:
        return UserEvent(kind, occurred_at, _UserBody.model_validate(body).data.user)
    if kind == USER_DELETED:
        return UserDeletedEvent(kind, occurred_at, _DeletedUserBody.model_validate(body).data.user.id)
    if kind in ORDER_EVENT_TYPES:
        return OrderEvent(kind, occurred_at, _OrderBody.model_validate(body).data.order)
    raise UnknownEventType(kind)


def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """A short message naming the fields, e.g. ``data.order.items: List should have at least 1
    item after validation``. Input values are left out: they may be personal data."""
    errors = exc.errors(include_url=False, include_input=False)
    parts = [f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in errors[:limit]]
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit} more")
    return "; ".join(parts)
