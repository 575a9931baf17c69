"""Group commit for accepted webhooks.

Each accepted webhook is answered only once its inbound record, its deliveries and its consent
bookkeeping are committed together (the transactional outbox of the design). Webhooks that arrive
while a transaction is being written wait for the next one and go in together: one transaction
and a handful of multi-row statements for the group instead of about seven statements and a
transaction each. With one webhook at a time nothing waits: the group is that webhook.

One writer per process also keeps the web process's accept transactions from queueing on
SQLite's single write lock, where every waiting writer sleeps in SQLite's busy handler.

A group that fails is written again one webhook at a time, so one webhook's trouble stays its
own: the others are stored, and its own error reaches its own request.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import consents
from app.caterings.schemas import CateringsEvent
from app.db import dialect_of, insert_for
from app.delivery import repository
from app.delivery.plan import PlannedDelivery
from app.models import InboundEvent

SOURCE = "caterings"
MAX_GROUP = 100  # webhooks in one transaction at most


@dataclass(frozen=True)
class AcceptedWebhook:
    webhook_id: str
    event_type: str
    status: str  # accepted | ignored
    document: Any
    planned: Sequence[PlannedDelivery]
    event: CateringsEvent | None


class AcceptWriter:
    def __init__(self, sessions: Callable[[], async_sessionmaker[AsyncSession]], *, max_group: int = MAX_GROUP) -> None:
        self._sessions = sessions  # looked up for every group: the store may be swapped (tests)
        self._max_group = max_group
        self._waiting: list[tuple[AcceptedWebhook, asyncio.Future[int | None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def store(self, webhook: AcceptedWebhook) -> int | None:
        """Commit the webhook; its inbound record's id, or None when its id was seen before."""
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        # Its request may be gone by the time it fails: the error is then read here, not reported
        # by asyncio as never retrieved (the request's own log line covers a request that stays).
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._waiting.append((webhook, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_while_waiting(), name="accept-writer")
        # A request that goes away (the client hung up) does not take the webhook out of its
        # group: it is stored all the same, and a redelivery is answered as a duplicate.
        return await asyncio.shield(future)

    async def _write_while_waiting(self) -> None:
        while self._waiting:
            group = self._waiting[: self._max_group]
            del self._waiting[: self._max_group]
            await self._write(group)

    async def _write(self, group: list[tuple[AcceptedWebhook, asyncio.Future[int | None]]]) -> None:
        try:
            ids = await self._store_group([webhook for webhook, _ in group])
        except Exception as exc:
            if len(group) == 1:
                _settle(group[0][1], exc)
                return
            for webhook, future in group:  # one at a time: one webhook's trouble stays its own
                try:
                    (inbound_id,) = await self._store_group([webhook])
                except Exception as one:
                    _settle(future, one)
                else:
                    _settle(future, inbound_id)
            return
        for (_webhook, future), inbound_id in zip(group, ids, strict=True):
            _settle(future, inbound_id)

    async def _store_group(self, group: list[AcceptedWebhook]) -> list[int | None]:
        try:
            async with self._sessions().begin() as session:
                return await store_webhooks(session, group)
        except IntegrityError:
            if len(group) == 1:
                return [None]  # the same webhook-id raced in on another connection and won
            raise


async def store_webhooks(session: AsyncSession, group: Sequence[AcceptedWebhook]) -> list[int | None]:
    """Inbound records, deliveries and consent bookkeeping of a group of webhooks, in the
    caller's transaction. Per webhook: its inbound id, or None when its id was seen before (in
    the store, or earlier in the group)."""
    first_of: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    for index, webhook in enumerate(group):
        if webhook.webhook_id in first_of:
            continue
        first_of[webhook.webhook_id] = index
        rows.append({"source": SOURCE, "external_id": webhook.webhook_id, "event_type": webhook.event_type[:64],
                     "status": webhook.status, "body": webhook.document})
    # One statement both records the webhooks and tells redeliveries apart: a webhook-id already
    # stored gives no row back. Sorted, so two processes' groups take the unique index in one order.
    rows.sort(key=lambda row: row["external_id"])
    result = await session.execute(_record_inbound(dialect_of(session)), rows)
    stored = {external_id: int(inbound_id) for inbound_id, external_id in result.all()}
    ids = [stored.get(webhook.webhook_id) if first_of[webhook.webhook_id] == index else None
           for index, webhook in enumerate(group)]
    fresh = [(webhook, inbound_id) for webhook, inbound_id in zip(group, ids, strict=True) if inbound_id is not None]
    await repository.enqueue_groups(session, [(inbound_id, webhook.planned) for webhook, inbound_id in fresh])
    await consents.note_caterings_events(session, [webhook.event for webhook, _ in fresh])
    return ids


@functools.cache
def _record_inbound(dialect: str) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING id, external_id``, built once (app/db.py)."""
    table = InboundEvent.__table__
    return insert_for(dialect)(table).on_conflict_do_nothing().returning(table.c.id, table.c.external_id)


def _settle(future: asyncio.Future[int | None], outcome: int | None | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
