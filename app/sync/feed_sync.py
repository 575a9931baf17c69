"""Diet-simples from the product feed (contract §5.3) into User.com products.

One run: fetch ``CATERINGS_FEED_URL``, parse it (``app.caterings.feed``), compare each item's
product body with what User.com last confirmed for that custom id (``id_map.payload_hash``,
written by the product handler once User.com answered 2xx), and put in the outbox, in one
transaction, a ``PRODUCT_UPSERT`` (lane ``product:<id>``) for each new or changed item and a
deactivation (``active = false``) for each item that has left the feed. ``feed_products``
remembers which custom ids came from the feed: ``id_map`` product rows also hold diet-variants.

Comparing with the *confirmed* hash rather than with what was last queued means a product update
that ended up dead is sent again by the next run. An item whose update is still waiting in the
outbox is queued again by a run that comes before it is delivered; the handler then skips the
second copy as unchanged, so User.com is not called twice.

An item that left the feed but never reached User.com is only forgotten (there is nothing to
deactivate). A reappearing item differs from its deactivation and is sent again.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import idmap
from app.caterings.feed import FeedError, FeedResult, deactivation_body, diff_feed, parse_feed, product_hash
from app.delivery import repository
from app.delivery.plan import PRODUCT_UPSERT, PlannedDelivery, product_lane
from app.models import FeedProduct, IdMapEntry, utcnow

log = structlog.get_logger("app.sync.feed")

FEED_MAX_BYTES = 20 * 1024 * 1024
FEED_TIMEOUT_SECONDS = 30.0


class FeedUnavailable(Exception):
    """The feed could not be fetched or read; nothing was queued. ``status`` suits an API answer."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class FeedReport:
    items: int = 0
    sent: int = 0
    unchanged: int = 0
    deactivated: int = 0
    sent_ids: list[str] = field(default_factory=list)
    deactivated_ids: list[str] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def fetch_feed(url: str, *, http: httpx.AsyncClient | None = None) -> bytes:
    """GET the feed, at most ``FEED_MAX_BYTES``. No Caterings API credentials are sent with it:
    the feed is public and may live on another host."""
    own = http is None
    client = http or httpx.AsyncClient(timeout=FEED_TIMEOUT_SECONDS, follow_redirects=True)
    try:
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise FeedUnavailable(f"feed answered HTTP {response.status_code}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > FEED_MAX_BYTES:
                    raise FeedUnavailable(f"feed is larger than {FEED_MAX_BYTES} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise FeedUnavailable(f"feed could not be fetched: {type(exc).__name__}") from None
    finally:
        if own:
            await client.aclose()


async def _previous_state(session: AsyncSession) -> tuple[dict[str, str], set[str]]:
    """Confirmed hash per feed custom id ("" when User.com has confirmed nothing), and the ids
    User.com knows at all."""
    rows = await session.execute(
        select(FeedProduct.custom_id, IdMapEntry.custom_id, IdMapEntry.payload_hash).outerjoin(
            IdMapEntry, (IdMapEntry.kind == idmap.PRODUCT) & (IdMapEntry.custom_id == FeedProduct.custom_id)
        )
    )
    previous: dict[str, str] = {}
    known: set[str] = set()
    for custom_id, mapped, digest in rows:
        previous[custom_id] = digest or ""
        if mapped is not None:
            known.add(custom_id)
    return previous, known


def _upsert(body: dict[str, Any]) -> PlannedDelivery:
    custom_id = str(body["custom_id"])
    return PlannedDelivery(PRODUCT_UPSERT, product_lane(custom_id), {"custom_id": custom_id, "body": body})


async def apply_feed(session: AsyncSession, parsed: FeedResult) -> FeedReport:
    """Queue what the parsed feed changes, and remember the feed's ids (in the caller's transaction)."""
    previous, known = await _previous_state(session)
    diff = diff_feed(previous, parsed.items)
    vanished = [custom_id for custom_id in diff.vanished if custom_id in known]
    planned = [_upsert(item.product_body()) for item in diff.to_send]
    planned += [_upsert(deactivation_body(custom_id)) for custom_id in vanished]
    await repository.enqueue(session, planned)

    now = utcnow()
    in_feed = {item.custom_id: item for item in parsed.items}
    stored = {row.custom_id: row for row in (await session.execute(select(FeedProduct))).scalars()}
    for custom_id, item in in_feed.items():
        row = stored.get(custom_id)
        if row is None:
            row = FeedProduct(custom_id=custom_id, first_seen_at=now)
            session.add(row)
        row.in_feed, row.last_seen_at, row.vanished_at = True, now, None
        row.queued_hash = product_hash(item.product_body())
    for custom_id, row in stored.items():
        if custom_id in in_feed:
            continue
        if row.in_feed:
            row.in_feed, row.vanished_at = False, now
        if custom_id in vanished:
            row.queued_hash = product_hash(deactivation_body(custom_id))
    await session.flush()

    return FeedReport(
        items=len(parsed.items),
        sent=len(diff.to_send),
        unchanged=len(diff.unchanged),
        deactivated=len(vanished),
        sent_ids=[item.custom_id for item in diff.to_send],
        deactivated_ids=vanished,
        skipped=[asdict(s) for s in parsed.skipped],
        warnings=[asdict(w) for w in parsed.warnings],
    )


class FeedSync:
    """Runs feed syncs for one process: on demand and, when configured, every N seconds."""

    def __init__(
        self,
        feed_url: str | None,
        sessions: async_sessionmaker[AsyncSession],
        wake_worker: Any = lambda: None,
    ) -> None:
        self.feed_url = feed_url
        self.sessions = sessions
        self.wake_worker = wake_worker
        self._lock = asyncio.Lock()  # one run at a time in this process

    async def run(self) -> FeedReport:
        if not self.feed_url:
            raise FeedUnavailable("CATERINGS_FEED_URL is not set", status=409)
        async with self._lock:
            raw = await fetch_feed(self.feed_url)
            try:
                parsed = await asyncio.to_thread(parse_feed, raw)
            except FeedError as exc:
                raise FeedUnavailable(str(exc)) from None
            async with self.sessions.begin() as session:
                report = await apply_feed(session, parsed)
        if report.sent or report.deactivated:
            self.wake_worker()
        log.info(
            "feed synced",
            items=report.items,
            sent=report.sent,
            unchanged=report.unchanged,
            deactivated=report.deactivated,
            skipped=len(report.skipped),
            warnings=len(report.warnings),
        )
        return report

    async def every(self, seconds: float) -> None:
        """The periodic sync (``FEED_SYNC_INTERVAL_SECONDS``); a failed run waits for the next."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.run()
            except FeedUnavailable as exc:
                log.warning("periodic feed sync failed", error=str(exc))
            except Exception:
                log.exception("periodic feed sync crashed")
