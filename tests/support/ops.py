"""Helpers for the operations tests: a synthetic workload, sending it concurrently, reading the
store and the metrics of running processes, and checking what reached the fake User.com."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support import processes as p

PER_USER = 10  # webhooks per user in the workload


def _user(uid: int, city: str = "Kraków") -> dict[str, Any]:
    return {"id": uid, "email": f"klient{uid}@example.com", "first_name": "Jan", "last_name": f"Testowy{uid}",
            "phone": "600 100 200", "created_at": "2025-03-01T09:12:44+01:00", "city": city,
            "agreements": {"data_processing": True, "marketing": True}, "total_spent": "0", "client_panel": True}


def _order(uid: int, k: int, status: str, *, kcal: int = 1500) -> dict[str, Any]:
    diet = 10 + k
    item = {"diet_id": diet, "variant_id": 1, "calorific_id": 20 + uid % 4, "item_xml_id": f"{diet}-1-{20 + uid % 4}",
            "diet_name": f"Dieta {diet}", "variant_name": "Standard", "kcal": kcal, "daily_meals": 5, "trial": False,
            "price": "399.90", "delivery_dates": ["2026-07-06", "2026-07-07", "2026-07-08"]}
    return {"id": order_id(uid, k), "user": {"id": uid, "email": f"klient{uid}@example.com"}, "status": status,
            "created_at": "2026-07-02T18:22:05+02:00", "paid_at": "2026-07-02T18:24:40+02:00" if status == "paid" else None,
            "first_order": k == 0, "total_price": "399.90", "items": [item]}


def order_id(uid: int, k: int) -> int:
    return uid * 10 + k


def user_webhooks(uid: int) -> list[tuple[str, dict[str, Any]]]:
    """Ten webhooks of one user, in the order Caterings would send them."""
    at = "2026-07-02T18:20:00+02:00"

    def event(kind: str, data: dict[str, Any]) -> dict[str, Any]:
        return {"type": kind, "occurred_at": at, "brand_id": 1, "data": data}

    bodies = [
        event("user.created", {"user": _user(uid)}),
        event("order.created", {"order": _order(uid, 0, "new")}),
        event("order.paid", {"order": _order(uid, 0, "paid")}),
        event("order.created", {"order": _order(uid, 1, "new")}),
        event("order.paid", {"order": _order(uid, 1, "paid")}),
        event("user.updated", {"user": _user(uid, city="Gdańsk")}),
        event("order.created", {"order": _order(uid, 2, "new")}),
        event("order.paid", {"order": _order(uid, 2, "paid")}),
        event("order.updated", {"order": _order(uid, 0, "paid", kcal=2000)}),
        event("order.cancelled", {"order": _order(uid, 1, "cancelled")}),
    ]
    return [(f"msg_ops_{uid}_{n}", body) for n, body in enumerate(bodies)]


def expected_events(uids: Sequence[int]) -> Counter[tuple[str, str, str]]:
    """(product custom id, event type, user custom id) -> how many times User.com must see it."""
    expected: Counter[tuple[str, str, str]] = Counter()
    for uid in uids:
        for k in range(3):
            simple = f"{10 + k}-1-{20 + uid % 4}"
            variant = f"{10 + k}_1_{20 + uid % 4}_{order_id(uid, k)}"
            expected[(simple, "order", str(uid))] += 1
            expected[(simple, "purchase", str(uid))] += 1
            expected[(variant, "reservation", str(uid))] += 1
    return expected


def seen_events(state: dict[str, Any]) -> Counter[tuple[str, str, str]]:
    return Counter((e["product_custom_id"], e["event_type"], e["user_custom_id"]) for e in state["product_events"])


def order_violations(state: dict[str, Any], uids: Sequence[int]) -> list[str]:
    """Per order: its ``order`` event before its ``purchase`` before its ``reservation``."""
    position: dict[tuple[str, str, str], int] = {}
    for index, e in enumerate(state["product_events"]):
        position.setdefault((e["product_custom_id"], e["event_type"], e["user_custom_id"]), index)
    problems = []
    for uid in uids:
        for k in range(3):
            simple = f"{10 + k}-1-{20 + uid % 4}"
            variant = f"{10 + k}_1_{20 + uid % 4}_{order_id(uid, k)}"
            steps = [position.get((simple, "order", str(uid))), position.get((simple, "purchase", str(uid))),
                     position.get((variant, "reservation", str(uid)))]
            if None in steps or steps != sorted(steps):  # type: ignore[type-var]
                problems.append(f"user {uid} order {order_id(uid, k)}: {steps}")
    return problems


def check_final_state(state: dict[str, Any], uids: Sequence[int]) -> None:
    """Everything delivered exactly once, in order, with the later changes applied."""
    seen, expected = seen_events(state), expected_events(uids)
    twice = {key: n for key, n in seen.items() if n > 1}
    missing = {key: n for key, n in expected.items() if seen.get(key, 0) < n}
    assert not twice, f"business events fired more than once: {list(twice.items())[:10]}"
    assert not missing, f"business events missing: {list(missing.items())[:10]}"
    assert seen == expected
    problems = order_violations(state, uids)
    assert not problems, problems[:10]
    for uid in uids:
        user = state["users"].get(str(uid))
        assert user is not None and user["miejscowosc"] == "Gdańsk", (uid, user)
        first = state["products"][f"10_1_{20 + uid % 4}_{order_id(uid, 0)}"]
        second = state["products"][f"11_1_{20 + uid % 4}_{order_id(uid, 1)}"]
        assert first["kcal"] == 2000 and second["active"] is False, (first, second)


@dataclass
class SendReport:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    retried: Counter[int] = field(default_factory=Counter)  # 5xx answers sent again, by status
    seconds: float = 0.0


async def send_workload(bridge_urls: Sequence[str], uids: Sequence[int], *, concurrency: int = 16) -> SendReport:
    """Every user's webhooks, each user's one after another (as Caterings sends them), users at
    once through a bounded pool; spread over the given web processes."""
    report = SendReport()
    started = time.monotonic()
    semaphore = asyncio.Semaphore(concurrency)
    urls = itertools.cycle(bridge_urls)
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one_user(uid: int) -> None:
            async with semaphore:
                for webhook_id, body in user_webhooks(uid):
                    raw, headers = p.signed_webhook(body, webhook_id)
                    for attempt in range(10):  # what Caterings does on a network error or a 5xx: again
                        try:
                            answer = await client.post(next(urls) + "/webhooks/caterings", content=raw, headers=headers)
                        except httpx.TransportError:
                            if attempt == 9:
                                raise
                            await asyncio.sleep(0.5)
                            continue
                        if answer.status_code < 500 or attempt == 9:
                            break
                        report.retried[answer.status_code] += 1
                        await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
                    report.statuses[answer.status_code] += 1
                    report.sent += 1

        await asyncio.gather(*(one_user(uid) for uid in uids))
    report.seconds = time.monotonic() - started
    return report


# --- the store of a running bridge, read directly


async def _query(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    from sqlalchemy import text

    from app.db import create_engine

    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return [tuple(row) for row in (await connection.execute(text(sql))).all()]
    finally:
        await engine.dispose()


def query(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    return asyncio.run(_query(database_url, sql))


def leases_left(database_url: str) -> list[tuple[Any, ...]]:
    """Deliveries still in flight or holding a lease (none after a graceful stop)."""
    return query(database_url,
                 "SELECT id, state, leased_by FROM deliveries WHERE state = 'in_flight' OR lease_until IS NOT NULL")


# --- metrics of a running process


def scrape(url: str) -> str:
    answer = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {p.ADMIN_TOKEN}"}, timeout=10)
    answer.raise_for_status()
    return answer.text


def sample(text: str, name: str, **labels: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


def admin(method: str, url: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, url, headers={"Authorization": f"Bearer {p.ADMIN_TOKEN}"}, timeout=30, **kw)


def event_keys_of(database_url: str, delivery_ids: Sequence[int]) -> dict[int, tuple[str, str, str]]:
    """(product custom id, event type, user custom id) of product-event deliveries, by id."""
    if not delivery_ids:
        return {}
    import json

    rows = query(database_url, f"SELECT id, payload FROM deliveries WHERE kind = 'usercom.product_event' "
                               f"AND id IN ({','.join(str(int(i)) for i in delivery_ids)})")
    keys = {}
    for delivery_id, payload in rows:
        data = json.loads(payload) if isinstance(payload, str) else payload
        keys[delivery_id] = (data["product_custom_id"], data["body"]["event_type"], data["body"]["user_custom_id"])
    return keys
