"""How each kind of delivery is performed. One function per kind; each returns an outcome word.

A handler raises ``UpstreamError`` when the upstream call fails; the worker decides what then.
Reads of the id map happen in short transactions of their own, never around an upstream call.
What a handler learns from its calls (the User.com id, the hash of what was sent) it hands to
``record_after_calls``: the worker writes it in the transaction that settles the delivery, one
transaction less per delivery than a write of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import consents, idmap
from app.caterings.client import CateringsClient
from app.delivery import plan
from app.models import Delivery
from app.upstream import UpstreamError
from app.usercom.client import UserComClient

Handler = Callable[["HandlerContext", Delivery], Awaitable[str]]
Write = Callable[[AsyncSession], Awaitable[None]]

# Set by the worker around each delivery: the writes to make when it is settled.
WRITES_AFTER_CALLS: ContextVar[list[Write] | None] = ContextVar("writes_after_calls", default=None)


@dataclass
class HandlerContext:
    sessions: async_sessionmaker[AsyncSession]
    usercom: UserComClient
    caterings: CateringsClient | None = None
    # Called after a delivery of a given kind is done, inside its own transaction.
    on_done: dict[str, Callable[[AsyncSession, Delivery], Awaitable[None]]] = field(default_factory=dict)


async def upsert_user(ctx: HandlerContext, delivery: Delivery) -> str:
    body: dict[str, Any] = delivery.payload["body"]
    custom_id = str(body["custom_id"])
    async with ctx.sessions() as session:
        # Never put back a marketing consent the bridge already knows to be outdated (docs/consent.md).
        if "agreement_marketing" in body and not await consents.outgoing_marketing(
            session, custom_id, body["agreement_marketing"]
        ):
            body = {k: v for k, v in body.items() if k != "agreement_marketing"}
        sent_hash = idmap.payload_hash(body)
        entry = await idmap.get(session, idmap.USER, custom_id)
        if entry is not None and entry.payload_hash == sent_hash:
            return "skipped_unchanged"
    answer = await ctx.usercom.update_or_create_user(body)
    await record_after_calls(ctx, _remember(idmap.USER, custom_id, answer, sent_hash, email=body.get("email")))
    return "sent"


async def delete_user(ctx: HandlerContext, delivery: Delivery) -> str:
    custom_id = str(delivery.payload["custom_id"])
    deleted = await ctx.usercom.delete_user(custom_id)
    await record_after_calls(ctx, lambda session: idmap.forget(session, idmap.USER, custom_id))
    return "sent" if deleted else "already_absent"


async def upsert_product(ctx: HandlerContext, delivery: Delivery) -> str:
    custom_id = str(delivery.payload["custom_id"])
    body: dict[str, Any] = delivery.payload["body"]
    sent_hash = idmap.payload_hash(body)
    async with ctx.sessions() as session:
        entry = await idmap.get(session, idmap.PRODUCT, custom_id)
        known_id = entry.usercom_id if entry else None
        if entry is not None and entry.payload_hash == sent_hash:
            return "skipped_unchanged"
    answer = None
    if known_id is not None:
        answer = await ctx.usercom.update_product(known_id, _without_custom_id(body))
    if answer is None:
        # Not mapped yet, or deleted in User.com since: look it up by custom id before creating,
        # so a lost id map never makes a duplicate product.
        existing = await ctx.usercom.find_product(custom_id)
        if existing is not None:
            answer = await ctx.usercom.update_product(int(existing["id"]), _without_custom_id(body))
        if answer is None:
            answer = await ctx.usercom.create_product({**body, "custom_id": custom_id})
    await record_after_calls(ctx, _remember(idmap.PRODUCT, custom_id, answer, sent_hash, active=body.get("active")))
    return "sent"


async def send_product_event(ctx: HandlerContext, delivery: Delivery) -> str:
    product_custom_id = str(delivery.payload["product_custom_id"])
    body: dict[str, Any] = delivery.payload["body"]
    if await ctx.usercom.product_event(product_custom_id, body) is not None:
        return "sent"
    # 404: User.com does not know the product (a diet-simple not yet in the feed) - or the user.
    outcome = "sent_after_create"
    if await ctx.usercom.find_product(product_custom_id) is not None:
        # Either the user is unknown, or another delivery created the product since our event
        # (many orders of a new diet-simple at once, as in a full sync): one more try tells.
        outcome = "sent_on_second_try"
    else:
        create = delivery.payload.get("create_if_missing") or {"custom_id": product_custom_id, "name": product_custom_id}
        try:
            created: dict[str, Any] | None = await ctx.usercom.create_product(create)
        except UpstreamError as error:
            # "already exists": another delivery created it between our look and our create.
            if error.status != 400 or await ctx.usercom.find_product(product_custom_id) is None:
                raise
            created = None
        if created is not None:
            await record_after_calls(ctx, _remember(idmap.PRODUCT, product_custom_id, created, None))
    if await ctx.usercom.product_event(product_custom_id, body) is None:
        raise UpstreamError("usercom", 404, f"user {body.get('user_custom_id')} unknown to User.com for product event")
    return outcome


async def update_consent(ctx: HandlerContext, delivery: Delivery) -> str:
    if ctx.caterings is None:
        raise UpstreamError("caterings", None, "no Caterings API configured")
    user_id, marketing = str(delivery.payload["user_id"]), bool(delivery.payload["marketing"])
    async with ctx.sessions() as session:
        if await consents.superseded(session, user_id, marketing):
            return consents.SUPERSEDED  # a newer consent is known: sending this one would undo it
    await ctx.caterings.set_marketing_consent(user_id, marketing)
    return "sent"


HANDLERS: dict[str, Handler] = {
    plan.USER_UPSERT: upsert_user,
    plan.USER_DELETE: delete_user,
    plan.PRODUCT_UPSERT: upsert_product,
    plan.PRODUCT_EVENT: send_product_event,
    plan.CONSENT_UPDATE: update_consent,
}


async def record_after_calls(ctx: HandlerContext, write: Write) -> None:
    """Make ``write`` once the delivery is settled, in the same transaction (whether it ends done,
    retried or dead: the calls made so far went through either way). Outside a worker, at once."""
    pending = WRITES_AFTER_CALLS.get()
    if pending is not None:
        pending.append(write)
        return
    async with ctx.sessions.begin() as session:
        await write(session)


def _remember(
    kind: str, custom_id: str, answer: dict[str, Any] | None, sent_hash: str | None, **known: Any
) -> Write:
    async def write(session: AsyncSession) -> None:
        usercom_id = _int_or_none(answer.get("id")) if answer else None
        await idmap.remember(session, kind, custom_id, usercom_id=usercom_id, sent_hash=sent_hash, **known)

    return write


def _without_custom_id(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "custom_id"}


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
