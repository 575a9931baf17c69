"""A fake Caterings API (contract §5) for tests, demos and load runs.

    python -m app.fakes.caterings --port 8102 --token T --brand-id 1 --users 20000 --orders 20000 \\
        --seed 1 --feed samples/feed.xml

API (as the bridge's adapter expects it)
----------------------------------------
* ``Authorization: Bearer <token>`` on every API call, else ``401``.
* When a brand id is configured, ``x-g-brand: <brand id>`` too: a missing header is ``400``, a
  different brand ``403``.
* ``GET /users?page=N&per_page=M`` and ``GET /orders?page=N&per_page=M`` answer
  ``{"items": [...], "next_page": N+1 | null}``; pages start at 1; ``per_page`` is capped at 500.
* ``PUT /users/{id}/agreements`` with ``{"marketing": true|false}``: ``200`` and recorded;
  ``404`` for an unknown user; ``422`` when ``marketing`` is not a boolean.
* ``GET /feed.xml``: the Google Merchant feed (no auth, like a public feed URL).

Data
----
Users are the explicit ones (the sample users 1043, 2210, 3007, 4120 by default, plus any added
with ``fake.add_user``), then ``users`` generated ones; orders are ``orders`` generated ones. A
generated user or order is a pure function of ``(seed, index)`` and is built only when a page or a
lookup needs it, so 20,000 users cost nothing until they are read. Generated user ids start at
100001 and order ids at 500001 (some of them sent as strings); each order's user is one of the
generated users (one of the sample users when none are generated), and each item is a diet-simple
of the bundled sample feed. Adding explicit users while a client pages through ``/users`` shifts
the generated users by that many places.

Control endpoints (no auth; not covered by the injected faults)
---------------------------------------------------------------
* ``GET /_fake/health``: ``200`` while the fake serves (a readiness probe for test harnesses).
* ``GET /_fake/state``: agreements received (in arrival order), request counts per route and per
  status, how many users/orders were generated, the listing pages served in order (``pages``:
  ``"users:1"``, ...), the fault settings.
* ``POST /_fake/config``: any of the fault settings of ``app.fakes.faults`` (``down``,
  ``status_sequence``, ``delay_seconds``, ``error_rate``, ``storm_seconds``, ``retry_after``, ...)
  and ``rate_limit`` (requests per second; ``null`` turns it off; over it: ``429`` with
  ``Retry-After``).
* ``POST /_fake/reset``: back to the state right after start.
* ``PUT /_fake/feed``: replace the feed with the raw XML body. ``POST /_fake/users``: add a user.
"""

from __future__ import annotations

import argparse
import hmac
import math
import random
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, StrictBool

from app.fakes.faults import FaultConfig, FaultConfigError, FaultMiddleware

DEFAULT_TOKEN = "test-caterings-token"
MAX_PER_PAGE = 500
USER_ID_BASE = 100_001
ORDER_ID_BASE = 500_001
LOCAL_TZ = ZoneInfo("Europe/Warsaw")
SAMPLE_FEED = Path(__file__).resolve().parents[2] / "samples" / "feed.xml"

# --------------------------------------------------------------------------------------------
# Data to draw from (all invented)

FEMALE_NAMES = (
    "Anna", "Maria", "Katarzyna", "Małgorzata", "Agnieszka", "Barbara", "Ewa", "Elżbieta",
    "Magdalena", "Joanna", "Zofia", "Aleksandra", "Monika", "Natalia", "Julia", "Karolina",
    "Marta", "Beata", "Dorota", "Paulina", "Weronika", "Justyna", "Iwona", "Alicja", "Hanna",
)  # fmt: skip
MALE_NAMES = (
    "Piotr", "Krzysztof", "Andrzej", "Tomasz", "Paweł", "Jan", "Michał", "Marcin", "Jakub",
    "Adam", "Łukasz", "Mateusz", "Grzegorz", "Wojciech", "Mariusz", "Dariusz", "Kamil", "Maciej",
    "Rafał", "Szymon", "Bartosz", "Sebastian", "Przemysław", "Jerzy", "Zbigniew",
)  # fmt: skip
# (male form, female form)
LAST_NAMES = (
    ("Nowak", "Nowak"), ("Kowalski", "Kowalska"), ("Wiśniewski", "Wiśniewska"),
    ("Wójcik", "Wójcik"), ("Kowalczyk", "Kowalczyk"), ("Kamiński", "Kamińska"),
    ("Lewandowski", "Lewandowska"), ("Zieliński", "Zielińska"), ("Szymański", "Szymańska"),
    ("Woźniak", "Woźniak"), ("Dąbrowski", "Dąbrowska"), ("Kozłowski", "Kozłowska"),
    ("Jankowski", "Jankowska"), ("Mazur", "Mazur"), ("Kwiatkowski", "Kwiatkowska"),
    ("Krawczyk", "Krawczyk"), ("Piotrowski", "Piotrowska"), ("Grabowski", "Grabowska"),
    ("Pawłowski", "Pawłowska"), ("Michalski", "Michalska"), ("Nowicki", "Nowicka"),
    ("Adamczyk", "Adamczyk"), ("Dudek", "Dudek"), ("Zając", "Zając"), ("Wieczorek", "Wieczorek"),
    ("Jabłoński", "Jabłońska"), ("Król", "Król"), ("Majewski", "Majewska"),
    ("Olszewski", "Olszewska"), ("Jaworski", "Jaworska"), ("Wróbel", "Wróbel"),
    ("Malinowski", "Malinowska"), ("Stępień", "Stępień"), ("Górski", "Górska"),
    ("Sikora", "Sikora"), ("Grzybowski", "Grzybowska"), ("Szczepański", "Szczepańska"),
    ("Ziółkowski", "Ziółkowska"), ("Czarnecki", "Czarnecka"), ("Sokołowski", "Sokołowska"),
    ("Kaźmierczak", "Kaźmierczak"), ("Wąsowski", "Wąsowska"), ("Chmielewski", "Chmielewska"),
)  # fmt: skip
CITIES = (
    "Warszawa", "Kraków", "Łódź", "Wrocław", "Poznań", "Gdańsk", "Szczecin", "Bydgoszcz",
    "Lublin", "Białystok", "Katowice", "Gdynia", "Częstochowa", "Rzeszów", "Toruń", "Kielce",
    "Olsztyn", "Bielsko-Biała", "Zielona Góra", "Opole", "Sopot", "Piaseczno", "Pruszków",
)  # fmt: skip
DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com")
CODES = ("LATO2026", "POWROT15", "ZIMA10", "START20", "FIT5")


@dataclass(frozen=True)
class Diet:
    """A diet-simple of the bundled sample feed, as orders reference it."""

    item_xml_id: str
    diet_id: int
    variant_id: int
    calorific_id: int
    diet_name: str
    variant_name: str
    kcal: int
    daily_meals: int
    day_price: Decimal


CATALOG = (
    Diet("12-3-41", 12, 3, 41, "Office", "Standard", 800, 3, Decimal("79.98")),
    Diet("9-2-30", 9, 2, 30, "Standard", "Standard", 1500, 5, Decimal("59.90")),
    Diet("15-1-77", 15, 1, 77, "Sport", "Wege", 2500, 5, Decimal("74.95")),
    Diet("20-4-90", 20, 4, 90, "Keto", "Standard", 1800, 4, Decimal("89.00")),
    Diet("31-1-12", 31, 1, 12, "Mama", "Karmienie", 2000, 5, Decimal("84.50")),
)

SAMPLE_USERS: tuple[dict[str, Any], ...] = (
    {"id": 1043, "email": "anna.kowalska@example.com", "first_name": "Anna", "last_name": "Kowalska",
     "phone": "600 100 200", "created_at": "2025-03-01T09:12:44+01:00", "city": "Kraków",
     "agreements": {"data_processing": True, "marketing": False}, "total_spent": "0",
     "client_panel": True, "active_code": None},
    {"id": "2210", "email": "piotr.wisniewski@example.org", "first_name": "Piotr",
     "last_name": "Wiśniewski", "phone": "+48 512-345-678", "created_at": "2026-06-30T21:40:00+02:00",
     "city": "Łódź", "agreements": {"data_processing": True, "marketing": False},
     "total_spent": 1834.5, "client_panel": True, "active_code": "POWROT15"},
    {"id": 3007, "email": "zofia.zielinska@example.net", "first_name": "Zofia",
     "last_name": "Zielińska-Grzybowska-Wójcik-Szczepańska-Nowak", "phone": "12345",
     "created_at": "2024-11-15T08:00:00+01:00", "city": "Gdańsk",
     "agreements": {"data_processing": True, "marketing": False}, "total_spent": "89.00",
     "client_panel": False, "active_code": None},
    {"id": 4120, "email": "jan.dabrowski@example.com", "first_name": "Jan", "last_name": "Dąbrowski",
     "phone": "0048601234567", "created_at": "2025-09-14T17:30:00+02:00", "city": "Poznań",
     "agreements": {"data_processing": True, "marketing": True}, "total_spent": "720,00",
     "client_panel": True, "active_code": None},
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Generation: pure functions of (seed, index)


def _rng(seed: int, kind: str, index: int) -> random.Random:
    # A string seed is hashed with SHA-512 by random.seed: stable across processes and runs.
    return random.Random(f"{seed}:{kind}:{index}")


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.replace("ł", "l").replace("Ł", "L"))
    return re.sub(r"[^A-Za-z0-9]", "", folded.encode("ascii", "ignore").decode()).lower()


def _local(moment: datetime) -> str:
    return moment.astimezone(LOCAL_TZ).isoformat()


def _phone(rng: random.Random) -> str | None:
    digits = f"{rng.choice('5678')}{rng.randrange(10**8):08d}"
    a, b, c = digits[:3], digits[3:6], digits[6:]
    formats = (
        f"{a} {b} {c}", f"+48 {a}-{b}-{c}", f"0048{digits}", digits, f"+48{digits}",
        f"(+48) {a} {b} {c}", f"{a}-{b}-{c}",
    )  # fmt: skip
    roll = rng.random()
    if roll < 0.05:
        return None
    if roll < 0.08:
        return rng.choice(("brak", "123", ""))
    return rng.choice(formats)


def _email(rng: random.Random, first: str, last: str, index: int) -> str:
    first, last = _ascii(first), _ascii(last)
    local = rng.choice((f"{first}.{last}", f"{first[0]}.{last}", f"{first}{last}", f"{last}.{first}"))
    email = f"{local}{index}@{rng.choice(DOMAINS)}"
    roll = rng.random()
    if roll < 0.03:
        return email.title() + " "
    if roll < 0.06:
        return email.upper()
    return email


def _money(rng: random.Random, amount: Decimal) -> str | float:
    """PLN as Caterings sends it: a dot string, a comma string, or a number."""
    roll = rng.random()
    text = str(amount.quantize(Decimal("0.01")))
    if roll < 0.6:
        return text
    if roll < 0.85:
        return text.replace(".", ",")
    return float(amount)


def _maybe_string(rng: random.Random, value: int, chance: float = 0.15) -> int | str:
    return str(value) if rng.random() < chance else value


def generate_user(seed: int, index: int) -> dict[str, Any]:
    """The generated user number ``index`` (0-based); same (seed, index), same user."""
    rng = _rng(seed, "user", index)
    female = rng.random() < 0.55
    first = rng.choice(FEMALE_NAMES if female else MALE_NAMES)
    last = rng.choice(LAST_NAMES)[1 if female else 0]
    if female and rng.random() < 0.06:
        last = f"{last}-{rng.choice(LAST_NAMES)[1]}"
    created = datetime(2023, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=rng.randrange(2 * 365 * 86400))
    return {
        "id": _maybe_string(rng, USER_ID_BASE + index),
        "email": _email(rng, first, last, index),
        "first_name": first,
        "last_name": last,
        "phone": _phone(rng),
        "created_at": _local(created),
        "city": rng.choice(CITIES),
        "agreements": {"data_processing": True, "marketing": rng.random() < 0.45},
        "total_spent": _money(rng, Decimal(rng.randrange(0, 600_000)) / 100),
        "client_panel": rng.random() < 0.7,
        "active_code": rng.choice(CODES) if rng.random() < 0.15 else None,
    }


def _delivery_dates(rng: random.Random, start: date, days: int) -> list[str]:
    skip_weekends = rng.random() < 0.6
    dates: list[str] = []
    day = start
    while len(dates) < days:
        if not (skip_weekends and day.weekday() >= 5):
            dates.append(day.isoformat())
        day += timedelta(days=1)
    return dates


def _item(rng: random.Random, diet: Diet, start: date) -> dict[str, Any]:
    trial = rng.random() < 0.12
    days = rng.choice((1, 2, 3)) if trial else rng.choice((5, 10, 10, 20, 20, 28))
    return {
        "diet_id": _maybe_string(rng, diet.diet_id, 0.1),
        "variant_id": diet.variant_id,
        "calorific_id": _maybe_string(rng, diet.calorific_id, 0.1),
        "item_xml_id": diet.item_xml_id,
        "diet_name": diet.diet_name,
        "variant_name": diet.variant_name,
        "kcal": diet.kcal,
        "daily_meals": diet.daily_meals,
        "trial": trial,
        "price": diet.day_price * days,
        "delivery_dates": _delivery_dates(rng, start, days),
    }


def _status(rng: random.Random, created: datetime) -> tuple[str, str | None]:
    roll = rng.random()
    paid_at = _local(created + timedelta(minutes=rng.randint(1, 40)))
    if roll < 0.82:
        return "paid", paid_at
    if roll < 0.92:
        return "new", None
    return "cancelled", paid_at if rng.random() < 0.5 else None


def generate_order(seed: int, index: int, orders_total: int, user_of: Callable[[int], dict[str, Any]],
                   users_total: int) -> dict[str, Any]:  # fmt: skip
    """The generated order number ``index``; ``user_of(j)`` gives the customer (j < users_total)."""
    rng = _rng(seed, "order", index)
    span = 540 * 86400  # orders are spread over 2025-01-01 .. mid-2026, oldest first
    step = span / max(orders_total, 1)
    offset = index * step + rng.random() * step
    created = datetime(2025, 1, 1, 7, tzinfo=LOCAL_TZ) + timedelta(seconds=int(offset))
    status, paid_at = _status(rng, created)
    start = created.date() + timedelta(days=rng.randint(1, 4))
    diets = rng.sample(CATALOG, 2 if rng.random() < 0.25 else 1)
    items = [_item(rng, diet, start) for diet in diets]
    discount = rng.choice(CODES) if rng.random() < 0.2 else None
    total = sum((item["price"] for item in items), Decimal(0)) * (Decimal("0.9") if discount else 1)
    for item in items:
        item["price"] = _money(rng, item["price"])
    return {
        "id": _maybe_string(rng, ORDER_ID_BASE + index),
        "user": user_of(rng.randrange(users_total)),
        "status": status,
        "created_at": _local(created),
        "paid_at": paid_at,
        "first_order": rng.random() < 0.3,
        "discount_code": discount,
        "total_price": _money(rng, total),
        "items": items,
    }


def catalog_feed() -> bytes:
    """A feed of the catalog, used when no feed file is given and the bundled sample is missing."""
    entries = "".join(
        f"<item><g:id>{diet.item_xml_id}</g:id><title>{diet.diet_name} {diet.kcal} kcal</title>"
        f"<g:availability>in_stock</g:availability><g:price>{diet.day_price} PLN</g:price>"
        f"<g:custom_label_0>{diet.kcal}</g:custom_label_0>"
        f"<g:custom_label_1>{diet.daily_meals}</g:custom_label_1></item>"
        for diet in CATALOG
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" xmlns:g="http://base.google.com/ns/1.0">'
        f"<channel><title>Fake Caterings</title>{entries}</channel></rss>"
    ).encode()


# --------------------------------------------------------------------------------------------
# State


class TokenBucket:
    """``rate`` requests per second, bursts up to ``max(1, rate)``."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.clock = clock
        self.updated = clock()

    def take(self) -> float:
        """0 when the request may pass, else the seconds until it could."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class FakeCaterings:
    """Everything the fake remembers; ``app.state.fake`` in the app."""

    def __init__(self, token: str, brand_id: str | None, users: int, orders: int, seed: int,
                 rate_limit: float | None, feed: bytes) -> None:  # fmt: skip
        self.token = token
        self.brand_id = brand_id
        self.users_total = users
        self.orders_total = orders
        self.seed = seed
        self.faults = FaultConfig()
        self._initial = (rate_limit, feed)
        self.reset()

    def reset(self) -> None:
        rate_limit, feed = self._initial
        self.explicit_users: dict[str, dict[str, Any]] = {}
        for user in SAMPLE_USERS:
            self.add_user(user)
        self.marketing: dict[str, bool] = {}  # consent changes of generated users
        self.agreements: list[dict[str, Any]] = []
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.generated: Counter[str] = Counter()
        self.pages: list[str] = []  # listing pages served, in order: "users:1", "orders:3", ...
        self.feed = feed
        self.faults.reset()
        self.set_rate_limit(rate_limit)

    def set_rate_limit(self, rate: float | None) -> None:
        self.rate_limit = rate
        self.bucket = TokenBucket(rate) if rate else None

    # --- users -----------------------------------------------------------------------------------

    def add_user(self, user: dict[str, Any]) -> dict[str, Any]:
        """Add (or replace) an explicit user; it is listed before the generated ones."""
        if "id" not in user:
            raise ValueError("a user needs an id")
        stored = {**user, "agreements": dict(user.get("agreements") or {})}
        self.explicit_users[str(user["id"])] = stored
        return stored

    def generated_user(self, index: int) -> dict[str, Any]:
        self.generated["users"] += 1
        user = generate_user(self.seed, index)
        user_id = str(user["id"])
        if user_id in self.marketing:
            user["agreements"]["marketing"] = self.marketing[user_id]
        return user

    def _generated_index(self, user_id: str) -> int | None:
        if not user_id.isdigit():
            return None
        index = int(user_id) - USER_ID_BASE
        return index if 0 <= index < self.users_total else None

    def knows_user(self, user_id: str) -> bool:
        return user_id in self.explicit_users or self._generated_index(user_id) is not None

    def record_agreement(self, user_id: str, marketing: bool) -> dict[str, Any]:
        if user_id in self.explicit_users:
            self.explicit_users[user_id]["agreements"]["marketing"] = marketing
        else:
            self.marketing[user_id] = marketing
        entry = {"user_id": user_id, "marketing": marketing, "at": datetime.now(timezone.utc).isoformat()}
        self.agreements.append(entry)
        return entry

    def user_page(self, page: int, per_page: int) -> dict[str, Any]:
        self.pages.append(f"users:{page}")
        explicit = list(self.explicit_users.values())
        total = len(explicit) + self.users_total

        def user_at(position: int) -> dict[str, Any]:
            if position < len(explicit):
                return {**explicit[position], "agreements": dict(explicit[position]["agreements"])}
            return self.generated_user(position - len(explicit))

        return _page(page, per_page, total, user_at)

    # --- orders ----------------------------------------------------------------------------------

    def _customer(self, index: int) -> dict[str, Any]:
        if self.users_total:
            return self.generated_user(index)
        sample_id = str(SAMPLE_USERS[index]["id"])
        user = self.explicit_users.get(sample_id, SAMPLE_USERS[index])
        return {**user, "agreements": dict(user["agreements"])}

    def order_page(self, page: int, per_page: int) -> dict[str, Any]:
        self.pages.append(f"orders:{page}")
        users = self.users_total or len(SAMPLE_USERS)

        def order_at(index: int) -> dict[str, Any]:
            self.generated["orders"] += 1
            return generate_order(self.seed, index, self.orders_total, self._customer, users)

        return _page(page, per_page, self.orders_total, order_at)

    # --- state -----------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "agreements": list(self.agreements),
            "requests": dict(self.requests),
            "statuses": dict(self.statuses),
            "generated": {"users": self.generated["users"], "orders": self.generated["orders"]},
            "pages": list(self.pages),
            "users_total": len(self.explicit_users) + self.users_total,
            "orders_total": self.orders_total,
            "config": {**self.faults.as_dict(), "rate_limit": self.rate_limit},
        }


def _page(page: int, per_page: int, total: int, item_at: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
    per_page = min(per_page, MAX_PER_PAGE)
    start = (page - 1) * per_page
    end = min(start + per_page, total)
    items = [item_at(position) for position in range(start, end)]
    return {"items": items, "next_page": page + 1 if end < total else None}


# --------------------------------------------------------------------------------------------
# ASGI plumbing: request counting (outermost), injected faults, rate limit (innermost)

_USER_AGREEMENTS = re.compile(r"^/users/[^/]+/agreements$")


def route_key(method: str, path: str) -> str:
    if _USER_AGREEMENTS.match(path):
        path = "/users/{id}/agreements"
    return f"{method} {path}"


def _is_control(path: str) -> bool:
    return path.startswith("/_fake/")


class _CountRequests:
    def __init__(self, app: Any, fake: FakeCaterings) -> None:
        self.app = app
        self.fake = fake

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or _is_control(scope["path"]):
            await self.app(scope, receive, send)
            return
        self.fake.requests[route_key(scope["method"], scope["path"])] += 1

        async def counting_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.fake.statuses[str(message["status"])] += 1
            await send(message)

        await self.app(scope, receive, counting_send)


class _RateLimit:
    def __init__(self, app: Any, fake: FakeCaterings) -> None:
        self.app = app
        self.fake = fake

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        bucket = self.fake.bucket
        if scope["type"] == "http" and bucket is not None and not _is_control(scope["path"]):
            wait = bucket.take()
            if wait > 0:
                retry_after = str(max(1, math.ceil(wait)))
                response = JSONResponse(
                    {"detail": "Too many requests. You have reached a rate limit."},
                    status_code=429,
                    headers={"Retry-After": retry_after},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------------------------
# The app


class AgreementsIn(BaseModel):
    marketing: StrictBool


def _fake_of(request: Request) -> FakeCaterings:
    fake: FakeCaterings = request.app.state.fake
    return fake


def authorize(request: Request) -> None:
    """Bearer token, then (when the fake has a brand) the ``x-g-brand`` header."""
    fake = _fake_of(request)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), fake.token.encode()):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
    if fake.brand_id is None:
        return
    brand = request.headers.get("x-g-brand")
    if brand is None:
        raise HTTPException(400, "the x-g-brand header is required")
    if brand.strip() != fake.brand_id:
        raise HTTPException(403, "the x-g-brand header names another brand")


def _api_routes(app: FastAPI) -> None:
    auth = [Depends(authorize)]

    @app.get("/users", dependencies=auth)
    async def list_users(
        request: Request, page: int = Query(1, ge=1), per_page: int = Query(100, ge=1)
    ) -> dict[str, Any]:
        return _fake_of(request).user_page(page, per_page)

    @app.get("/orders", dependencies=auth)
    async def list_orders(
        request: Request, page: int = Query(1, ge=1), per_page: int = Query(100, ge=1)
    ) -> dict[str, Any]:
        return _fake_of(request).order_page(page, per_page)

    @app.put("/users/{user_id}/agreements", dependencies=auth)
    async def put_agreements(user_id: str, body: AgreementsIn, request: Request) -> dict[str, Any]:
        fake = _fake_of(request)
        if not fake.knows_user(user_id):
            raise HTTPException(404, f"user {user_id} not found")
        fake.record_agreement(user_id, body.marketing)
        return {"id": user_id, "agreements": {"marketing": body.marketing}}

    @app.get("/feed.xml")
    async def feed(request: Request) -> Response:
        return Response(_fake_of(request).feed, media_type="application/xml")


def _control_routes(app: FastAPI) -> None:
    @app.get("/_fake/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/_fake/state")
    async def state(request: Request) -> dict[str, Any]:
        return _fake_of(request).snapshot()

    @app.post("/_fake/config")
    async def config(settings: dict[str, Any], request: Request) -> dict[str, Any]:
        fake = _fake_of(request)
        settings = dict(settings)
        rate_limit = settings.pop("rate_limit", fake.rate_limit)
        is_number = isinstance(rate_limit, int | float) and not isinstance(rate_limit, bool)
        if rate_limit is not None and (not is_number or rate_limit <= 0):
            raise HTTPException(422, "rate_limit must be a number > 0, or null")
        try:
            fake.faults.update(settings)
        except FaultConfigError as exc:
            raise HTTPException(422, str(exc)) from exc
        if rate_limit != fake.rate_limit:
            fake.set_rate_limit(rate_limit)
        return fake.snapshot()["config"]

    @app.post("/_fake/reset")
    async def reset(request: Request) -> dict[str, str]:
        _fake_of(request).reset()
        return {"status": "reset"}

    @app.put("/_fake/feed")
    async def replace_feed(request: Request) -> dict[str, Any]:
        feed = await request.body()
        _fake_of(request).feed = feed
        return {"status": "replaced", "bytes": len(feed)}

    @app.post("/_fake/users")
    async def add_user(user: dict[str, Any], request: Request) -> dict[str, Any]:
        try:
            return _fake_of(request).add_user(user)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc


def _load_feed(path: str | Path | None) -> bytes:
    if path is not None:
        return Path(path).read_bytes()
    return SAMPLE_FEED.read_bytes() if SAMPLE_FEED.exists() else catalog_feed()


def create_app(
    token: str = DEFAULT_TOKEN,
    brand_id: str | None = None,
    users: int = 0,
    orders: int = 0,
    seed: int = 1,
    rate_limit: float | None = None,
    feed_path: str | Path | None = None,
) -> FastAPI:
    """The fake Caterings API; its state is ``app.state.fake`` (a ``FakeCaterings``)."""
    fake = FakeCaterings(
        token=token,
        brand_id=None if brand_id is None else str(brand_id),
        users=users,
        orders=orders,
        seed=seed,
        rate_limit=rate_limit,
        feed=_load_feed(feed_path),
    )
    app = FastAPI(title="Fake Caterings API")
    app.state.fake = fake
    _api_routes(app)
    _control_routes(app)
    app.add_middleware(_RateLimit, fake=fake)
    app.add_middleware(FaultMiddleware, faults=fake.faults, covers=lambda path: not _is_control(path))
    app.add_middleware(_CountRequests, fake=fake)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a fake Caterings API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8102)
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--brand-id", default=None)
    parser.add_argument("--users", type=int, default=0, help="generated users (besides the sample ones)")
    parser.add_argument("--orders", type=int, default=0, help="generated orders")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate-limit", type=float, default=None, help="requests per second, then 429")
    parser.add_argument("--feed", default=None, help="feed XML file (default: the bundled sample)")
    args = parser.parse_args(argv)

    import uvicorn

    app = create_app(
        token=args.token,
        brand_id=args.brand_id,
        users=args.users,
        orders=args.orders,
        seed=args.seed,
        rate_limit=args.rate_limit,
        feed_path=args.feed,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
