"""Each delivery kind against User.com, with respx standing in for the HTTP API."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from app import idmap
from app.delivery import plan
from app.delivery.handlers import HANDLERS, HandlerContext
from app.models import Delivery
from app.ratelimit import AdaptiveRateLimiter
from app.upstream import UpstreamError
from app.usercom.client import UserComClient, build_http

BASE = "http://usercom.test/api/public/"


@pytest.fixture
async def ctx(sessions):  # type: ignore[no-untyped-def]
    http = build_http(BASE, "secret-key", 5)
    yield HandlerContext(sessions=sessions, usercom=UserComClient(http, AdaptiveRateLimiter(1000)))
    await http.aclose()


def delivery(kind: str, payload: dict) -> Delivery:  # type: ignore[type-arg]
    return Delivery(id=1, kind=kind, target="usercom", lane="user:1", payload=payload, attempts=0)


async def perform(ctx: HandlerContext, kind: str, payload: dict) -> str:  # type: ignore[type-arg]
    return await HANDLERS[kind](ctx, delivery(kind, payload))


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_user_upsert_sends_headers_and_remembers_the_id(respx_mock, ctx) -> None:  # type: ignore[no-untyped-def]
    route = respx_mock.post("users/update_or_create/").respond(200, json={"created": True, "id": 4711})
    body = {"custom_id": "1043", "email": "anna@example.com"}
    assert await perform(ctx, plan.USER_UPSERT, {"body": body}) == "sent"
    request = route.calls.last.request
    assert request.headers["authorization"] == "Token secret-key"
    assert request.headers["accept"] == "*/*; version=2"
    assert json.loads(request.content) == body
    async with ctx.sessions() as s:
        entry = await idmap.get(s, idmap.USER, "1043")
    assert (entry.usercom_id, entry.email) == (4711, "anna@example.com")


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_an_unchanged_user_is_not_sent_again(respx_mock, ctx) -> None:  # type: ignore[no-untyped-def]
    route = respx_mock.post("users/update_or_create/").respond(200, json={"created": False, "id": 1})
    body = {"custom_id": "1043", "first_name": "Anna"}
    await perform(ctx, plan.USER_UPSERT, {"body": body})
    assert await perform(ctx, plan.USER_UPSERT, {"body": dict(body)}) == "skipped_unchanged"
    assert await perform(ctx, plan.USER_UPSERT, {"body": {**body, "first_name": "Ania"}}) == "sent"
    assert route.call_count == 2


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_product_upsert_finds_an_existing_product_before_creating(respx_mock, ctx) -> None:  # type: ignore[no-untyped-def]
    respx_mock.get("products-by-id/12_3_41_50231/details/").respond(200, json={"id": 77, "custom_id": "12_3_41_50231"})
    put = respx_mock.put("products/77/").respond(200, json={"id": 77})
    create = respx_mock.post("products/").respond(201, json={"id": 78})
    body = {"custom_id": "12_3_41_50231", "name": "Office 800 kcal", "active": True}
    assert await perform(ctx, plan.PRODUCT_UPSERT, {"custom_id": "12_3_41_50231", "body": body}) == "sent"
    assert not create.called
    assert json.loads(put.calls.last.request.content) == {"name": "Office 800 kcal", "active": True}


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_product_upsert_creates_then_updates_by_stored_id(respx_mock, ctx) -> None:  # type: ignore[no-untyped-def]
    respx_mock.get("products-by-id/p1/details/").respond(404, json={"detail": "Not found."})
    create = respx_mock.post("products/").respond(201, json={"id": 5})
    put = respx_mock.put("products/5/").respond(200, json={"id": 5})
    await perform(ctx, plan.PRODUCT_UPSERT, {"custom_id": "p1", "body": {"custom_id": "p1", "name": "A", "active": True}})
    await perform(ctx, plan.PRODUCT_UPSERT, {"custom_id": "p1", "body": {"custom_id": "p1", "name": "A", "active": False}})
    assert create.call_count == 1
    assert json.loads(put.calls.last.request.content) == {"name": "A", "active": False}


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_event_on_unknown_diet_simple_creates_it_and_sends_again(respx_mock, ctx) -> None:  # type: ignore[no-untyped-def]
    event = respx_mock.post("products-by-id/12-3-41/product_event/")
    event.side_effect = [httpx.Response(404, json={"detail": "Not found."}), httpx.Response(201, json={"id": 9})]
    respx_mock.get("products-by-id/12-3-41/details/").respond(404, json={"detail": "Not found."})
    create = respx_mock.post("products/").respond(201, json={"id": 3})
    payload = {
        "product_custom_id": "12-3-41",
        "body": {"user_custom_id": "1043", "event_type": "purchase", "timestamp": 1, "data": {}},
        "create_if_missing": {"custom_id": "12-3-41", "name": "Office 800 kcal"},
    }
    assert await perform(ctx, plan.PRODUCT_EVENT, payload) == "sent_after_create"
    assert json.loads(create.calls.last.request.content) == {"custom_id": "12-3-41", "name": "Office 800 kcal"}
    assert event.call_count == 2


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_event_404_for_a_known_product_means_the_user_is_missing(respx_mock, ctx) -> None:  # type: ignore[no-untyped-def]
    respx_mock.post("products-by-id/12-3-41/product_event/").respond(404, json={"detail": "User not found."})
    respx_mock.get("products-by-id/12-3-41/details/").respond(200, json={"id": 3})
    create = respx_mock.post("products/")
    with pytest.raises(UpstreamError) as error:
        await perform(ctx, plan.PRODUCT_EVENT, {"product_custom_id": "12-3-41", "body": {"user_custom_id": "9"}})
    assert error.value.status == 404
    assert not create.called


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_delete_of_an_unknown_user_is_done_not_an_error(respx_mock, ctx) -> None:  # type: ignore[no-untyped-def]
    respx_mock.delete("users-by-id/3007/").respond(404, json={"detail": "Not found."})
    assert await perform(ctx, plan.USER_DELETE, {"custom_id": "3007"}) == "already_absent"


@pytest.mark.parametrize(
    ("response", "status", "retry_after"),
    [
        (httpx.Response(429, headers={"Retry-After": "7"}), 429, 7.0),
        (httpx.Response(503), 503, None),
        (httpx.Response(400, json={"errors": {"kcal": ["not an integer"]}}), 400, None),
    ],
)
@respx.mock(base_url=BASE, assert_all_called=False)
async def test_failures_surface_with_status_and_retry_after(respx_mock, ctx, response, status, retry_after) -> None:  # type: ignore[no-untyped-def]
    respx_mock.post("users/update_or_create/").mock(return_value=response)
    with pytest.raises(UpstreamError) as error:
        await perform(ctx, plan.USER_UPSERT, {"body": {"custom_id": "1"}})
    assert (error.value.status, error.value.retry_after) == (status, retry_after)


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_a_transport_error_is_an_upstream_error_without_status(respx_mock, ctx) -> None:  # type: ignore[no-untyped-def]
    respx_mock.post("users/update_or_create/").mock(side_effect=httpx.ConnectTimeout("timed out"))
    with pytest.raises(UpstreamError) as error:
        await perform(ctx, plan.USER_UPSERT, {"body": {"custom_id": "1"}})
    assert error.value.status is None
