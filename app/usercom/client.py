"""The User.com REST client: the few calls the bridge makes, every one through the limiter."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from app.ratelimit import AdaptiveRateLimiter
from app.upstream import CallObserver, RateLimitedHttp, UpstreamError

SYSTEM = "usercom"


def build_http(base_url: str, api_key: str, timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/") + "/",
        headers={
            "Authorization": f"Token {api_key}",
            # The version header changes what custom_id and user_id mean: always v2.
            "Accept": "*/*; version=2",
            "Content-Type": "application/json",
        },
        timeout=timeout,
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=20),
    )


def _segment(custom_id: str) -> str:
    return quote(custom_id, safe="")


class UserComClient:
    def __init__(self, http: httpx.AsyncClient, limiter: AdaptiveRateLimiter, observer: CallObserver | None = None):
        self._api = RateLimitedHttp(SYSTEM, http, limiter, observer)

    @property
    def limiter(self) -> AdaptiveRateLimiter:
        return self._api.limiter

    async def update_or_create_user(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._api.call("POST", "users/update_or_create/", json=body)
        return response.json()

    async def delete_user(self, custom_id: str) -> bool:
        """True when deleted, False when User.com did not know the user (nothing to do)."""
        response = await self._api.call("DELETE", f"users-by-id/{_segment(custom_id)}/", ok_statuses=(404,))
        return response.status_code != 404

    async def find_product(self, custom_id: str) -> dict[str, Any] | None:
        response = await self._api.call(
            "GET", f"products-by-id/{_segment(custom_id)}/details/", ok_statuses=(404,)
        )
        return None if response.status_code == 404 else response.json()

    async def create_product(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._api.call("POST", "products/", json=body)
        return response.json()

    async def update_product(self, product_id: int, body: dict[str, Any]) -> dict[str, Any] | None:
        """None when User.com no longer has that product id."""
        response = await self._api.call("PUT", f"products/{product_id}/", json=body, ok_statuses=(404,))
        return None if response.status_code == 404 else response.json()

    async def product_event(self, product_custom_id: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """None when User.com answers 404 (the product, or the user, is unknown)."""
        response = await self._api.call(
            "POST", f"products-by-id/{_segment(product_custom_id)}/product_event/", json=body, ok_statuses=(404,)
        )
        return None if response.status_code == 404 else response.json()


__all__ = ["UserComClient", "UpstreamError", "build_http"]
