"""Marketing consent between User.com and Caterings (contract §3): state, audit log and rules.

Two tables: ``consent_state`` holds the last marketing-consent value known per Caterings user,
from either side, with the time that value was decided; ``consent_log`` keeps every consent
message and what the bridge did with it. Every function here runs inside the caller's
transaction (a request, a webhook, a delivery being settled) and never commits.

The rules (``docs/consent.md`` explains them):

* A value equal to the known one changes nothing: a User.com callback is answered "unchanged"
  and not forwarded. This is what breaks the echo loop.
* The newer fact wins: a value decided before the known one was decided is "stale".
* While a consent from User.com is still on its way to Caterings, a Caterings fact that
  disagrees with it cannot be told apart from Caterings still reporting its old value. Then a
  withdrawal wins: a Caterings ``false`` is taken, a Caterings ``true`` is not.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import idmap
from app.caterings.schemas import CateringsEvent, OrderEvent, User, UserDeletedEvent, UserEvent
from app.db import dialect_of, insert_for
from app.delivery import repository
from app.delivery.plan import CONSENT_UPDATE, PlannedDelivery, user_lane
from app.models import ConsentLog, ConsentState, Delivery, IdMapEntry, utcnow

USERCOM = "usercom"
CATERINGS = "caterings"

# consent_log.status
PENDING = "pending"  # accepted from User.com, on its way to Caterings
DELIVERED = "delivered"  # Caterings has it
DEAD = "dead"  # Caterings refused it for good (or retries ran out): parked for an operator
SUPERSEDED = "superseded"  # a newer consent arrived before this one was sent: not sent
UNCHANGED = "unchanged"  # equal to the value already known: nothing to do
STALE = "stale"  # older than the value already known: ignored
REJECTED = "rejected"  # a callback the bridge could not use (unknown user, no boolean, ...)
RECORDED = "recorded"  # a change reported by Caterings

# Verdicts of ``judge``
CHANGED = "changed"


@dataclass(frozen=True)
class Known:
    """A snapshot of one ``consent_state`` row."""

    marketing: bool
    changed_at: datetime
    source: str


def judge(known: Known | None, marketing: bool, at: datetime) -> str:
    """``changed``, ``unchanged`` or ``stale``: what a value decided at ``at`` does to ``known``."""
    if known is None:
        return CHANGED
    if known.marketing == marketing:
        return UNCHANGED
    if at < known.changed_at:
        return STALE
    return CHANGED


def not_after_now(at: datetime, now: datetime | None = None) -> datetime:
    """A time from outside, never later than now: a clock running ahead must not make one
    side's value win over every later change of the other."""
    now = now or utcnow()
    return min(at, now)


# --- consent_state ------------------------------------------------------------------------------


_STATE = ConsentState.__table__
_LOG = ConsentLog.__table__
# Built once, on the tables: every accepted webhook and callback runs them (app/db.py says why).
_KNOWN = select(_STATE.c.marketing, _STATE.c.changed_at, _STATE.c.source).where(
    _STATE.c.user_id == bindparam("user_id")
)
_ADD_LOG = insert(_LOG).returning(_LOG.c.id)
_ADD_LOGS = insert(_LOG)
_KNOWN_MANY = select(_STATE.c.user_id, _STATE.c.marketing, _STATE.c.changed_at, _STATE.c.source).where(
    _STATE.c.user_id.in_(bindparam("user_ids", expanding=True))
)


async def known(session: AsyncSession, user_id: str) -> Known | None:
    row = (await session.execute(_KNOWN, {"user_id": user_id})).first()
    return None if row is None else Known(bool(row.marketing), row.changed_at, row.source)


@functools.cache
def _insert_state_if_absent(dialect: str) -> Any:
    return insert_for(dialect)(_STATE).on_conflict_do_nothing()


@functools.cache
def _insert_first_states(dialect: str) -> Any:
    """Several users' first consent; returns the users whose row this inserted."""
    return _insert_state_if_absent(dialect).returning(_STATE.c.user_id)


async def _set(session: AsyncSession, user_id: str, seen: Known | None, marketing: bool, at: datetime,
               source: str) -> bool:
    """Compare-and-set: write the new value only if the row is still what was read."""
    values = {"marketing": marketing, "changed_at": at, "source": source}
    if seen is None:
        result = await session.execute(_insert_state_if_absent(dialect_of(session)), {"user_id": user_id, **values})
    else:
        result = await session.execute(
            update(ConsentState)
            .where(
                ConsentState.user_id == user_id,
                ConsentState.marketing == seen.marketing,
                ConsentState.changed_at == seen.changed_at,
                ConsentState.source == seen.source,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
    return bool(result.rowcount)


async def forget_state(session: AsyncSession, user_id: str) -> None:
    await session.execute(delete(ConsentState).where(ConsentState.user_id == user_id))


async def superseded(session: AsyncSession, user_id: str, marketing: bool) -> bool:
    """True when the value known now differs from ``marketing``: sending it would undo a newer fact."""
    current = await known(session, user_id)
    return current is not None and current.marketing != marketing


# --- the log ---------------------------------------------------------------------------------------


async def _log(session: AsyncSession, *, user_id: str | None, marketing: bool | None, source: str,
               occurred_at: datetime | None, status: str, detail: str | None) -> int:
    """Add a row to the consent log; returns its id."""
    return int(await session.scalar(_ADD_LOG, _log_row(user_id, marketing, source, occurred_at, status, detail)))


def _log_row(user_id: str | None, marketing: bool | None, source: str, occurred_at: datetime | None, status: str,
             detail: str | None, recorded_at: datetime | None = None) -> dict[str, Any]:
    return {
        "user_id": user_id, "marketing": marketing, "source": source, "occurred_at": occurred_at,
        "recorded_at": recorded_at or utcnow(), "status": status, "detail": None if detail is None else detail[:2000],
    }


async def history(session: AsyncSession, user_id: str | None, limit: int,
                  status: str | None = None) -> Sequence[ConsentLog]:
    """The audit log, newest first."""
    query = select(ConsentLog).order_by(ConsentLog.id.desc()).limit(limit)
    if user_id is not None:
        query = query.where(ConsentLog.user_id == user_id)
    if status is not None:
        query = query.where(ConsentLog.status == status)
    return (await session.execute(query)).scalars().all()


# --- User.com callbacks --------------------------------------------------------------------------


@dataclass(frozen=True)
class CallbackResult:
    status: str  # pending | unchanged | stale
    consent_id: int
    delivery_id: int | None = None


async def find_user(session: AsyncSession, *, custom_id: str | None, email: str | None,
                    usercom_id: int | None) -> tuple[str | None, str]:
    """The Caterings id of the user a callback is about, and how it was found (or why not).

    A custom id, when given, is authoritative: an unknown one is not replaced by a guess from the
    e-mail. Without one, the e-mail (case-insensitive), then the User.com id, among synced users.
    """
    if custom_id is not None:
        if await idmap.known_user(session, custom_id):
            return custom_id, "custom_id"
        return None, f"unknown user: no synced user has custom_id {custom_id}"
    if email:
        found = await idmap.user_id_by_email(session, email)
        if found is not None:
            return found, "e-mail"
    if usercom_id is not None:
        rows = (
            await session.execute(
                select(IdMapEntry.custom_id).where(IdMapEntry.kind == idmap.USER, IdMapEntry.usercom_id == usercom_id)
                .limit(2)
            )
        ).scalars().all()
        if len(rows) == 1:
            return rows[0], "User.com id"
    if email:
        return None, "unknown user: no single synced user has this e-mail"
    return None, "unknown user: the callback names no custom_id or e-mail"


async def accept_callback(session: AsyncSession, *, user_id: str, marketing: bool, at: datetime,
                          detail: str) -> CallbackResult:
    """Record a User.com consent for a known user; when it changes what is known, enqueue it for
    Caterings (on the user's lane) in this same transaction."""
    for _attempt in range(5):
        seen = await known(session, user_id)
        verdict = judge(seen, marketing, at)
        if verdict == UNCHANGED:
            assert seen is not None
            entry_id = await _log(session, user_id=user_id, marketing=marketing, source=USERCOM, occurred_at=at,
                                  status=UNCHANGED, detail=f"{detail}; already known from {seen.source}")
            return CallbackResult(UNCHANGED, entry_id)
        if verdict == STALE:
            assert seen is not None
            entry_id = await _log(
                session, user_id=user_id, marketing=marketing, source=USERCOM, occurred_at=at, status=STALE,
                detail=f"{detail}; older than {seen.marketing} from {seen.source} at {seen.changed_at.isoformat()}",
            )
            return CallbackResult(STALE, entry_id)
        if await _set(session, user_id, seen, marketing, at, USERCOM):
            entry_id = await _log(session, user_id=user_id, marketing=marketing, source=USERCOM, occurred_at=at,
                                  status=PENDING, detail=detail)
            planned = PlannedDelivery(
                CONSENT_UPDATE, user_lane(user_id), {"user_id": user_id, "marketing": marketing, "consent_id": entry_id}
            )
            (delivery,) = await repository.enqueue(session, [planned])
            await session.execute(update(_LOG).where(_LOG.c.id == entry_id).values(delivery_id=delivery.id))
            return CallbackResult(PENDING, entry_id, delivery.id)
        # Another transaction changed the state between our read and our write: judge again.
    raise RuntimeError(f"consent state of user {user_id} kept changing under us")


async def reject_callback(session: AsyncSession, *, user_id: str | None, marketing: bool | None,
                          at: datetime | None, detail: str) -> int:
    return await _log(session, user_id=user_id, marketing=marketing, source=USERCOM, occurred_at=at,
                      status=REJECTED, detail=detail)


# --- Caterings webhooks ----------------------------------------------------------------------------


async def note_caterings_event(session: AsyncSession, event: CateringsEvent | None) -> None:
    """What an accepted Caterings webhook tells about consent, and the user's e-mail.

    Called in the webhook's own transaction. A deleted user's consent state goes with them (the
    audit log stays).
    """
    if event is None:
        return
    if isinstance(event, UserDeletedEvent):
        await forget_state(session, event.user_id)
        return
    if isinstance(event, UserEvent):
        user = event.user
    elif isinstance(event, OrderEvent):
        user = event.order.user
    else:  # pragma: no cover - a new event kind
        return
    await note_caterings_user(session, user, event.occurred_at, f"Caterings {event.type}")


async def note_caterings_events(session: AsyncSession, events: Sequence[CateringsEvent | None]) -> None:
    """``note_caterings_event`` for several webhooks stored in one transaction, in order, with a
    handful of multi-row statements instead of four statements each.

    The common case (a user named by one webhook of the group) is done in bulk: the e-mails in
    one upsert, the known consents in one read, the first consent of a user new to the bridge in
    one insert and one log insert. A user named twice in the group, a deleted user, and a consent
    that changes a known one go through ``note_caterings_event`` one at a time, in order.
    """
    named: dict[str, int] = {}
    for event in events:
        user_id = _user_named_by(event)
        if user_id is not None:
            named[user_id] = named.get(user_id, 0) + 1
    singles: list[tuple[User, datetime, str]] = []
    for event in events:
        user_id = _user_named_by(event)
        if user_id is None:
            continue
        if named[user_id] > 1 or isinstance(event, UserDeletedEvent):
            await note_caterings_event(session, event)  # in the order of the group
        else:
            user = event.user if isinstance(event, UserEvent) else event.order.user  # type: ignore[union-attr]
            singles.append((user, event.occurred_at, f"Caterings {event.type}"))  # type: ignore[union-attr]
    if not singles:
        return
    dialect = dialect_of(session)
    now = utcnow()
    with_email: list[dict[str, Any]] = []
    without_email: list[dict[str, Any]] = []
    for user, _at, _what in singles:
        email = _email_of(user)
        (with_email if email else without_email).append(_note_user_row(user.id, email, now))
    for rows, has_email in ((with_email, True), (without_email, False)):
        rows.sort(key=lambda row: row["custom_id"])  # one order for every process's groups
        if rows:
            await session.execute(_note_user_statement(dialect, with_email=has_email), rows)
    carried = [(user.id, marketing, not_after_now(at, now), what) for user, at, what in singles
                if (marketing := _marketing_of(user)) is not None]
    if not carried:
        return
    seen = {row.user_id: Known(bool(row.marketing), row.changed_at, row.source)
            for row in await session.execute(_KNOWN_MANY, {"user_ids": [user_id for user_id, *_ in carried]})}
    first = [c for c in carried if c[0] not in seen]
    inserted: set[str] = set()
    if first:
        result = await session.execute(_insert_first_states(dialect), [
            {"user_id": user_id, "marketing": marketing, "changed_at": at, "source": CATERINGS}
            for user_id, marketing, at, _what in first
        ])
        inserted = set(result.scalars().all())
        logs = [_log_row(user_id, marketing, CATERINGS, at, RECORDED, what, now)
                for user_id, marketing, at, what in first if user_id in inserted]
        if logs:
            await session.execute(_ADD_LOGS, logs)
    for user_id, marketing, at, what in carried:
        known_now = seen.get(user_id)
        if known_now is not None and judge(known_now, marketing, at) == UNCHANGED:
            continue  # the common case: a repetition of what is known
        if user_id not in inserted:  # a change to a known consent, or a first one that raced in
            await record_caterings_consent(session, user_id, marketing, at, what)


def _user_named_by(event: CateringsEvent | None) -> str | None:
    if isinstance(event, UserDeletedEvent):
        return event.user_id
    if isinstance(event, UserEvent):
        return event.user.id
    if isinstance(event, OrderEvent):
        return event.order.user.id
    return None


def _email_of(user: User) -> str | None:
    """The e-mail the webhook carried, if it carried one."""
    return user.email if "email" in user.model_fields_set else None


def _marketing_of(user: User) -> bool | None:
    agreements = user.agreements if "agreements" in user.model_fields_set else None
    if agreements is None or "marketing" not in agreements.model_fields_set or agreements.marketing is None:
        return None
    return bool(agreements.marketing)


async def note_caterings_user(session: AsyncSession, user: User, occurred_at: datetime, what: str) -> str | None:
    """Note a Caterings user and their e-mail (for callbacks that name only an e-mail), and the
    marketing consent it carries. Returns the consent verdict, or None when the user carried no consent.

    Usable by anything that reads users from Caterings in a transaction of its own (webhooks,
    a full sync).
    """
    await note_user(session, user.id, _email_of(user))
    marketing = _marketing_of(user)
    if marketing is None:
        return None
    return await record_caterings_consent(session, user.id, marketing, occurred_at, what)


async def note_user(session: AsyncSession, user_id: str, email: str | None) -> None:
    """The user (and their e-mail, when given) in the id map now, not only once the User.com
    upsert is delivered, so a callback about them can be matched at once.

    Only the e-mail is touched: the User.com id and the hash of what was sent stay as they are.
    """
    await session.execute(_note_user_statement(dialect_of(session), with_email=bool(email)),
                          _note_user_row(user_id, email, utcnow()))


def _note_user_row(user_id: str, email: str | None, now: datetime) -> dict[str, Any]:
    return {"kind": idmap.USER, "custom_id": user_id, "email": email or None, "updated_at": now}


@functools.cache
def _note_user_statement(dialect: str, *, with_email: bool) -> Any:
    table = IdMapEntry.__table__
    statement = insert_for(dialect)(table)
    if with_email:
        return statement.on_conflict_do_update(index_elements=["kind", "custom_id"],
                                               set_={"email": statement.excluded.email})
    return statement.on_conflict_do_nothing()


async def record_caterings_consent(session: AsyncSession, user_id: str, marketing: bool, occurred_at: datetime,
                                   what: str) -> str:
    at = not_after_now(occurred_at)
    for _attempt in range(5):
        seen = await known(session, user_id)
        verdict = judge(seen, marketing, at)
        if verdict == UNCHANGED:
            return UNCHANGED  # a repetition of what is known is not a consent message worth a row
        doubt = None
        if verdict == CHANGED and seen is not None and seen.source == USERCOM:
            doubt = await _undelivered_usercom_consent(session, user_id, seen, at)
            if doubt is not None and marketing:
                verdict = STALE
        if verdict == STALE:
            assert seen is not None
            reason = doubt or f"older than {seen.marketing} from {seen.source} at {seen.changed_at.isoformat()}"
            await _log(session, user_id=user_id, marketing=marketing, source=CATERINGS, occurred_at=at,
                       status=STALE, detail=f"{what}; {reason}")
            return STALE
        if await _set(session, user_id, seen, marketing, at, CATERINGS):
            detail = what if seen is None else f"{what}; was {seen.marketing} from {seen.source}"
            if doubt is not None:
                detail += "; a withdrawal wins over a consent still on its way"
            await _log(session, user_id=user_id, marketing=marketing, source=CATERINGS, occurred_at=at,
                       status=RECORDED, detail=detail)
            return RECORDED
    raise RuntimeError(f"consent state of user {user_id} kept changing under us")


async def _undelivered_usercom_consent(session: AsyncSession, user_id: str, seen: Known,
                                       at: datetime) -> str | None:
    """Why a Caterings fact at ``at`` may not yet reflect the User.com consent in ``seen``, or None.

    Caterings only has that consent once the bridge delivered it; a Caterings fact from before
    then still shows the old value.
    """
    row = (
        await session.execute(
            select(ConsentLog.status, Delivery.done_at)
            .outerjoin(Delivery, Delivery.id == ConsentLog.delivery_id)
            .where(
                ConsentLog.user_id == user_id, ConsentLog.source == USERCOM, ConsentLog.marketing == seen.marketing,
                ConsentLog.status.in_((PENDING, DELIVERED)),
            )
            .order_by(ConsentLog.id.desc())
            .limit(1)
        )
    ).first()
    if row is None:
        return None
    if row.status == PENDING:
        return f"the consent {seen.marketing} from User.com has not reached Caterings yet"
    if row.done_at is not None and at < row.done_at:
        return f"older than the delivery of {seen.marketing} from User.com at {row.done_at.isoformat()}"
    return None


# --- settling a delivery ---------------------------------------------------------------------------


async def on_consent_delivery_settled(session: AsyncSession, delivery: Delivery, state: str) -> None:
    """Settle hook for ``caterings.consent`` deliveries: the log row follows its delivery."""
    consent_id = (delivery.payload or {}).get("consent_id")
    if consent_id is None:
        return
    entry = await session.get(ConsentLog, int(consent_id))
    if entry is None:
        return
    if state == "done":
        outcome = await session.scalar(select(Delivery.outcome).where(Delivery.id == delivery.id))
        entry.status = SUPERSEDED if outcome == SUPERSEDED else DELIVERED
    else:
        entry.status = DEAD
        entry.detail = ((entry.detail + "; ") if entry.detail else "") + "not delivered: " + (
            await session.scalar(select(Delivery.last_error).where(Delivery.id == delivery.id)) or "dead"
        )[:300]
        # Caterings does not have this value: the bridge stops claiming it as known, so the same
        # consent asked again is forwarded again, and any Caterings fact is taken as it comes.
        current = await known(session, str(delivery.payload["user_id"]))
        if (
            current is not None and current.source == USERCOM and current.marketing == entry.marketing
            and entry.occurred_at is not None and current.changed_at == entry.occurred_at
        ):
            await forget_state(session, str(delivery.payload["user_id"]))
    await session.flush()


async def outgoing_marketing(session: AsyncSession, user_id: str, marketing: Any) -> bool:
    """Whether a User.com upsert may carry ``agreement_marketing = marketing``: not when the bridge
    already knows a different value (the upsert was planned from an older fact)."""
    if not isinstance(marketing, bool):
        return True
    current = await known(session, user_id)
    return current is None or current.marketing == marketing
