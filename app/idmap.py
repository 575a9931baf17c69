"""The id map: which User.com id each Caterings user and product has, and what was last sent."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import delete, func, select
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
    entry = await session.get(IdMapEntry, (kind, custom_id))
    if entry is None:
        entry = IdMapEntry(kind=kind, custom_id=custom_id)
        session.add(entry)
    if usercom_id is not None:
        entry.usercom_id = usercom_id
    entry.payload_hash = sent_hash
    if email is not None:
        entry.email = email
    if active is not None:
        entry.active = active
    entry.updated_at = utcnow()


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
