from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.caterings.feed import parse_feed
from app.caterings.schemas import Order, User
from app.fakes.caterings import CATALOG, DEFAULT_TOKEN, MAX_PER_PAGE, TokenBucket, create_app

AUTH = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
SAMPLE_USER_IDS = ["1043", "2210", "3007", "4120"]
SAMPLE_FEED = Path(__file__).resolve().parents[2] / "samples" / "feed.xml"


def _client(app: FastAPI, headers: dict[str, str] | None = AUTH) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://caterings.test", headers=headers)


@pytest.fixture
def app() -> FastAPI:
    return create_app(users=50, orders=30, seed=7)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app) as client:
        yield client


async def _all(client: httpx.AsyncClient, resource: str, per_page: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    page: int | None = 1
    while page is not None:
        response = await client.get(f"/{resource}", params={"page": page, "per_page": per_page})
        assert response.status_code == 200
        body = response.json()
        items.extend(body["items"])
        page = body["next_page"]
    return items


# --- auth -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Token {DEFAULT_TOKEN}"}],
)
async def test_bearer_token_required(app: FastAPI, headers: dict[str, str]) -> None:
    async with _client(app, headers) as client:
        response = await client.get("/users")
    assert response.status_code == 401


async def test_brand_header_required_when_brand_configured() -> None:
    app = create_app(brand_id="1")
    async with _client(app) as client:
        assert (await client.get("/users")).status_code == 400
        assert (await client.get("/users", headers={"x-g-brand": "2"})).status_code == 403
        assert (await client.get("/users", headers={"x-g-brand": "1"})).status_code == 200


async def test_feed_needs_no_auth(app: FastAPI) -> None:
    async with _client(app, headers={}) as client:
        response = await client.get("/feed.xml")
    assert response.status_code == 200
    assert response.content == SAMPLE_FEED.read_bytes()


# --- listing ----------------------------------------------------------------------------------


async def test_users_page_to_the_end(client: httpx.AsyncClient) -> None:
    users = await _all(client, "users", per_page=20)
    assert len(users) == 4 + 50
    assert [str(user["id"]) for user in users[:4]] == SAMPLE_USER_IDS
    assert len({str(user["id"]) for user in users}) == len(users)
    last = await client.get("/users", params={"page": 3, "per_page": 20})
    assert len(last.json()["items"]) == 14 and last.json()["next_page"] is None
    beyond = await client.get("/users", params={"page": 9, "per_page": 20})
    assert beyond.json() == {"items": [], "next_page": None}


async def test_page_numbers_start_at_one(client: httpx.AsyncClient) -> None:
    assert (await client.get("/users", params={"page": 0})).status_code == 422
    first = (await client.get("/users", params={"per_page": 2})).json()
    assert first["next_page"] == 2
    assert [str(user["id"]) for user in first["items"]] == SAMPLE_USER_IDS[:2]


async def test_per_page_is_capped() -> None:
    app = create_app(users=1200)
    async with _client(app) as client:
        body = (await client.get("/users", params={"per_page": 10_000})).json()
    assert len(body["items"]) == MAX_PER_PAGE
    assert body["next_page"] == 2


async def test_generated_users_fit_the_contract(client: httpx.AsyncClient) -> None:
    users = await _all(client, "users", per_page=100)
    for user in users:
        User.model_validate(user)
        assert set(user["agreements"]) == {"data_processing", "marketing"}
    assert any(isinstance(user["id"], str) for user in users)
    assert any(isinstance(user["id"], int) for user in users)
    assert len({user["phone"] for user in users}) > 10


async def test_orders_fit_the_contract_and_belong_to_generated_users(client: httpx.AsyncClient) -> None:
    users = {str(user["id"]) for user in await _all(client, "users", per_page=100)}
    orders = await _all(client, "orders", per_page=7)
    assert len(orders) == 30
    feed_ids = {diet.item_xml_id for diet in CATALOG}
    assert feed_ids == {item.custom_id for item in parse_feed(SAMPLE_FEED.read_bytes()).items}
    for order in orders:
        parsed = Order.model_validate(order)
        assert str(order["user"]["id"]) in users - set(SAMPLE_USER_IDS)
        assert 1 <= len(order["items"]) <= 2
        assert order["status"] in {"new", "paid", "cancelled"}
        if order["status"] == "paid":
            assert order["paid_at"] is not None
        if order["status"] == "new":
            assert order["paid_at"] is None
        for item in parsed.items:
            assert item.item_xml_id in feed_ids
            assert item.delivery_dates == sorted(item.delivery_dates)
    statuses = [order["status"] for order in orders]
    assert statuses.count("paid") > len(orders) / 2


async def test_orders_use_sample_users_when_none_are_generated() -> None:
    app = create_app(orders=10)
    async with _client(app) as client:
        orders = await _all(client, "orders", per_page=500)
    assert {str(order["user"]["id"]) for order in orders} <= set(SAMPLE_USER_IDS)


async def _first_pages(client: httpx.AsyncClient) -> list[Any]:
    return [(await client.get(f"/{what}", params={"per_page": 30})).json() for what in ("users", "orders")]


async def test_deterministic_across_calls_and_apps() -> None:
    async with _client(create_app(users=30, orders=30, seed=3)) as one:
        first = await _first_pages(one)
        again = await _first_pages(one)
    async with _client(create_app(users=30, orders=30, seed=3)) as two:
        other_app = await _first_pages(two)
    async with _client(create_app(users=30, orders=30, seed=4)) as three:
        other_seed = await _first_pages(three)
    assert first == again == other_app
    assert first != other_seed


async def test_a_page_out_of_20000_generates_only_that_page() -> None:
    app = create_app(users=20_000, orders=20_000)
    async with _client(app) as client:
        users = await client.get("/users", params={"page": 30, "per_page": 500})
        assert users.json()["next_page"] == 31
        state = (await client.get("/_fake/state")).json()
        assert state["generated"] == {"users": 500, "orders": 0}

        orders = await client.get("/orders", params={"page": 40, "per_page": 500})
        assert orders.json()["next_page"] is None
        state = (await client.get("/_fake/state")).json()
    # each order embeds its customer, generated on the fly as well
    assert state["generated"] == {"users": 1000, "orders": 500}
    assert state["users_total"] == 20_004


# --- agreements -------------------------------------------------------------------------------


async def test_agreements_recorded_in_order(app: FastAPI, client: httpx.AsyncClient) -> None:
    second_page = (await client.get("/users", params={"page": 2, "per_page": 4})).json()
    generated_id = str(second_page["items"][0]["id"])
    for user_id, marketing in (("1043", True), (generated_id, False), ("1043", False)):
        response = await client.put(f"/users/{user_id}/agreements", json={"marketing": marketing})
        assert response.status_code == 200

    state = (await client.get("/_fake/state")).json()
    assert [(a["user_id"], a["marketing"]) for a in state["agreements"]] == [
        ("1043", True),
        (generated_id, False),
        ("1043", False),
    ]
    assert all(a["at"] for a in state["agreements"])
    assert state["requests"]["PUT /users/{id}/agreements"] == 3

    users = (await client.get("/users", params={"per_page": 5})).json()["items"]
    assert users[0]["agreements"]["marketing"] is False
    assert users[4]["agreements"]["marketing"] is False


async def test_agreement_for_unknown_user_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.put("/users/999999/agreements", json={"marketing": True})).status_code == 404
    assert (await client.put("/users/abc/agreements", json={"marketing": True})).status_code == 404
    assert (await client.get("/_fake/state")).json()["agreements"] == []


async def test_agreement_must_be_boolean(client: httpx.AsyncClient) -> None:
    response = await client.put("/users/1043/agreements", json={"marketing": "yes"})
    assert response.status_code == 422


async def test_explicit_user_can_be_added(app: FastAPI, client: httpx.AsyncClient) -> None:
    app.state.fake.add_user({"id": 777, "email": "ewa.nowak@example.com", "agreements": {"marketing": False}})
    assert (await client.put("/users/777/agreements", json={"marketing": True})).status_code == 200
    users = (await client.get("/users", params={"per_page": 5})).json()["items"]
    assert users[4]["id"] == 777 and users[4]["agreements"]["marketing"] is True


# --- faults, rate limit, reset, feed replacement -------------------------------------------------


async def test_outage_switch(client: httpx.AsyncClient) -> None:
    assert (await client.post("/_fake/config", json={"down": True})).status_code == 200
    assert (await client.get("/users")).status_code == 503
    assert (await client.put("/users/1043/agreements", json={"marketing": True})).status_code == 503
    assert (await client.get("/feed.xml")).status_code == 503
    assert (await client.get("/_fake/health")).status_code == 200  # control paths never fail
    await client.post("/_fake/config", json={"down": False})
    assert (await client.get("/users")).status_code == 200
    state = (await client.get("/_fake/state")).json()
    assert state["agreements"] == []
    assert state["statuses"] == {"503": 3, "200": 1}


async def test_status_sequence_then_normal(client: httpx.AsyncClient) -> None:
    await client.post("/_fake/config", json={"status_sequence": [500, 429]})
    assert (await client.get("/orders")).status_code == 500
    throttled = await client.get("/orders")
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "1"
    assert (await client.get("/orders")).status_code == 200


async def test_bad_config_is_refused(client: httpx.AsyncClient) -> None:
    assert (await client.post("/_fake/config", json={"nonsense": 1})).status_code == 422
    assert (await client.post("/_fake/config", json={"rate_limit": -1})).status_code == 422


async def test_rate_limit_answers_429_with_retry_after(client: httpx.AsyncClient) -> None:
    await client.post("/_fake/config", json={"rate_limit": 0.01})  # one call, then one per 100 s
    assert (await client.get("/users")).status_code == 200
    limited = await client.get("/users")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    await client.post("/_fake/config", json={"rate_limit": None})
    assert (await client.get("/users")).status_code == 200


def test_token_bucket_refills() -> None:
    now = [0.0]
    bucket = TokenBucket(2, clock=lambda: now[0])
    assert [bucket.take() for _ in range(2)] == [0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.take() == 0.0


async def test_reset(client: httpx.AsyncClient) -> None:
    await client.put("/users/1043/agreements", json={"marketing": True})
    await client.post("/_fake/config", json={"down": True})
    assert (await client.post("/_fake/reset")).status_code == 200
    state = (await client.get("/_fake/state")).json()
    assert state["agreements"] == [] and state["requests"] == {}
    assert state["config"]["down"] is False
    users = (await client.get("/users", params={"per_page": 1})).json()["items"]
    assert users[0]["agreements"]["marketing"] is False


async def test_feed_can_be_replaced_to_drop_an_item(client: httpx.AsyncClient) -> None:
    original = (await client.get("/feed.xml")).content
    start = original.index(b"<item>\n      <g:id>20-4-90")
    end = original.index(b"</item>", start) + len(b"</item>")
    assert (await client.put("/_fake/feed", content=original[:start] + original[end:])).status_code == 200
    served = (await client.get("/feed.xml")).content
    remaining = [item.custom_id for item in parse_feed(served).items]
    assert remaining == ["12-3-41", "9-2-30", "15-1-77", "31-1-12"]


async def test_feed_from_a_given_file(tmp_path: Path) -> None:
    path = tmp_path / "feed.xml"
    path.write_bytes(b"<rss><channel></channel></rss>")
    async with _client(create_app(feed_path=path)) as client:
        assert (await client.get("/feed.xml")).content == path.read_bytes()
