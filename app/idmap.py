"""The id map: which User.com id each Caterings user and product has, and what was last sent."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

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
    now = utcnow()
    changes: dict[str, Any] = {"payload_hash": sent_hash, "updated_at": now}
    for column, value in (("usercom_id", usercom_id), ("email", email), ("active", active)):
        if value is not None:
            changes[column] = value
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    await session.execute(
        insert(IdMapEntry)
        .values(kind=kind, custom_id=custom_id, **changes)
        .on_conflict_do_update(index_elements=["kind", "custom_id"], set_=changes)
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
