"""Product events when several deliveries meet a new diet-simple at once (as in a full sync)."""

from __future__ import annotations

import httpx
import pytest
import respx

from app.delivery import plan
from app.delivery.handlers import HANDLERS, HandlerContext
from app.models import Delivery
from app.ratelimit import AdaptiveRateLimiter
from app.upstream import UpstreamError
from app.usercom.client import UserComClient, build_http

BASE = "http://usercom.test/api/public/"
PAYLOAD = {
    "product_custom_id": "12-3-41",
    "body": {"user_custom_id": "1043", "event_type": "purchase", "timestamp": 1, "data": {}},
    "create_if_missing": {"custom_id": "12-3-41", "name": "Office 800 kcal"},
}


@pytest.fixture
async def ctx(sessions):  # type: ignore[no-untyped-def]
    http = build_http(BASE, "secret-key", 5)
    yield HandlerContext(sessions=sessions, usercom=UserComClient(http, AdaptiveRateLimiter(1000)))
    await http.aclose()


async def perform(ctx: HandlerContext) -> str:
    delivery = Delivery(
        id=1, kind=plan.PRODUCT_EVENT, target="usercom", lane="user:1043", payload=PAYLOAD, attempts=0
    )
    return await HANDLERS[plan.PRODUCT_EVENT](ctx, delivery)


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_a_product_created_by_another_delivery_meanwhile_gets_the_event(respx_mock, ctx) -> None:  # type: ignore[no-untyped-def]
    event = respx_mock.post("products-by-id/12-3-41/product_event/")
    event.side_effect = [
        httpx.Response(404, json={"detail": "Not found."}),
        httpx.Response(201, json={"id": 9}),
    ]
    respx_mock.get("products-by-id/12-3-41/details/").respond(200, json={"id": 3})  # exists by now
    create = respx_mock.post("products/")
    assert await perform(ctx) == "sent_on_second_try"
    assert not create.called and event.call_count == 2


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_losing_the_race_to_create_the_product_is_not_an_error(respx_mock, ctx) -> None:  # type: ignore[no-untyped-def]
    event = respx_mock.post("products-by-id/12-3-41/product_event/")
    event.side_effect = [
        httpx.Response(404, json={"detail": "Not found."}),
        httpx.Response(201, json={"id": 9}),
    ]
    details = respx_mock.get("products-by-id/12-3-41/details/")
    details.side_effect = [
        httpx.Response(404, json={"detail": "Not found."}),
        httpx.Response(200, json={"id": 3}),
    ]
    respx_mock.post("products/").respond(
        400, json={"errors": {"custom_id": ["product with this custom_id already exists."]}}
    )
    assert await perform(ctx) == "sent_after_create"
    assert event.call_count == 2


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_a_refused_create_for_another_reason_still_fails(respx_mock, ctx) -> None:  # type: ignore[no-untyped-def]
    respx_mock.post("products-by-id/12-3-41/product_event/").respond(404, json={"detail": "Not found."})
    respx_mock.get("products-by-id/12-3-41/details/").respond(404, json={"detail": "Not found."})
    respx_mock.post("products/").respond(400, json={"errors": {"name": ["too long"]}})
    with pytest.raises(UpstreamError) as error:
        await perform(ctx)
    assert error.value.status == 400
