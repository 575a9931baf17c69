"""sync: feed products, one running full sync at a time, deliveries counted per job

Revision ID: 0002_sync
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.models

revision = "0002_sync"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feed_products",
        sa.Column("custom_id", sa.String(length=255), nullable=False),
        sa.Column("in_feed", sa.Boolean(), nullable=False),
        sa.Column("first_seen_at", app.models.UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", app.models.UTCDateTime(), nullable=False),
        sa.Column("vanished_at", app.models.UTCDateTime(), nullable=True),
        sa.Column("queued_hash", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("custom_id", name=op.f("pk_feed_products")),
    )
    with op.batch_alter_table("sync_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deliveries", sa.Integer(), server_default="0", nullable=False))
        batch_op.create_index(
            "ux_sync_jobs_one_running",
            ["kind"],
            unique=True,
            sqlite_where=sa.text("state = 'running'"),
            postgresql_where=sa.text("state = 'running'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("sync_jobs", schema=None) as batch_op:
        batch_op.drop_index("ux_sync_jobs_one_running")
        batch_op.drop_column("deliveries")
    op.drop_table("feed_products")
