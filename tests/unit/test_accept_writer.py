"""Group commit of accepted webhooks: a group must leave the store exactly as the same webhooks
stored one at a time would, and one webhook's failure must not take the others with it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.caterings import schemas
from app.caterings.accept_writer import AcceptedWebhook, AcceptWriter, store_webhooks
from app.db import create_engine, create_session_factory
from app.mapping import plan_caterings_event
from app.migrate import upgrade_to_head_async

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "webhooks.jsonl"
TZ = ZoneInfo("Europe/Warsaw")


def accepted(webhook_id: str, body: dict[str, Any]) -> AcceptedWebhook:
    """What the route hands the writer for a webhook it accepted."""
    envelope = schemas.parse_envelope(body)
    event = schemas.parse_event(envelope) if envelope.type in schemas.KNOWN_EVENT_TYPES else None
    planned = plan_caterings_event(event, tz=TZ) if event is not None else []
    return AcceptedWebhook(webhook_id, envelope.type, "accepted" if event else "ignored", body, planned, event)


def sample_webhooks() -> list[AcceptedWebhook]:
    out = []
    for line in SAMPLES.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        try:
            out.append(accepted(record["webhook_id"], record["body"]))
        except ValidationError:
            continue  # the samples hold invalid webhooks on purpose: the route answers them 422
    return out


def user_webhook(webhook_id: str, user_id: int, *, marketing: bool | None, email: str | None = None,
                 at: str = "2026-08-01T10:00:00+02:00", kind: str = "user.updated") -> AcceptedWebhook:
    user: dict[str, Any] = {"id": user_id}
    if email is not None:
        user["email"] = email
    if marketing is not None:
        user["agreements"] = {"marketing": marketing}
    data = {"user": {"id": user_id}} if kind == "user.deleted" else {"user": user}
    return accepted(webhook_id, {"type": kind, "occurred_at": at, "brand_id": 1, "data": data})


@pytest.fixture
async def two_stores(database_url: str, tmp_path: Path, request: pytest.FixtureRequest
                     ) -> AsyncIterator[tuple[async_sessionmaker[AsyncSession], async_sessionmaker[AsyncSession]]]:
    """Two empty migrated stores of the same kind: one for one-at-a-time, one for the group."""
    urls = [database_url]
    if database_url.startswith("sqlite"):
        urls.append(f"sqlite+aiosqlite:///{tmp_path / 'second.db'}")
    else:
        urls.append(str(request.getfixturevalue("postgres_url_2")))
    engines = []
    for url in urls:
        await upgrade_to_head_async(url)
        engines.append(create_engine(url))
    yield create_session_factory(engines[0]), create_session_factory(engines[1])
    for engine in engines:
        await engine.dispose()


@pytest.fixture
def postgres_url_2(postgres_admin_url: str) -> Any:
    from tests.support import postgres as pg

    with pg.throwaway_database(postgres_admin_url) as url:
        yield url


async def contents(sessions: async_sessionmaker[AsyncSession]) -> dict[str, list[tuple[Any, ...]]]:
    """Everything accepting webhooks writes, without ids and clocks, in an order both ways share."""
    queries = {
        "inbound": "SELECT external_id, event_type, status FROM inbound_events ORDER BY external_id",
        # per inbound record, its deliveries in the order they were queued
        "deliveries": "SELECT i.external_id, d.kind, d.lane, d.target, d.state, d.payload FROM deliveries d "
                      "LEFT JOIN inbound_events i ON i.id = d.inbound_id ORDER BY i.external_id, d.id",
        "lane order": "SELECT lane, kind, payload FROM deliveries ORDER BY lane, id",
        "facts": "SELECT key FROM business_facts ORDER BY key",
        "consent state": "SELECT user_id, marketing, changed_at, source FROM consent_state ORDER BY user_id",
        # per user, the log in the order it was written
        "consent log": "SELECT user_id, marketing, source, occurred_at, status, detail FROM consent_log "
                       "ORDER BY user_id, id",
        "id map": "SELECT kind, custom_id, email, usercom_id, payload_hash FROM id_map ORDER BY kind, custom_id",
    }
    async with sessions() as session:
        return {name: [tuple(row) for row in await session.execute(text(sql))] for name, sql in queries.items()}


async def one_at_a_time(sessions: async_sessionmaker[AsyncSession], webhooks: list[AcceptedWebhook]) -> list[Any]:
    ids = []
    for webhook in webhooks:
        async with sessions.begin() as session:
            (inbound_id,) = await store_webhooks(session, [webhook])
        ids.append(inbound_id)
    return ids


async def as_one_group(sessions: async_sessionmaker[AsyncSession], webhooks: list[AcceptedWebhook]) -> list[Any]:
    async with sessions.begin() as session:
        return await store_webhooks(session, webhooks)


def duplicates(ids: list[Any]) -> list[bool]:
    return [inbound_id is None for inbound_id in ids]


async def test_the_samples_as_one_group_store_what_they_store_one_at_a_time(two_stores) -> None:  # type: ignore[no-untyped-def]
    single, grouped = two_stores
    webhooks = sample_webhooks()
    webhooks.append(webhooks[0])  # a redelivery inside the group
    assert len(webhooks) > 8
    answers_single = await one_at_a_time(single, webhooks)
    answers_grouped = await as_one_group(grouped, webhooks)
    assert duplicates(answers_grouped) == duplicates(answers_single)
    assert duplicates(answers_grouped)[-1] is True
    expected, got = await contents(single), await contents(grouped)
    assert expected["deliveries"], "the samples plan deliveries"
    assert got == expected


async def test_a_group_on_top_of_known_users_keeps_every_consent_rule(two_stores) -> None:  # type: ignore[no-untyped-def]
    """Known and new users, a user named twice, a deleted one, a changed and an unchanged consent,
    one without e-mail or consent, a webhook id stored before: stored as a group on a store that
    already knows some of them, the result is that of one at a time."""
    single, grouped = two_stores
    before = [
        user_webhook("w-known-1", 1, marketing=True, email="one@example.com", at="2026-07-01T10:00:00+02:00"),
        user_webhook("w-known-2", 2, marketing=False, email="two@example.com", at="2026-07-01T10:00:00+02:00"),
        user_webhook("w-known-3", 3, marketing=True, email="three@example.com", at="2026-07-01T10:00:00+02:00"),
    ]
    group = [
        user_webhook("w-a", 1, marketing=True, email="one@example.com"),  # unchanged
        user_webhook("w-b", 2, marketing=True, email="two.new@example.com"),  # changed, new e-mail
        user_webhook("w-c", 3, marketing=False, at="2026-06-01T10:00:00+02:00"),  # older than known: stale
        user_webhook("w-d", 4, marketing=True, email="four@example.com"),  # new user
        user_webhook("w-e", 4, marketing=False, at="2026-08-01T11:00:00+02:00"),  # ... named again
        user_webhook("w-f", 5, marketing=None),  # no e-mail, no consent
        user_webhook("w-g", 1, marketing=None, kind="user.deleted"),
        user_webhook("w-h", 6, marketing=False, email="six@example.com"),
        user_webhook("w-known-2", 2, marketing=True),  # an id stored before
        user_webhook("w-d", 4, marketing=True),  # an id earlier in this group
    ]
    for sessions in (single, grouped):
        await one_at_a_time(sessions, before)
    answers_single = await one_at_a_time(single, group)
    answers_grouped = await as_one_group(grouped, group)
    assert duplicates(answers_grouped) == duplicates(answers_single) == [False] * 8 + [True, True]
    expected, got = await contents(single), await contents(grouped)
    assert [row[0] for row in expected["consent state"]] == ["2", "3", "4", "6"]  # 1 deleted, 5 never carried one
    assert got == expected


def counting(sessions: async_sessionmaker[AsyncSession]) -> tuple[Callable[[], Any], list[int]]:
    """The writer's session lookup, counting the transactions it begins."""
    begun = [0]

    class Counting:
        def begin(self) -> Any:
            begun[0] += 1
            return sessions.begin()

    return (lambda: Counting()), begun


async def test_webhooks_that_arrive_together_share_one_transaction(sessions) -> None:  # type: ignore[no-untyped-def]
    lookup, begun = counting(sessions)
    writer = AcceptWriter(lookup)
    webhooks = [user_webhook(f"w-{n}", 100 + n, marketing=n % 2 == 0, email=f"u{n}@example.com") for n in range(20)]
    ids = await asyncio.gather(*(writer.store(webhook) for webhook in webhooks))
    assert begun[0] == 1
    assert None not in ids and len(set(ids)) == 20
    async with sessions() as session:
        assert await session.scalar(text("SELECT count(*) FROM consent_state")) == 20


async def test_a_webhook_alone_is_written_at_once(sessions) -> None:  # type: ignore[no-untyped-def]
    lookup, begun = counting(sessions)
    writer = AcceptWriter(lookup)
    assert isinstance(await writer.store(user_webhook("w-1", 1, marketing=True)), int)
    assert await writer.store(user_webhook("w-1", 1, marketing=True)) is None  # its redelivery
    assert begun[0] == 2


async def test_a_redelivery_in_the_same_group_is_a_duplicate(sessions) -> None:  # type: ignore[no-untyped-def]
    writer = AcceptWriter(lambda: sessions)
    first, again = await asyncio.gather(
        writer.store(user_webhook("w-same", 1, marketing=True)), writer.store(user_webhook("w-same", 1, marketing=True))
    )
    assert isinstance(first, int) and again is None


async def test_one_failing_webhook_fails_alone(sessions) -> None:  # type: ignore[no-untyped-def]
    lookup, begun = counting(sessions)
    writer = AcceptWriter(lookup)
    good = [user_webhook(f"w-{n}", n, marketing=True) for n in range(4)]
    bad = AcceptedWebhook("w-bad", "user.updated", "accepted", {"not json": object()}, [], None)
    results = await asyncio.gather(*(writer.store(w) for w in [*good[:2], bad, *good[2:]]), return_exceptions=True)
    assert isinstance(results[2], Exception)
    assert all(isinstance(r, int) for r in results[:2] + results[3:]), results
    assert begun[0] == 1 + 5  # the group, then each of the five on its own
    async with sessions() as session:
        stored = (await session.execute(text("SELECT external_id FROM inbound_events ORDER BY external_id"))).scalars()
        assert list(stored) == ["w-0", "w-1", "w-2", "w-3"]


async def test_a_webhook_whose_request_went_away_is_stored_all_the_same(sessions) -> None:  # type: ignore[no-untyped-def]
    """The client hung up while its webhook waited for its group: the group still stores it,
    so the sender's retry is answered as a duplicate rather than lost."""
    writer = AcceptWriter(lambda: sessions)
    gone = asyncio.create_task(writer.store(user_webhook("w-gone", 1, marketing=True)))
    await asyncio.sleep(0)  # queued, its group not yet written
    gone.cancel()
    stays = await writer.store(user_webhook("w-stays", 2, marketing=True))
    assert isinstance(stays, int)
    assert await writer.store(user_webhook("w-gone", 1, marketing=True)) is None  # the retry
    async with sessions() as session:
        stored = (await session.execute(text("SELECT external_id FROM inbound_events ORDER BY external_id"))).scalars()
        assert list(stored) == ["w-gone", "w-stays"]
