"""The SQL store: inbound log, deliveries outbox, id map, fired business facts, consents, sync jobs.

All times are stored as naive UTC and come back as aware UTC (``UTCDateTime``), so SQLite and
PostgreSQL behave the same.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names, so Alembic migrations are the same on every database.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# An auto-incrementing 64-bit key that SQLite also auto-increments (it only does so for INTEGER).
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use aware UTC")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=timezone.utc) if value is not None else None


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class InboundEvent(Base):
    """Every accepted or ignored inbound message, kept for dedupe and for operators."""

    __tablename__ = "inbound_events"
    __table_args__ = (UniqueConstraint("source", "external_id", name="uq_inbound_events_source_external_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(32))  # caterings | usercom_consent | sync | import
    external_id: Mapped[str | None] = mapped_column(String(255))  # webhook-id
    event_type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # accepted | ignored
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    body: Mapped[Any] = mapped_column(JSON)


class Delivery(Base):
    """The outbox: one operation still to perform (or performed) against an upstream system."""

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_claim", "state", "next_attempt_at"),
        Index("ix_deliveries_lane", "lane", "id"),
        # The claim looks only at open deliveries (migration 0003_ops).
        Index(
            "ix_deliveries_open", "id",
            sqlite_where=text("state IN ('pending', 'in_flight')"),
            postgresql_where=text("state IN ('pending', 'in_flight')"),
        ),
        Index(
            "ix_deliveries_open_lane", "lane", "id",
            sqlite_where=text("state IN ('pending', 'in_flight')"),
            postgresql_where=text("state IN ('pending', 'in_flight')"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    inbound_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    kind: Mapped[str] = mapped_column(String(40))
    target: Mapped[str] = mapped_column(String(16))  # usercom | caterings
    lane: Mapped[str] = mapped_column(String(255))
    payload: Mapped[Any] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending|in_flight|done|dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    throttled: Mapped[int] = mapped_column(Integer, default=0)  # 429s seen; they use no attempt
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    leased_by: Mapped[str | None] = mapped_column(String(64))
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(32))  # sent | skipped_unchanged | ...


class BusinessFact(Base):
    """A fact that must reach User.com once (a purchase, a reservation), whatever carried it.

    Kept apart from the outbox so purging old deliveries never lets a repeated webhook fire it again.
    """

    __tablename__ = "business_facts"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdMapEntry(Base):
    """Caterings id -> User.com id, with the hash of what was last sent (to skip unchanged)."""

    __tablename__ = "id_map"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # user | product
    custom_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    usercom_id: Mapped[int | None] = mapped_column(BigInteger)
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    payload_hash: Mapped[str | None] = mapped_column(String(64))
    active: Mapped[bool | None] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ConsentState(Base):
    """The last marketing-consent value known for a user, from either side (stops echo loops)."""

    __tablename__ = "consent_state"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    marketing: Mapped[bool] = mapped_column(Boolean)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(16))  # usercom | caterings


class ConsentLog(Base):
    """The consent audit log: every consent message, what the bridge did with it."""

    __tablename__ = "consent_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str | None] = mapped_column(String(255), index=True)
    marketing: Mapped[bool | None] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # pending | delivered | dead | unchanged | stale | rejected | recorded
    status: Mapped[str] = mapped_column(String(16))
    delivery_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    detail: Mapped[str | None] = mapped_column(Text)


class SyncJob(Base):
    """A full sync: where it is, so a restart resumes from the page it stopped at."""

    __tablename__ = "sync_jobs"
    __table_args__ = (
        # At most one running job of a kind, enforced by the database across processes.
        Index(
            "ux_sync_jobs_one_running", "kind", unique=True,
            sqlite_where=text("state = 'running'"), postgresql_where=text("state = 'running'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16), default="full")
    state: Mapped[str] = mapped_column(String(16), default="running")  # running | done | failed
    options: Mapped[Any] = mapped_column(JSON)
    phase: Mapped[str] = mapped_column(String(16), default="users")  # users | orders
    next_page: Mapped[int] = mapped_column(Integer, default=1)
    done: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    owner: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    # Deliveries the job put in the outbox (in a dry run: would have put).
    deliveries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class FeedProduct(Base):
    """A diet-simple seen in the product feed. Tells feed products apart from diet-variants in
    ``id_map`` (whose ``payload_hash`` is what User.com last confirmed), so one that vanishes
    from the feed can be set inactive."""

    __tablename__ = "feed_products"

    custom_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    in_feed: Mapped[bool] = mapped_column(Boolean, default=True)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    vanished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    queued_hash: Mapped[str | None] = mapped_column(String(64))  # body last put in the outbox
