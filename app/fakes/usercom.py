"""A fake User.com REST API (v2) for tests, benchmarks and the demo.

It behaves like the real API as described in ``shared/docs/usercom-api.md`` for what the bridge
uses: users, products and product events under ``/api/public/``, and it is strict where the real
API is strict or where being strict catches bridge bugs early.

Use it in-process::

    app = create_app(api_key="k", rate_limit=20)
    fake = fake_of(app)                   # the FakeUserCom holding all state
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://usercom")
    fake.configure(status_sequence=[500, 503])   # or fake.faults.down = True, ...
    print(dump(fake.snapshot()))

or as a server: ``python -m app.fakes.usercom --port 8101 --api-key K --rate-limit 20``, or
``with running_server(app) as base_url: ...`` (uvicorn in a thread, free loopback port).

Choices made where the real API is undocumented:

- Request gate, in order: path without trailing ``/`` -> 404 (whatever the auth; the real API
  redirects and loses the auth header, a loud 404 is clearer); bad/missing ``Authorization: Token``
  -> 401 ``{"detail": "Invalid token."}``; no ``version=2`` in ``Accept`` -> 400; rate limit -> 429.
- Rate limit (requests per second, ``None`` = off): sliding window counting the authenticated
  requests it admitted (as DRF throttling does: a 429 answer does not use up the budget).
  429 answers carry ``Retry-After`` in whole seconds (1 for any limit >= 1/s).
- Validation errors -> 400 ``{"errors": {"field": ["message"]}}``; unknown resource -> 404
  ``{"detail": "Not found."}``; an unknown user in a product event -> 404 ``{"detail": "User not
  found."}`` (users are never auto-created: the bridge must create the user first); an unknown
  product in a product event -> 404 (never auto-created: the bridge creates it and retries).
- ``POST users/update_or_create/`` answers 200; ``POST products/`` and product events answer 201.
  Deletes answer 204.
- ids: users from 10001, products from 50001, product events from 90001, so that a user id used
  as a product id (or the reverse) hits 404 instead of the wrong record.
- ``null`` is accepted for any attribute except ``custom_id``/``name`` and clears it (the stored
  value becomes ``None``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.fakes.faults import SCOPE_KEY, FaultConfig, FaultConfigError, FaultMiddleware

API_PREFIX = "/api/public"
CONTROL_PREFIX = "/_fake"
DEFAULT_API_KEY = "test-usercom-key"

# --- attribute schemas ---------------------------------------------------------------------------

USER_STANDARD_FIELDS: dict[str, str] = {
    "custom_id": "string",
    "email": "email",
    "first_name": "name40",
    "last_name": "name40",
    "phone_number": "phone",
    "unsubscribed": "boolean",
    "notifications": "boolean",
    "city": "string",
    "country": "string",
    "region": "string",
    "timezone": "string",
    "gender": "integer",
    "status": "integer",
    "score": "integer",
    "assigned_to": "integer",
    "company_id": "integer",
    "facebook_url": "string",
    "google_url": "string",
    "linkedin_url": "string",
    "twitter_url": "string",
    "gravatar_url": "string",
    "company_custom_id": "string",
    "tags": "string_list",
}
USER_CUSTOM_ATTRIBUTES: dict[str, str] = {
    "account_creation_date": "datetime",
    "agreement_data_processing": "boolean",
    "agreement_marketing": "boolean",
    "total_spent": "float",
    "client_panel": "boolean",
    "active_code": "string",
    "miejscowosc": "string",
}
USER_FIELDS = {**USER_STANDARD_FIELDS, **USER_CUSTOM_ATTRIBUTES}

PRODUCT_STANDARD_FIELDS: dict[str, str] = {
    "custom_id": "string256",
    "name": "string256",
    "price": "float",
    "product_url": "string256",
    "image_url": "string256",
    "category_name": "string256",
    "sku": "string256",
    "brand": "string256",
    "quantity": "integer",
}
PRODUCT_CUSTOM_ATTRIBUTES: dict[str, str] = {
    "daily_meals": "integer",
    "kcal": "integer",
    "active": "boolean",
    "trial": "boolean",
    "first": "boolean",
    "order_time": "datetime",
    "order_delivery_time_beginning": "datetime",
    "order_delivery_time_end": "datetime",
    "order_delivery_time_days_total": "integer",
    "purchase_id": "string256",
    "user_id": "string256",
    "user_email": "string256",
}
PRODUCT_FIELDS = {**PRODUCT_STANDARD_FIELDS, **PRODUCT_CUSTOM_ATTRIBUTES}
NOT_NULL = {"custom_id", "name"}

PRODUCT_EVENT_TYPES = (
    "view",
    "detail",
    "click",
    "promo click",
    "liking",
    "add to observation",
    "add",
    "add to cart",
    "remove",
    "checkout",
    "checkout option",
    "reservation",
    "order",
    "purchase",
    "return",
    "refund",
)
LATEST_PLAUSIBLE_TIMESTAMP = 4_102_444_800  # 2100-01-01: anything bigger is likely milliseconds

PHONE_RE = re.compile(r"^\+[1-9]\d{6,14}$")
DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_float(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _max_len(limit: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return "Not a valid string."
        if len(value) > limit:
            return f"Ensure this field has no more than {limit} characters."
        return None

    return check


def _check_string(value: Any) -> str | None:
    return None if isinstance(value, str) else "Not a valid string."


def _check_email(value: Any) -> str | None:
    if not isinstance(value, str) or "@" not in value:
        return "Enter a valid email address."
    return None


def _check_phone(value: Any) -> str | None:
    if not isinstance(value, str) or not PHONE_RE.match(value):
        return "Enter a valid phone number in E.164 format (e.g. +48500100200)."
    return None


def _check_boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "Must be a valid boolean (true or false)."


def _check_integer(value: Any) -> str | None:
    return None if _is_int(value) else "A valid integer is required."


def _check_float(value: Any) -> str | None:
    return None if _is_float(value) else "A valid number is required."


def _check_datetime(value: Any) -> str | None:
    problem = "Datetime has wrong format. Use ISO 8601 with a timezone, e.g. 2024-01-15T10:30:00Z."
    if not isinstance(value, str) or not DATETIME_RE.match(value):
        return problem
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return problem
    return None


def _check_string_list(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return "Expected a list of strings."
    return None


CHECKS: dict[str, Callable[[Any], str | None]] = {
    "string": _check_string,
    "string256": _max_len(256),
    "name40": _max_len(40),
    "email": _check_email,
    "phone": _check_phone,
    "boolean": _check_boolean,
    "integer": _check_integer,
    "float": _check_float,
    "datetime": _check_datetime,
    "string_list": _check_string_list,
}


def validate_fields(body: dict[str, Any], schema: dict[str, str], kind: str) -> dict[str, list[str]]:
    """Errors by field name for the keys of ``body`` (empty if all are fine)."""
    errors: dict[str, list[str]] = {}
    for key, value in body.items():
        if key not in schema:
            errors[key] = [f"Unknown {kind} attribute '{key}': it does not exist in this app."]
        elif value is None:
            if key in NOT_NULL:
                errors[key] = ["This field may not be null."]
        else:
            problem = CHECKS[schema[key]](value)
            if problem:
                errors[key] = [problem]
    return errors


# --- errors ------------------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = headers or {}


def not_found(detail: str = "Not found.") -> ApiError:
    return ApiError(404, {"detail": detail})


def bad_request(errors: dict[str, list[str]]) -> ApiError:
    return ApiError(400, {"errors": errors})


def _require_object(value: Any, what: str = "body") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request({"non_field_errors": [f"Invalid data: {what} must be a JSON object."]})
    return value


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiError(400, {"detail": f"JSON parse error - {exc}"}) from exc
    return _require_object(body)


# --- state -------------------------------------------------------------------------------------------


@dataclass
class RequestRecord:
    method: str
    path: str
    arrived: float  # time.monotonic()
    status: int | None = None  # None: connection dropped
    reason: str = ""


def max_rate_in_window(arrivals: list[float], seconds: float = 1.0) -> float:
    """Most requests seen in any window [t, t + seconds), divided by ``seconds`` (requests/second)."""
    times = sorted(arrivals)
    best = 0
    start = 0
    for end, moment in enumerate(times):
        while moment - times[start] >= seconds:
            start += 1
        best = max(best, end - start + 1)
    return best / seconds


class RateLimiter:
    """Sliding window: at most ``capacity`` admitted requests in any ``window`` seconds."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.admitted: deque[float] = deque()

    @property
    def capacity(self) -> int:
        return max(1, math.floor(self.rate or 0))

    @property
    def window(self) -> float:
        return self.capacity / self.rate if self.rate else 1.0

    def admit(self, now: float) -> int | None:
        """None if admitted, else the Retry-After seconds."""
        if not self.rate:
            return None
        while self.admitted and self.admitted[0] <= now - self.window:
            self.admitted.popleft()
        if len(self.admitted) >= self.capacity:
            wait = self.admitted[0] + self.window - now
            return max(1, math.ceil(wait))
        self.admitted.append(now)
        return None


@dataclass
class FakeUserCom:
    """All the state of one fake app, and the Python API tests use to inspect and steer it."""

    api_key: str = DEFAULT_API_KEY
    initial_rate_limit: float | None = None
    faults: FaultConfig = field(default_factory=FaultConfig)
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    products: dict[int, dict[str, Any]] = field(default_factory=dict)
    product_events: list[dict[str, Any]] = field(default_factory=list)
    deleted_users: list[dict[str, Any]] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.initial_rate_limit)
        self._new_ids()

    def _new_ids(self) -> None:
        self._user_ids = itertools.count(10001)
        self._product_ids = itertools.count(50001)
        self._event_ids = itertools.count(90001)

    # --- steering --------------------------------------------------------------------------------

    @property
    def rate_limit(self) -> float | None:
        return self.limiter.rate

    @rate_limit.setter
    def rate_limit(self, rate: float | None) -> None:
        self.limiter = RateLimiter(rate)

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Set any of: rate_limit, down, error_rate, status_sequence, delay_seconds,
        drop_connections, storm_seconds (start a 429 storm), retry_after, seed. Returns the config."""
        if "rate_limit" in settings:
            rate = settings.pop("rate_limit")
            if rate is not None and (not _is_float(rate) or rate <= 0):
                raise FaultConfigError("rate_limit must be a number > 0, or null for no limit")
            self.faults.update(settings)
            self.rate_limit = rate
        else:
            self.faults.update(settings)
        return self.config()

    def config(self) -> dict[str, Any]:
        return {"rate_limit": self.rate_limit, **self.faults.as_dict()}

    def reset(self) -> None:
        """Forget all data, requests and faults; the rate limit goes back to the app's initial one."""
        self.users.clear()
        self.products.clear()
        self.product_events.clear()
        self.deleted_users.clear()
        self.requests.clear()
        self.faults.reset()
        self.rate_limit = self.initial_rate_limit
        self._new_ids()

    # --- looking ---------------------------------------------------------------------------------

    def user(self, custom_id: str) -> dict[str, Any] | None:
        return next((u for u in self.users.values() if u.get("custom_id") == custom_id), None)

    def product(self, custom_id: str) -> dict[str, Any] | None:
        return next((p for p in self.products.values() if p.get("custom_id") == custom_id), None)

    def max_rate_in_window(self, seconds: float = 1.0) -> float:
        return max_rate_in_window([r.arrived for r in self.requests], seconds)

    def rejected(self) -> list[dict[str, Any]]:
        return [_record_dict(r) for r in self.requests if r.status is None or r.status >= 400]

    def snapshot(self, include_requests: bool = False) -> dict[str, Any]:
        """Everything, JSON-ready (this is what ``GET /_fake/state`` answers)."""
        state = {
            "users": {u["custom_id"]: dict(u) for u in sorted(self.users.values(), key=_by_custom_id)},
            "products": {p["custom_id"]: dict(p) for p in sorted(self.products.values(), key=_by_custom_id)},
            "product_events": [dict(e) for e in self.product_events],
            "deleted_users": [dict(d) for d in self.deleted_users],
            "request_count": len(self.requests),
            "rate_limited_count": sum(1 for r in self.requests if r.status == 429),
            "max_rate_1s": self.max_rate_in_window(1.0),
            "rejected": self.rejected(),
            "config": self.config(),
        }
        if include_requests:
            state["requests"] = [_record_dict(r) for r in self.requests]
        return state

    # --- the request gate ------------------------------------------------------------------------

    def check_request(self, request: Request) -> None:
        auth = request.headers.get("authorization", "")
        if auth != f"Token {self.api_key}":
            raise ApiError(401, {"detail": "Invalid token."})
        if not _has_version_2(request.headers.get("accept", "")):
            raise ApiError(
                400,
                {"detail": 'API version missing: send the header "Accept: */*; version=2" on every call.'},
            )
        retry_after = self.limiter.admit(time.monotonic())
        if retry_after is not None:
            raise ApiError(
                429,
                {"detail": "Too many requests. You have reached a rate limit."},
                {"Retry-After": str(retry_after)},
            )

    # --- users -----------------------------------------------------------------------------------

    def find_user(self, custom_id: str) -> dict[str, Any]:
        found = self.user(custom_id)
        if found is None:
            raise not_found()
        return found

    def get_user(self, user_id: str) -> dict[str, Any]:
        found = self.users.get(_as_id(user_id))
        if found is None:
            raise not_found()
        return found

    def update_or_create_user(self, body: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        errors = validate_fields(body, USER_FIELDS, "user")
        if "custom_id" not in body and "custom_id" not in errors:
            errors["custom_id"] = ["This field is required."]
        if errors:
            raise bad_request(errors)
        existing = self.user(body["custom_id"])
        if existing is not None:
            existing.update(body)
            return False, existing
        user = {"id": next(self._user_ids), **body}
        self.users[user["id"]] = user
        return True, user

    def update_user(self, user: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        errors = validate_fields(body, USER_FIELDS, "user")
        new_custom_id = body.get("custom_id", user["custom_id"])
        if not errors and new_custom_id != user["custom_id"] and self.user(new_custom_id) is not None:
            errors["custom_id"] = ["user with this custom_id already exists."]
        if errors:
            raise bad_request(errors)
        user.update(body)
        return user

    def delete_user(self, user: dict[str, Any]) -> None:
        del self.users[user["id"]]
        self.deleted_users.append({"id": user["id"], "custom_id": user["custom_id"]})

    # --- products --------------------------------------------------------------------------------

    def find_product(self, custom_id: str) -> dict[str, Any]:
        found = self.product(custom_id)
        if found is None:
            raise not_found()
        return found

    def get_product(self, product_id: str) -> dict[str, Any]:
        found = self.products.get(_as_id(product_id))
        if found is None:
            raise not_found()
        return found

    def create_product(self, body: dict[str, Any]) -> dict[str, Any]:
        errors = validate_fields(body, PRODUCT_FIELDS, "product")
        for required in ("custom_id", "name"):
            if required not in body and required not in errors:
                errors[required] = ["This field is required."]
        if not errors and self.product(body["custom_id"]) is not None:
            errors["custom_id"] = ["product with this custom_id already exists."]
        if errors:
            raise bad_request(errors)
        product = {"id": next(self._product_ids), **body}
        self.products[product["id"]] = product
        return product

    def update_product(self, product: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        errors = validate_fields(body, PRODUCT_FIELDS, "product")
        new_custom_id = body.get("custom_id", product["custom_id"])
        if not errors and new_custom_id != product["custom_id"] and self.product(new_custom_id):
            errors["custom_id"] = ["product with this custom_id already exists."]
        if errors:
            raise bad_request(errors)
        product.update(body)
        return product

    def delete_product(self, product: dict[str, Any]) -> None:
        del self.products[product["id"]]

    # --- product events --------------------------------------------------------------------------

    def add_product_event(self, product: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        data = self._check_product_event(body)
        user = self._event_user(body)
        attributes = {key: value for key, value in data.items() if key != "custom_data"}
        product.update(attributes)
        event = {
            "id": next(self._event_ids),
            "product_custom_id": product["custom_id"],
            "product_id": product["id"],
            "user_custom_id": user["custom_id"],
            "user_id": user["id"],
            "event_type": body["event_type"],
            "timestamp": body["timestamp"],
            "data": data,
        }
        self.product_events.append(event)
        return event

    def _check_product_event(self, body: dict[str, Any]) -> dict[str, Any]:
        allowed = {"user_custom_id", "user_id", "event_type", "timestamp", "data"}
        errors: dict[str, list[str]] = {key: ["Unknown field."] for key in body if key not in allowed}
        errors.update(_user_reference_errors(body))
        if body.get("event_type") not in PRODUCT_EVENT_TYPES:
            choices = ", ".join(PRODUCT_EVENT_TYPES)
            given = body.get("event_type")
            errors["event_type"] = [f"{given!r} is not a valid choice. Choose one of: {choices}."]
        timestamp_problem = _timestamp_problem(body.get("timestamp"))
        if timestamp_problem:
            errors["timestamp"] = [timestamp_problem]
        data = body.get("data")
        if not isinstance(data, dict):
            errors["data"] = ["This field is required and must be a JSON object."]
        else:
            errors.update(_data_errors(data))
        if errors:
            raise bad_request(errors)
        return data

    def _event_user(self, body: dict[str, Any]) -> dict[str, Any]:
        if "user_custom_id" in body:
            user = self.user(body["user_custom_id"])
        else:
            user = self.users.get(body["user_id"])
        if user is None:
            raise not_found("User not found.")
        return user


def _user_reference_errors(body: dict[str, Any]) -> dict[str, list[str]]:
    if ("user_custom_id" in body) == ("user_id" in body):
        return {"user_custom_id": ["Send exactly one of user_custom_id or user_id."]}
    if "user_custom_id" in body and not isinstance(body["user_custom_id"], str):
        return {"user_custom_id": ["Not a valid string."]}
    if "user_id" in body and not _is_int(body["user_id"]):
        return {"user_id": ["A valid integer (the User.com user id) is required."]}
    return {}


def _timestamp_problem(value: Any) -> str | None:
    if not _is_int(value):
        return "A valid integer (UNIX seconds) is required."
    if not 0 <= value <= LATEST_PLAUSIBLE_TIMESTAMP:
        return "Timestamp must be UNIX seconds (this looks like milliseconds or is out of range)."
    return None


def _data_errors(data: dict[str, Any]) -> dict[str, list[str]]:
    attributes = {key: value for key, value in data.items() if key != "custom_data"}
    problems = validate_fields(attributes, PRODUCT_FIELDS, "product")
    errors = {f"data.{key}": messages for key, messages in problems.items()}
    if "custom_data" in data and not isinstance(data["custom_data"], dict):
        errors["data.custom_data"] = ["custom_data must be a JSON object."]
    return errors


def _has_version_2(accept: str) -> bool:
    for media_range in accept.split(","):
        params = [part.strip().replace(" ", "") for part in media_range.split(";")[1:]]
        if "version=2" in params:
            return True
    return False


def _as_id(raw: str) -> int:
    if not raw.isdigit():
        raise not_found()
    return int(raw)


def _by_custom_id(record: dict[str, Any]) -> str:
    return str(record.get("custom_id"))


def _record_dict(record: RequestRecord) -> dict[str, Any]:
    return {"method": record.method, "path": record.path, "status": record.status, "reason": record.reason}


# --- representations -------------------------------------------------------------------------------


def _attribute_list(record: dict[str, Any], custom: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {"name": key, "name_std": key, "value": record[key]} for key in sorted(custom) if key in record
    ]


def user_repr(user: dict[str, Any]) -> dict[str, Any]:
    """A user as the real API returns it: standard fields flat, custom attributes as a list."""
    standard = {key: value for key, value in user.items() if key not in USER_CUSTOM_ATTRIBUTES}
    base = {"email": None, "first_name": None, "last_name": None, "phone_number": None, "unsubscribed": False}
    return {
        **base,
        **standard,
        "key": f"fake{user['id']}",
        "attributes": _attribute_list(user, USER_CUSTOM_ATTRIBUTES),
    }


def product_repr(product: dict[str, Any]) -> dict[str, Any]:
    standard = {key: value for key, value in product.items() if key not in PRODUCT_CUSTOM_ATTRIBUTES}
    return {**standard, "attributes": _attribute_list(product, PRODUCT_CUSTOM_ATTRIBUTES)}


# --- request log middleware ------------------------------------------------------------------------


class RequestLog:
    """Records every API request (arrival time, status, reason) before anything else runs."""

    def __init__(self, app: Callable, fake: FakeUserCom) -> None:
        self.app = app
        self.fake = fake

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        record = RequestRecord(scope["method"], scope["path"], time.monotonic())
        self.fake.requests.append(record)
        body = bytearray()

        async def logging_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            elif message["type"] == "http.response.body" and (record.status or 0) >= 400:
                body.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, logging_send)
        finally:
            if scope.get(SCOPE_KEY) == "drop":
                record.status, record.reason = None, "connection dropped (injected fault)"
            elif (record.status or 0) >= 400:
                record.reason = _reason_of(bytes(body))


def _reason_of(body: bytes) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.decode(errors="replace")[:200]
    if isinstance(parsed, dict) and "detail" in parsed:
        return str(parsed["detail"])
    if isinstance(parsed, dict) and "errors" in parsed:
        return json.dumps(parsed["errors"], sort_keys=True)
    return json.dumps(parsed)[:200]


# --- routes ----------------------------------------------------------------------------------------


def fake_of(app: FastAPI) -> FakeUserCom:
    """The FakeUserCom behind an app made by ``create_app``."""
    return app.state.usercom


def _fake(request: Request) -> FakeUserCom:
    return request.app.state.usercom


def _gate(request: Request) -> None:
    _fake(request).check_request(request)


def _api_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX, dependencies=[Depends(_gate)])
    _add_user_routes(router)
    _add_product_routes(router)
    return router


def _add_user_routes(router: APIRouter) -> None:
    @router.post("/users/update_or_create/")
    async def update_or_create(request: Request) -> dict[str, Any]:
        created, user = _fake(request).update_or_create_user(await json_body(request))
        return {"created": created, "id": user["id"]}

    @router.get("/users/{user_id}/")
    async def get_user(user_id: str, request: Request) -> dict[str, Any]:
        return user_repr(_fake(request).get_user(user_id))

    @router.put("/users/{user_id}/")
    async def put_user(user_id: str, request: Request) -> dict[str, Any]:
        fake = _fake(request)
        return user_repr(fake.update_user(fake.get_user(user_id), await json_body(request)))

    @router.delete("/users/{user_id}/", status_code=204)
    async def delete_user(user_id: str, request: Request) -> Response:
        fake = _fake(request)
        fake.delete_user(fake.get_user(user_id))
        return Response(status_code=204)

    @router.get("/users-by-id/{custom_id}/")
    async def get_user_by_custom_id(custom_id: str, request: Request) -> dict[str, Any]:
        return user_repr(_fake(request).find_user(custom_id))

    @router.put("/users-by-id/{custom_id}/")
    async def put_user_by_custom_id(custom_id: str, request: Request) -> dict[str, Any]:
        fake = _fake(request)
        return user_repr(fake.update_user(fake.find_user(custom_id), await json_body(request)))

    @router.delete("/users-by-id/{custom_id}/", status_code=204)
    async def delete_user_by_custom_id(custom_id: str, request: Request) -> Response:
        fake = _fake(request)
        fake.delete_user(fake.find_user(custom_id))
        return Response(status_code=204)


def _add_product_routes(router: APIRouter) -> None:
    @router.post("/products/", status_code=201)
    async def create_product(request: Request) -> dict[str, Any]:
        return product_repr(_fake(request).create_product(await json_body(request)))

    @router.get("/products/{product_id}/")
    async def get_product(product_id: str, request: Request) -> dict[str, Any]:
        return product_repr(_fake(request).get_product(product_id))

    @router.put("/products/{product_id}/")
    async def put_product(product_id: str, request: Request) -> dict[str, Any]:
        fake = _fake(request)
        return product_repr(fake.update_product(fake.get_product(product_id), await json_body(request)))

    @router.delete("/products/{product_id}/", status_code=204)
    async def delete_product(product_id: str, request: Request) -> Response:
        fake = _fake(request)
        fake.delete_product(fake.get_product(product_id))
        return Response(status_code=204)

    @router.get("/products-by-id/{custom_id}/details/")
    async def product_details(custom_id: str, request: Request) -> dict[str, Any]:
        return product_repr(_fake(request).find_product(custom_id))

    @router.post("/products-by-id/{custom_id}/product_event/", status_code=201)
    async def event_by_custom_id(custom_id: str, request: Request) -> dict[str, Any]:
        fake = _fake(request)
        product = fake.find_product(custom_id)
        return {"id": fake.add_product_event(product, await json_body(request))["id"]}

    @router.post("/products/{product_id}/product_event/", status_code=201)
    async def event_by_id(product_id: str, request: Request) -> dict[str, Any]:
        fake = _fake(request)
        product = fake.get_product(product_id)
        return {"id": fake.add_product_event(product, await json_body(request))["id"]}


def _control_router() -> APIRouter:
    router = APIRouter(prefix=CONTROL_PREFIX)

    @router.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/state")
    async def state(request: Request, requests: bool = False) -> dict[str, Any]:
        return _fake(request).snapshot(include_requests=requests)

    @router.post("/reset")
    async def reset(request: Request) -> dict[str, str]:
        _fake(request).reset()
        return {"status": "reset"}

    @router.post("/config")
    async def config(request: Request) -> dict[str, Any]:
        settings = await json_body(request)
        try:
            return _fake(request).configure(**settings)
        except FaultConfigError as exc:
            raise ApiError(400, {"detail": str(exc)}) from exc

    return router


# --- app ------------------------------------------------------------------------------------------


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    path = request.url.path
    if exc.status_code == 404 and path.startswith(API_PREFIX) and not path.endswith("/"):
        detail = f"Not found. Every User.com API path ends with '/': '{path}' does not."
    elif exc.status_code == 404:
        detail = "Not found."
    elif exc.status_code == 405:
        detail = f'Method "{request.method}" not allowed.'
    else:
        detail = str(exc.detail)
    return JSONResponse({"detail": detail}, status_code=exc.status_code)


def create_app(api_key: str = DEFAULT_API_KEY, rate_limit: float | None = None) -> FastAPI:
    """A fresh fake User.com; its state is ``fake_of(app)`` (also ``app.state.usercom``)."""
    fake = FakeUserCom(api_key=api_key, initial_rate_limit=rate_limit)
    app = FastAPI(title="Fake User.com API", redirect_slashes=False, openapi_url=None, docs_url=None)
    app.state.usercom = fake
    app.include_router(_api_router())
    app.include_router(_control_router())
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(FaultMiddleware, faults=fake.faults, covers=lambda path: path.startswith(API_PREFIX))
    app.add_middleware(RequestLog, fake=fake)  # outermost: sees faults too
    return app


# --- human-readable summary -------------------------------------------------------------------------


def _value(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _attribute_lines(record: dict[str, Any]) -> list[str]:
    return [f"    {key}: {_value(record[key])}" for key in sorted(record) if key not in ("id", "custom_id")]


def _event_line(event: dict[str, Any]) -> str:
    moment = datetime.fromtimestamp(event["timestamp"], timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"  {moment}  {event['event_type']:<12} product={event['product_custom_id']}"
        f"  user={event['user_custom_id']}  data={_value(event['data'])}"
    )


def dump(state: dict[str, Any] | FakeUserCom, include_stats: bool = False) -> str:
    """Plain-text summary of a snapshot (or of a FakeUserCom): users, products, product events.

    Deterministic for the same data whatever the arrival order: records are sorted by custom id,
    events by (timestamp, product, type, user), and numeric ids are left out. ``include_stats``
    adds a line of request counters (those depend on timing).
    """
    if isinstance(state, FakeUserCom):
        state = state.snapshot()
    lines = [f"Users ({len(state['users'])})"]
    for custom_id in sorted(state["users"]):
        lines += [f"  {custom_id}", *_attribute_lines(state["users"][custom_id])]
    lines.append(f"Products ({len(state['products'])})")
    for custom_id in sorted(state["products"]):
        lines += [f"  {custom_id}", *_attribute_lines(state["products"][custom_id])]
    events = sorted(
        state["product_events"],
        key=lambda e: (e["timestamp"], e["product_custom_id"], e["event_type"], e["user_custom_id"]),
    )
    lines.append(f"Product events ({len(events)})")
    lines += [_event_line(event) for event in events]
    if state.get("deleted_users"):
        deleted = sorted(d["custom_id"] for d in state["deleted_users"])
        lines.append(f"Deleted users ({len(deleted)}): {', '.join(deleted)}")
    if include_stats:
        lines.append(
            f"Requests: {state['request_count']} total, {state['rate_limited_count']} answered 429, "
            f"max {state['max_rate_1s']:g}/s, {len(state['rejected'])} rejected"
        )
    return "\n".join(lines) + "\n"


# --- running it --------------------------------------------------------------------------------------


@contextlib.contextmanager
def running_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread; yields its base URL (port 0 = a free one)."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="critical", lifespan="off", loop="asyncio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fake-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the fake server did not start")
        time.sleep(0.01)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.fakes.usercom", description="Fake User.com REST API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--rate-limit", type=float, default=None, help="requests per second (default: none)")
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    args = parse_args(argv)
    app = create_app(api_key=args.api_key, rate_limit=args.rate_limit)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
