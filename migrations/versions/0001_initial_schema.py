"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.models


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('business_facts',
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('created_at', app.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_business_facts'))
    )
    op.create_table('consent_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.String(length=255), nullable=True),
    sa.Column('marketing', sa.Boolean(), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('occurred_at', app.models.UTCDateTime(), nullable=True),
    sa.Column('recorded_at', app.models.UTCDateTime(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('delivery_id', sa.BigInteger(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_consent_log'))
    )
    with op.batch_alter_table('consent_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_consent_log_delivery_id'), ['delivery_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_consent_log_user_id'), ['user_id'], unique=False)

    op.create_table('consent_state',
    sa.Column('user_id', sa.String(length=255), nullable=False),
    sa.Column('marketing', sa.Boolean(), nullable=False),
    sa.Column('changed_at', app.models.UTCDateTime(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_consent_state'))
    )
    op.create_table('deliveries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('inbound_id', sa.BigInteger(), nullable=True),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('target', sa.String(length=16), nullable=False),
    sa.Column('lane', sa.String(length=255), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('throttled', sa.Integer(), nullable=False),
    sa.Column('created_at', app.models.UTCDateTime(), nullable=False),
    sa.Column('next_attempt_at', app.models.UTCDateTime(), nullable=False),
    sa.Column('lease_until', app.models.UTCDateTime(), nullable=True),
    sa.Column('leased_by', sa.String(length=64), nullable=True),
    sa.Column('last_status', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('updated_at', app.models.UTCDateTime(), nullable=False),
    sa.Column('done_at', app.models.UTCDateTime(), nullable=True),
    sa.Column('outcome', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries'))
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_claim', ['state', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_deliveries_inbound_id'), ['inbound_id'], unique=False)
        batch_op.create_index('ix_deliveries_lane', ['lane', 'id'], unique=False)

    op.create_table('id_map',
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('custom_id', sa.String(length=255), nullable=False),
    sa.Column('usercom_id', sa.BigInteger(), nullable=True),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('payload_hash', sa.String(length=64), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=True),
    sa.Column('updated_at', app.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('kind', 'custom_id', name=op.f('pk_id_map'))
    )
    with op.batch_alter_table('id_map', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_id_map_email'), ['email'], unique=False)

    op.create_table('inbound_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=True),
    sa.Column('event_type', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('received_at', app.models.UTCDateTime(), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inbound_events')),
    sa.UniqueConstraint('source', 'external_id', name='uq_inbound_events_source_external_id')
    )
    with op.batch_alter_table('inbound_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_inbound_events_received_at'), ['received_at'], unique=False)

    op.create_table('sync_jobs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('phase', sa.String(length=16), nullable=False),
    sa.Column('next_page', sa.Integer(), nullable=False),
    sa.Column('done', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('total', sa.Integer(), nullable=True),
    sa.Column('started_at', app.models.UTCDateTime(), nullable=False),
    sa.Column('finished_at', app.models.UTCDateTime(), nullable=True),
    sa.Column('heartbeat_at', app.models.UTCDateTime(), nullable=True),
    sa.Column('owner', sa.String(length=64), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sync_jobs'))
    )


def downgrade() -> None:
    op.drop_table('sync_jobs')
    with op.batch_alter_table('inbound_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_inbound_events_received_at'))

    op.drop_table('inbound_events')
    with op.batch_alter_table('id_map', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_id_map_email'))

    op.drop_table('id_map')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_lane')
        batch_op.drop_index(batch_op.f('ix_deliveries_inbound_id'))
        batch_op.drop_index('ix_deliveries_claim')

    op.drop_table('deliveries')
    op.drop_table('consent_state')
    with op.batch_alter_table('consent_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_consent_log_user_id'))
        batch_op.drop_index(batch_op.f('ix_consent_log_delivery_id'))

    op.drop_table('consent_log')
    op.drop_table('business_facts')
