"""``POST /sync/feed`` in-process, against the fake Caterings feed; the worker is off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app import idmap
from app.delivery.plan import PRODUCT_UPSERT
from app.fakes.caterings import FakeCaterings
from app.models import Delivery
from tests.api.sync_support import ADMIN, Bridge, open_bridge, sync_settings

SAMPLE_FEED = (Path(__file__).resolve().parents[2] / "samples" / "feed.xml").read_bytes()


async def queued(bridge: Bridge) -> list[Delivery]:
    async with bridge.sessions() as session:
        return list((await session.execute(select(Delivery).order_by(Delivery.id))).scalars())


async def confirm_all(bridge: Bridge) -> None:
    """What the product handler does once User.com answers 2xx: remember the sent body's hash."""
    async with bridge.sessions.begin() as session:
        for delivery in await queued(bridge):
            if delivery.state == "pending":
                body = delivery.payload["body"]
                await idmap.remember(
                    session,
                    idmap.PRODUCT,
                    delivery.payload["custom_id"],
                    usercom_id=1,
                    sent_hash=idmap.payload_hash(body),
                    active=body.get("active"),
                )
                delivery.state = "done"
                session.add(delivery)


async def sync(bridge: Bridge) -> dict[str, Any]:
    response = await bridge.client.post("/sync/feed", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


async def test_feed_items_become_product_upserts_and_unchanged_ones_are_not_sent_again(
    bridge: Bridge, fake: FakeCaterings
) -> None:
    fake.feed = SAMPLE_FEED
    report = await sync(bridge)
    assert (report["items"], report["sent"], report["unchanged"], report["deactivated"]) == (5, 5, 0, 0)
    assert report["skipped"] == [] and report["warnings"] == []

    deliveries = await queued(bridge)
    assert {d.kind for d in deliveries} == {PRODUCT_UPSERT}
    assert {d.lane for d in deliveries} == {f"product:{cid}" for cid in report["sent_ids"]}
    bodies = {d.payload["custom_id"]: d.payload["body"] for d in deliveries}
    office = bodies["12-3-41"]
    assert (office["name"], office["price"], office["kcal"], office["daily_meals"], office["active"]) == (
        "Office 800 kcal",
        79.98,
        800,
        3,
        True,
    )
    assert office["product_url"].endswith("/diety/office?kcal=800")
    assert (bodies["9-2-30"]["price"], bodies["9-2-30"]["active"]) == (59.9, True)
    assert bodies["20-4-90"]["active"] is False
    assert (bodies["15-1-77"]["price"], bodies["15-1-77"]["kcal"]) == (74.95, 2500)
    assert "daily_meals" not in bodies["15-1-77"]  # "wege" is no number: left out, not nulled

    await confirm_all(bridge)
    again = await sync(bridge)
    assert (again["sent"], again["unchanged"], again["deactivated"]) == (0, 5, 0)
    assert len(await queued(bridge)) == 5  # nothing new queued

    fake.feed = SAMPLE_FEED.replace(b"<g:price>59,90 PLN</g:price>", b"<g:price>61,90 PLN</g:price>")
    changed = await sync(bridge)
    assert (changed["sent_ids"], changed["unchanged"]) == (["9-2-30"], 4)


async def test_an_item_gone_from_the_feed_is_set_inactive_once(bridge: Bridge, fake: FakeCaterings) -> None:
    fake.feed = SAMPLE_FEED
    await sync(bridge)
    await confirm_all(bridge)
    start = SAMPLE_FEED.index(b"<item>\n      <g:id>15-1-77")
    end = SAMPLE_FEED.index(b"</item>", start) + len(b"</item>")
    fake.feed = SAMPLE_FEED[:start] + SAMPLE_FEED[end:]

    report = await sync(bridge)
    assert (report["sent"], report["unchanged"], report["deactivated"], report["deactivated_ids"]) == (
        0,
        4,
        1,
        ["15-1-77"],
    )
    last = (await queued(bridge))[-1]
    assert (last.lane, last.payload["body"]) == ("product:15-1-77", {"custom_id": "15-1-77", "active": False})

    await confirm_all(bridge)
    assert (await sync(bridge))["deactivated"] == 0  # once

    fake.feed = SAMPLE_FEED  # it comes back: sent again, active
    back = await sync(bridge)
    assert back["sent_ids"] == ["15-1-77"]


async def test_an_unconfirmed_update_is_sent_again_and_a_never_sent_item_is_not_deactivated(
    bridge: Bridge, fake: FakeCaterings
) -> None:
    fake.feed = SAMPLE_FEED
    await sync(bridge)  # not delivered (say, parked as dead)
    assert (await sync(bridge))["sent"] == 5
    fake.feed = b'<rss xmlns:g="http://base.google.com/ns/1.0"><channel></channel></rss>'
    assert (await sync(bridge))["deactivated"] == 0  # User.com never had them: nothing to deactivate


async def test_skipped_items_and_warnings_are_reported(bridge: Bridge, fake: FakeCaterings) -> None:
    fake.feed = (
        b'<rss xmlns:g="http://base.google.com/ns/1.0"><channel>'
        b"<item><title>No id 800 kcal</title></item>"
        b"<item><g:id>A</g:id><title>A 800 kcal</title><g:price>free</g:price></item>"
        b"<item><g:id>A</g:id><title>A again</title></item>"
        b"</channel></rss>"
    )
    report = await sync(bridge)
    assert report["sent"] == 1
    assert [(s["position"], s["id"]) for s in report["skipped"]] == [(1, None), (3, "A")]
    assert report["warnings"][0]["id"] == "A" and "price" in report["warnings"][0]["reason"]


@pytest.mark.parametrize("problem", ["down", "not xml", "entities"])
async def test_an_unusable_feed_is_502_and_queues_nothing(
    bridge: Bridge, fake: FakeCaterings, problem: str
) -> None:
    if problem == "down":
        fake.faults.update({"down": True})
    elif problem == "not xml":
        fake.feed = b"<rss><channel><item>"
    else:
        fake.feed = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><rss>&a;</rss>'
    response = await bridge.client.post("/sync/feed", headers=ADMIN)
    assert response.status_code == 502, response.text
    assert await queued(bridge) == []


async def test_no_feed_url_is_409(tmp_path: Path, caterings_url: str) -> None:
    async for bridge in open_bridge(sync_settings(tmp_path, caterings_url, caterings_feed_url=None)):
        response = await bridge.client.post("/sync/feed", headers=ADMIN)
        assert response.status_code == 409
        assert "CATERINGS_FEED_URL" in response.json()["detail"]


async def test_the_feed_is_synced_periodically_when_configured(
    tmp_path: Path, caterings_url: str, fake: FakeCaterings
) -> None:
    import asyncio

    fake.feed = SAMPLE_FEED
    async for bridge in open_bridge(sync_settings(tmp_path, caterings_url, feed_sync_interval_seconds=0.2)):
        for _ in range(50):
            if len(await queued(bridge)) >= 5:
                break
            await asyncio.sleep(0.1)
        assert len(await queued(bridge)) >= 5
