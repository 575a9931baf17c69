"""ops: partial indexes on the open deliveries (the claim's candidates and its lane check)

Revision ID: 0003_ops
Revises: 0002_sync
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_ops"
down_revision = "0002_sync"
branch_labels = None
depends_on = None

OPEN = sa.text("state IN ('pending', 'in_flight')")


def upgrade() -> None:
    # The claim walks the open deliveries in id order and asks, for each, whether another of its
    # lane is open. Done deliveries pile up until the retention purge: these indexes hold only
    # the open ones, so a claim costs the same with a million done rows as with none.
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_open", ["id"], unique=False, sqlite_where=OPEN, postgresql_where=OPEN)
        batch_op.create_index(
            "ix_deliveries_open_lane", ["lane", "id"], unique=False, sqlite_where=OPEN, postgresql_where=OPEN
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_open_lane")
        batch_op.drop_index("ix_deliveries_open")
