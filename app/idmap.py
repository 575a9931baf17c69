"""The id map: which User.com id each Caterings user and product has, and what was last sent."""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import dialect_of, insert_for
from app.models import IdMapEntry, utcnow

USER = "user"
PRODUCT = "product"


def payload_hash(body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def get(session: AsyncSession, kind: str, custom_id: str) -> IdMapEntry | None:
    return await session.get(IdMapEntry, (kind, custom_id))


async def remember(
    session: AsyncSession,
    kind: str,
    custom_id: str,
    *,
    usercom_id: int | None,
    sent_hash: str | None,
    email: str | None = None,
    active: bool | None = None,
) -> None:
    """Store what was sent for one entity, in one statement (an upsert). ``None`` leaves the
    User.com id, e-mail or active flag as they were; the hash is always replaced."""
    await session.execute(_remember_statement(dialect_of(session)), {
        "kind": kind, "custom_id": custom_id, "usercom_id": usercom_id, "payload_hash": sent_hash,
        "email": email, "active": active, "updated_at": utcnow(),
    })


@functools.cache
def _remember_statement(dialect: str) -> Any:
    """Built once per dialect, on the table: every delivered upsert runs it (app/db.py says why)."""
    table = IdMapEntry.__table__
    statement = insert_for(dialect)(table)
    new = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=["kind", "custom_id"],
        set_={
            "payload_hash": new.payload_hash,
            "updated_at": new.updated_at,
            **{name: func.coalesce(new[name], table.c[name]) for name in ("usercom_id", "email", "active")},
        },
    )


async def forget(session: AsyncSession, kind: str, custom_id: str) -> None:
    await session.execute(delete(IdMapEntry).where(IdMapEntry.kind == kind, IdMapEntry.custom_id == custom_id))


async def user_id_by_email(session: AsyncSession, email: str) -> str | None:
    """The Caterings id of a synced user with this e-mail (case-insensitive), if exactly one."""
    rows = (
        await session.execute(
            select(IdMapEntry.custom_id).where(
                IdMapEntry.kind == USER, func.lower(IdMapEntry.email) == email.strip().lower()
            ).limit(2)
        )
    ).scalars().all()
    return rows[0] if len(rows) == 1 else None


async def known_user(session: AsyncSession, custom_id: str) -> bool:
    return await session.get(IdMapEntry, (USER, custom_id)) is not None
