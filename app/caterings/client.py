"""The Caterings API adapter. Caterings publishes no API documentation: every assumption about
its endpoints lives in this one module, so it can follow the real API once one is known."""

from __future__ import annotations

from typing import Any

import httpx

from app.ratelimit import AdaptiveRateLimiter
from app.upstream import CallObserver, RateLimitedHttp, UpstreamError

SYSTEM = "caterings"


def build_http(base_url: str, token: str, brand_id: str | None, timeout: float) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if brand_id:
        headers["x-g-brand"] = str(brand_id)
    return httpx.AsyncClient(base_url=base_url.rstrip("/") + "/", headers=headers, timeout=timeout)


class CateringsClient:
    def __init__(self, http: httpx.AsyncClient, limiter: AdaptiveRateLimiter, observer: CallObserver | None = None):
        self._api = RateLimitedHttp(SYSTEM, http, limiter, observer)
        self.http = http

    @property
    def limiter(self) -> AdaptiveRateLimiter:
        return self._api.limiter

    async def set_marketing_consent(self, user_id: str, marketing: bool) -> None:
        await self._api.call("PUT", f"users/{user_id}/agreements", json={"marketing": marketing})

    async def list_page(self, resource: str, page: int, per_page: int) -> tuple[list[dict[str, Any]], int | None]:
        """One page of ``users`` or ``orders``: its items and the next page number (None at the end)."""
        response = await self._api.call("GET", resource, params={"page": page, "per_page": per_page})
        body = response.json()
        items = body.get("items")
        if not isinstance(items, list):
            raise UpstreamError(SYSTEM, response.status_code, f"{resource} page {page} has no items list")
        next_page = body.get("next_page")
        return items, int(next_page) if next_page else None


__all__ = ["CateringsClient", "UpstreamError", "build_http"]
