"""The fake User.com server: API behaviour, fault injection, control endpoints."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.fakes.faults import ConnectionDropped, FaultConfig, FaultConfigError
from app.fakes.usercom import (
    PRODUCT_EVENT_TYPES,
    create_app,
    dump,
    fake_of,
    max_rate_in_window,
    parse_args,
    running_server,
)

KEY = "test-usercom-key"
HEADERS = {"Authorization": f"Token {KEY}", "Accept": "*/*; version=2"}
BASE = "http://usercom.test/api/public/"
CONTROL = "http://usercom.test/_fake/"
TS = 1_767_225_600  # 2026-01-01T00:00:00Z


def make_client(app: Any, headers: dict[str, str] | None = HEADERS) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE, headers=headers or {})


@pytest.fixture
def app() -> Any:
    return create_app()


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(app) as c:
        yield c


async def make_user(client: httpx.AsyncClient, custom_id: str = "3007", **attrs: Any) -> int:
    response = await client.post("users/update_or_create/", json={"custom_id": custom_id, **attrs})
    assert response.status_code == 200, response.text
    return response.json()["id"]


async def make_product(client: httpx.AsyncClient, custom_id: str = "1_2_3_900", **attrs: Any) -> dict:
    body = {"custom_id": custom_id, "name": "Office 800 kcal", **attrs}
    response = await client.post("products/", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def event_body(**overrides: Any) -> dict[str, Any]:
    return {"user_custom_id": "3007", "event_type": "purchase", "timestamp": TS, "data": {}, **overrides}


# --- request gate ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Accept": "*/*; version=2"},
        {"Authorization": "Token wrong", "Accept": "*/*; version=2"},
        {"Authorization": f"Bearer {KEY}", "Accept": "*/*; version=2"},
    ],
)
async def test_bad_or_missing_token_is_401(app: Any, headers: dict[str, str]) -> None:
    async with make_client(app, headers) as c:
        response = await c.get("users-by-id/3007/")
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}


@pytest.mark.parametrize("accept", [None, "application/json", "*/*; version=1"])
async def test_missing_version_header_is_400(app: Any, accept: str | None) -> None:
    headers = {"Authorization": f"Token {KEY}"} | ({"Accept": accept} if accept else {})
    async with make_client(app, headers) as c:
        response = await c.post("users/update_or_create/", json={"custom_id": "1"})
    assert response.status_code == 400
    assert "version=2" in response.json()["detail"]


async def test_path_without_trailing_slash_is_404_even_without_auth(app: Any) -> None:
    for headers in (HEADERS, {}):
        async with make_client(app, headers) as c:
            response = await c.post("users/update_or_create", json={"custom_id": "1"})
        assert response.status_code == 404
        assert "ends with '/'" in response.json()["detail"]
    assert fake_of(app).users == {}


async def test_unknown_route_is_404_not_found(client: httpx.AsyncClient) -> None:
    response = await client.put("products-by-id/x/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


# --- users -------------------------------------------------------------------------------------------


async def test_update_or_create_creates_then_merges(app: Any, client: httpx.AsyncClient) -> None:
    first = await client.post(
        "users/update_or_create/",
        json={"custom_id": "3007", "email": "a@b.pl", "total_spent": 10, "agreement_marketing": True},
    )
    assert first.status_code == 200
    assert first.json()["created"] is True
    second = await client.post(
        "users/update_or_create/",
        json={"custom_id": "3007", "first_name": "Ala", "account_creation_date": "2024-01-15T10:30:00Z"},
    )
    assert second.json() == {"created": False, "id": first.json()["id"]}

    user = fake_of(app).user("3007")
    assert user == {
        "id": first.json()["id"],
        "custom_id": "3007",
        "email": "a@b.pl",
        "total_spent": 10,
        "agreement_marketing": True,
        "first_name": "Ala",
        "account_creation_date": "2024-01-15T10:30:00Z",
    }
    shown = (await client.get("users-by-id/3007/")).json()
    assert shown["email"] == "a@b.pl"
    assert {"name": "total_spent", "name_std": "total_spent", "value": 10} in shown["attributes"]
    by_id = (await client.get(f"users/{user['id']}/")).json()
    assert by_id["custom_id"] == "3007"


async def test_null_clears_an_attribute(app: Any, client: httpx.AsyncClient) -> None:
    await make_user(client, miejscowosc="Kraków", phone_number="+48500100200")
    await make_user(client, miejscowosc=None, phone_number=None)
    assert fake_of(app).user("3007")["miejscowosc"] is None
    assert fake_of(app).user("3007")["phone_number"] is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("favourite_colour", "green"),  # unknown attribute
        ("attributes", {"total_spent": 1}),  # nested form is not accepted
        ("total_spent", "12.50"),
        ("total_spent", True),
        ("agreement_marketing", "yes"),
        ("client_panel", 1),
        ("active_code", 123),
        ("account_creation_date", "2024-01-15 10:30:00"),
        ("account_creation_date", "2024-01-15T10:30:00"),  # no timezone
        ("account_creation_date", 1705314600),
        ("first_name", "A" * 41),
        ("last_name", "B" * 41),
        ("phone_number", "500100200"),
        ("phone_number", "+48 500 100 200"),
        ("email", "not-an-email"),
        ("unsubscribed", "false"),
    ],
)
async def test_invalid_user_attribute_is_400(
    app: Any, client: httpx.AsyncClient, field: str, value: Any
) -> None:
    response = await client.post("users/update_or_create/", json={"custom_id": "3007", field: value})
    assert response.status_code == 400
    assert list(response.json()["errors"]) == [field]
    assert fake_of(app).users == {}


async def test_valid_edge_values_are_accepted(client: httpx.AsyncClient) -> None:
    await make_user(
        client,
        first_name="A" * 40,
        phone_number="+48500100200",
        total_spent=12.5,
        account_creation_date="2024-01-15T10:30:00.123456+01:00",
        unsubscribed=False,
        city="Kraków",
    )


async def test_update_or_create_needs_a_string_custom_id(client: httpx.AsyncClient) -> None:
    assert (await client.post("users/update_or_create/", json={"email": "a@b.pl"})).status_code == 400
    assert (await client.post("users/update_or_create/", json={"custom_id": 3007})).status_code == 400
    bad_json = await client.post("users/update_or_create/", content=b"{nope")
    assert bad_json.status_code == 400


async def test_put_and_delete_users(app: Any, client: httpx.AsyncClient) -> None:
    user_id = await make_user(client, email="a@b.pl")
    response = await client.put("users-by-id/3007/", json={"agreement_marketing": False})
    assert response.status_code == 200
    assert fake_of(app).user("3007")["agreement_marketing"] is False
    assert (await client.put("users-by-id/nobody/", json={})).status_code == 404

    assert (await client.delete("users-by-id/3007/")).status_code == 204
    assert (await client.delete("users-by-id/3007/")).status_code == 404
    assert (await client.get(f"users/{user_id}/")).status_code == 404

    other = await make_user(client, "3008")
    assert (await client.delete(f"users/{other}/")).status_code == 204
    state = (await client.get(CONTROL + "state")).json()
    assert state["users"] == {}
    assert state["deleted_users"] == [
        {"id": user_id, "custom_id": "3007"},
        {"id": other, "custom_id": "3008"},
    ]


# --- products ----------------------------------------------------------------------------------------


async def test_product_create_get_update_delete(app: Any, client: httpx.AsyncClient) -> None:
    product = await make_product(client, price=49.9, kcal=800, active=True, order_time="2026-07-06T12:03:11Z")
    assert isinstance(product["id"], int)
    assert product["custom_id"] == "1_2_3_900"

    details = await client.get("products-by-id/1_2_3_900/details/")
    assert details.status_code == 200
    assert details.json()["id"] == product["id"]
    assert {"name": "kcal", "name_std": "kcal", "value": 800} in details.json()["attributes"]
    assert (await client.get(f"products/{product['id']}/")).json()["name"] == "Office 800 kcal"

    updated = await client.put(f"products/{product['id']}/", json={"active": False, "price": 45})
    assert updated.status_code == 200
    assert fake_of(app).product("1_2_3_900") == {
        "id": product["id"],
        "custom_id": "1_2_3_900",
        "name": "Office 800 kcal",
        "price": 45,
        "kcal": 800,
        "active": False,
        "order_time": "2026-07-06T12:03:11Z",
    }
    assert (await client.put("products/999999/", json={"active": False})).status_code == 404
    assert (await client.delete(f"products/{product['id']}/")).status_code == 204
    assert (await client.get(f"products/{product['id']}/")).status_code == 404


async def test_unknown_product_details_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("products-by-id/nope/details/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


@pytest.mark.parametrize(
    "body",
    [
        {"custom_id": "p1"},  # no name
        {"name": "Office"},  # no custom_id
        {"custom_id": "p1", "name": "Office", "kcal": 800.5},
        {"custom_id": "p1", "name": "Office", "daily_meals": True},
        {"custom_id": "p1", "name": "Office", "active": "true"},
        {"custom_id": "p1", "name": "Office", "price": "49.90"},
        {"custom_id": "p1", "name": "Office", "order_time": "06.07.2026"},
        {"custom_id": "p1", "name": "Office", "colour": "red"},
        {"custom_id": "p1", "name": "x" * 257},
        {"custom_id": "p1", "name": None},
    ],
)
async def test_invalid_product_is_400(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await client.post("products/", json=body)
    assert response.status_code == 400
    assert response.json()["errors"]


async def test_duplicate_product_custom_id_is_400(client: httpx.AsyncClient) -> None:
    await make_product(client)
    response = await client.post("products/", json={"custom_id": "1_2_3_900", "name": "Again"})
    assert response.status_code == 400
    assert "custom_id" in response.json()["errors"]


# --- product events ----------------------------------------------------------------------------------


async def test_product_event_overwrites_product_attributes(app: Any, client: httpx.AsyncClient) -> None:
    await make_user(client)
    await make_product(client, active=True, kcal=800)
    data = {"active": False, "price": 39.0, "custom_data": {"order_item": 7}}
    response = await client.post(
        "products-by-id/1_2_3_900/product_event/", json=event_body(event_type="refund", data=data)
    )
    assert response.status_code == 201
    assert isinstance(response.json()["id"], int)

    fake = fake_of(app)
    product = fake.product("1_2_3_900")
    assert product["active"] is False and product["price"] == 39.0 and product["kcal"] == 800
    assert "custom_data" not in product
    [event] = fake.snapshot()["product_events"]
    assert event | {"id": 0, "user_id": 0, "product_id": 0} == {
        "id": 0,
        "user_id": 0,
        "product_id": 0,
        "product_custom_id": "1_2_3_900",
        "user_custom_id": "3007",
        "event_type": "refund",
        "timestamp": TS,
        "data": data,
    }


async def test_product_event_by_numeric_ids(app: Any, client: httpx.AsyncClient) -> None:
    user_id = await make_user(client)
    product = await make_product(client)
    body = {"user_id": user_id, "event_type": "order", "timestamp": TS, "data": {"kcal": 1200}}
    response = await client.post(f"products/{product['id']}/product_event/", json=body)
    assert response.status_code == 201
    assert fake_of(app).product_events[0]["user_custom_id"] == "3007"
    assert fake_of(app).product("1_2_3_900")["kcal"] == 1200


async def test_every_listed_event_type_is_accepted(client: httpx.AsyncClient) -> None:
    await make_user(client)
    await make_product(client)
    for event_type in PRODUCT_EVENT_TYPES:
        response = await client.post(
            "products-by-id/1_2_3_900/product_event/", json=event_body(event_type=event_type)
        )
        assert response.status_code == 201, event_type
    assert len(PRODUCT_EVENT_TYPES) == 16


@pytest.mark.parametrize(
    "overrides",
    [
        {"event_type": "paid"},
        {"event_type": "Purchase"},
        {"timestamp": TS * 1000},  # milliseconds
        {"timestamp": "2026-01-01T00:00:00Z"},
        {"timestamp": float(TS)},
        {"data": {"kcal": "800"}},
        {"data": {"colour": "red"}},
        {"data": {"custom_data": "not an object"}},
        {"data": None},
        {"user_id": 10001},  # both user_custom_id and user_id
    ],
)
async def test_invalid_product_event_is_400(
    app: Any, client: httpx.AsyncClient, overrides: dict[str, Any]
) -> None:
    await make_user(client)
    await make_product(client)
    response = await client.post("products-by-id/1_2_3_900/product_event/", json=event_body(**overrides))
    assert response.status_code == 400
    assert response.json()["errors"]
    assert fake_of(app).product_events == []


async def test_product_event_for_unknown_product_is_404_and_creates_nothing(
    app: Any, client: httpx.AsyncClient
) -> None:
    await make_user(client)
    response = await client.post("products-by-id/9_9_9_9/product_event/", json=event_body())
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
    assert (await client.post("products/50999/product_event/", json=event_body())).status_code == 404
    assert fake_of(app).products == {}


async def test_product_event_for_unknown_user_is_404(app: Any, client: httpx.AsyncClient) -> None:
    await make_product(client)
    response = await client.post("products-by-id/1_2_3_900/product_event/", json=event_body())
    assert response.status_code == 404
    assert response.json() == {"detail": "User not found."}
    assert fake_of(app).users == {} and fake_of(app).product_events == []


# --- rate limit ----------------------------------------------------------------------------------------


async def test_rate_limit_answers_429_with_retry_after() -> None:
    app = create_app(rate_limit=5)
    async with make_client(app) as c:
        statuses = [(await c.get("users-by-id/x/")) for _ in range(7)]
    assert [r.status_code for r in statuses] == [404] * 5 + [429, 429]
    assert statuses[5].headers["Retry-After"] == "1"
    assert statuses[5].json()["detail"].startswith("Too many requests")
    state = fake_of(app).snapshot()
    assert state["request_count"] == 7
    assert state["rate_limited_count"] == 2
    assert state["max_rate_1s"] == 7.0
    assert state["config"]["rate_limit"] == 5


async def test_rate_limit_can_be_lifted_and_unauthenticated_calls_do_not_count() -> None:
    app = create_app(rate_limit=2)
    async with make_client(app, {"Accept": "*/*; version=2"}) as anonymous:
        for _ in range(5):
            assert (await anonymous.get("users-by-id/x/")).status_code == 401
    async with make_client(app) as c:
        assert [(await c.get("users-by-id/x/")).status_code for _ in range(3)] == [404, 404, 429]
        fake_of(app).configure(rate_limit=None)
        assert (await c.get("users-by-id/x/")).status_code == 404


def test_max_rate_in_window_uses_any_window() -> None:
    assert max_rate_in_window([]) == 0
    assert max_rate_in_window([0.0, 0.5, 0.99, 1.0, 1.5, 1.98]) == 4.0  # 0.99, 1.0, 1.5, 1.98
    assert max_rate_in_window([0.0, 0.1, 0.2, 0.3], seconds=0.5) == 8.0
    assert max_rate_in_window([0.0, 1.0, 2.0]) == 1.0


# --- faults --------------------------------------------------------------------------------------------


async def test_down_answers_503_but_control_endpoints_work(app: Any, client: httpx.AsyncClient) -> None:
    fake_of(app).configure(down=True)
    response = await client.post("users/update_or_create/", json={"custom_id": "1"})
    assert response.status_code == 503
    assert "detail" in response.json()
    assert (await client.get(CONTROL + "health")).json() == {"status": "ok"}
    assert fake_of(app).users == {}
    fake_of(app).configure(down=False)
    assert (await client.post("users/update_or_create/", json={"custom_id": "1"})).status_code == 200


async def test_error_rate(app: Any, client: httpx.AsyncClient) -> None:
    fake_of(app).configure(error_rate=1.0)
    assert (await client.get("users-by-id/x/")).status_code == 500
    fake_of(app).configure(error_rate=0.5, seed=7)
    statuses = {(await client.get("users-by-id/x/")).status_code for _ in range(40)}
    assert statuses == {404, 500}


async def test_status_sequence_then_normal_answers(app: Any, client: httpx.AsyncClient) -> None:
    response = await client.post(CONTROL + "config", json={"status_sequence": [500, 503, 429]})
    assert response.status_code == 200
    answers = [await client.post("users/update_or_create/", json={"custom_id": "1"}) for _ in range(4)]
    assert [a.status_code for a in answers] == [500, 503, 429, 200]
    assert answers[2].headers["Retry-After"] == "1"
    assert fake_of(app).config()["status_sequence"] == []


async def test_429_storm_then_recovery(app: Any, client: httpx.AsyncClient) -> None:
    fake_of(app).configure(storm_seconds=0.2, retry_after=2)
    storm = [await client.get("users-by-id/x/") for _ in range(3)]
    assert {r.status_code for r in storm} == {429}
    assert storm[0].headers["Retry-After"] == "2"
    await asyncio.sleep(0.25)
    assert (await client.get("users-by-id/x/")).status_code == 404
    assert fake_of(app).snapshot()["rate_limited_count"] == 3


async def test_delay_slows_answers(app: Any, client: httpx.AsyncClient) -> None:
    fake_of(app).faults.delay_seconds = 0.2
    started = time.monotonic()
    assert (await client.get("users-by-id/x/")).status_code == 404
    assert time.monotonic() - started >= 0.2
    with pytest.raises(TimeoutError):  # "timeout" mode: longer than the client waits
        await asyncio.wait_for(client.get("users-by-id/x/"), timeout=0.05)


async def test_drop_connections_in_process_raises_a_transport_error(
    app: Any, client: httpx.AsyncClient
) -> None:
    fake_of(app).configure(status_sequence=["drop"])
    with pytest.raises(httpx.RemoteProtocolError) as caught:
        await client.post("users/update_or_create/", json={"custom_id": "1"})
    assert isinstance(caught.value, ConnectionDropped)
    assert caught.value.request.url.path == "/api/public/users/update_or_create/"
    assert (await client.post("users/update_or_create/", json={"custom_id": "1"})).status_code == 200
    rejected = fake_of(app).snapshot()["rejected"]
    assert rejected == [
        {
            "method": "POST",
            "path": "/api/public/users/update_or_create/",
            "status": None,
            "reason": "connection dropped (injected fault)",
        }
    ]


async def test_bad_fault_settings_are_rejected(app: Any, client: httpx.AsyncClient) -> None:
    for body in ({"error_rate": 2}, {"down": "yes"}, {"status_sequence": [500, "boom"]}, {"flood": True},
                 {"rate_limit": -1}):
        response = await client.post(CONTROL + "config", json=body)
        assert response.status_code == 400, body
    assert fake_of(app).config()["error_rate"] == 0.0
    with pytest.raises(FaultConfigError):
        FaultConfig().update({"delay_seconds": -1})


# --- control endpoints, state, dump -------------------------------------------------------------------


async def test_state_lists_everything_and_rejections(client: httpx.AsyncClient) -> None:
    await make_user(client, email="a@b.pl", agreement_marketing=True)
    await make_product(client)
    await client.post("products-by-id/1_2_3_900/product_event/", json=event_body())
    await client.post("users/update_or_create/", json={"custom_id": "1", "colour": "red"})

    state = (await client.get(CONTROL + "state")).json()
    assert state["users"]["3007"]["agreement_marketing"] is True
    assert state["products"]["1_2_3_900"]["name"] == "Office 800 kcal"
    assert [e["event_type"] for e in state["product_events"]] == ["purchase"]
    assert state["request_count"] == 4
    assert state["rate_limited_count"] == 0
    assert state["max_rate_1s"] == 4.0
    [rejected] = state["rejected"]
    assert rejected["status"] == 400 and "colour" in rejected["reason"]
    with_log = (await client.get(CONTROL + "state", params={"requests": "true"})).json()
    assert [r["status"] for r in with_log["requests"]] == [200, 201, 201, 400]


async def test_reset_forgets_everything(app: Any, client: httpx.AsyncClient) -> None:
    await make_user(client)
    await make_product(client)
    fake_of(app).configure(down=True, rate_limit=3)
    assert (await client.post(CONTROL + "reset")).json() == {"status": "reset"}
    state = (await client.get(CONTROL + "state")).json()
    assert state["users"] == {} and state["products"] == {} and state["request_count"] == 0
    assert state["config"]["down"] is False and state["config"]["rate_limit"] is None
    assert await make_user(client) == 10001  # ids start again


async def test_two_apps_do_not_share_state() -> None:
    first, second = create_app(), create_app(api_key="other")
    async with make_client(first) as c:
        await make_user(c)
    assert fake_of(first).user("3007") is not None
    assert fake_of(second).users == {}
    async with make_client(second) as c:
        assert (await c.get("users-by-id/3007/")).status_code == 401


async def test_dump_is_sorted_and_readable(app: Any, client: httpx.AsyncClient) -> None:
    for custom_id in ("3008", "3007"):
        await make_user(client, custom_id, email=f"{custom_id}@x.pl")
    await make_product(client, kcal=800)
    await client.post("products-by-id/1_2_3_900/product_event/", json=event_body(timestamp=TS + 60))
    await client.post("products-by-id/1_2_3_900/product_event/", json=event_body(event_type="order"))

    text = dump(fake_of(app))
    assert text == dump((await client.get(CONTROL + "state")).json())
    assert text.index("  3007\n") < text.index("  3008\n")
    assert '    email: "3007@x.pl"' in text
    assert "    kcal: 800" in text
    assert text.index("order") < text.index("purchase")  # by timestamp
    assert "2026-01-01T00:00:00Z  order" in text
    assert "Requests:" in dump(fake_of(app), include_stats=True)


def test_cli_arguments() -> None:
    args = parse_args(["--port", "8111", "--api-key", "K", "--rate-limit", "20"])
    assert (args.host, args.port, args.api_key, args.rate_limit) == ("127.0.0.1", 8111, "K", 20.0)
    assert parse_args([]).rate_limit is None


# --- under a real uvicorn server -----------------------------------------------------------------------


async def test_real_server_drops_connections_and_times_out() -> None:
    app = create_app()
    with running_server(app) as base_url:
        async with httpx.AsyncClient(base_url=f"{base_url}/api/public/", headers=HEADERS, timeout=2) as c:
            assert (await c.post("users/update_or_create/", json={"custom_id": "1"})).status_code == 200

            fake_of(app).configure(drop_connections=True)
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                await c.get("users-by-id/1/")

            fake_of(app).configure(drop_connections=False, delay_seconds=0.5)
            with pytest.raises(httpx.ReadTimeout):
                await c.get("users-by-id/1/", timeout=0.1)

            fake_of(app).configure(delay_seconds=0)
            assert (await c.get("users-by-id/1/")).status_code == 200
            state = (await c.get(f"{base_url}/_fake/state")).json()
    assert state["rejected"][0]["status"] is None
