"""Executions, their events, and the partial index of claimable executions.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "executions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("task_type", sa.String(255), nullable=False),
        sa.Column("inputs", sa.Text(), nullable=False),
        sa.Column("outputs", sa.Text()),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("phase", sa.SmallInteger(), nullable=False),
        sa.Column("phase_version", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("error", sa.Text()),
        sa.Column("info", sa.Text()),
        sa.Column("plugin_state", sa.Text()),
        sa.Column("plugin_state_version", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("system_failures", sa.Integer(), nullable=False),
        sa.Column("event_seq", sa.Integer(), nullable=False),
        sa.Column("rounds", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("next_round_at", sa.Double(), nullable=False),
        sa.Column("attempt_started_at", sa.Double()),
        sa.Column("finished_at", sa.Double()),
        sa.Column("abort_requested", sa.Boolean(), nullable=False),
        sa.Column("abort_reason", sa.Text()),
        sa.Column("finalized", sa.Boolean(), nullable=False),
        sa.Column("lease_owner", sa.String(255)),
        sa.Column("lease_token", sa.String(36)),
        sa.Column("lease_expires_at", sa.Double()),
        sa.PrimaryKeyConstraint("id", name="pk_executions"),
    )
    op.create_index(
        "ix_executions_claimable",
        "executions",
        ["next_round_at"],
        sqlite_where=sa.text("finalized = 0"),
        postgresql_where=sa.text("NOT finalized"),
    )
    op.create_index("ix_executions_created_at", "executions", ["created_at"])
    op.create_table(
        "events",
        sa.Column("execution_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("phase", sa.SmallInteger(), nullable=False),
        sa.Column("phase_version", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("error", sa.Text()),
        sa.Column("info", sa.Text()),
        sa.Column("occurred_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("execution_id", "seq", name="pk_events"),
    )


def downgrade() -> None:
    op.drop_table("events")
    op.drop_index("ix_executions_created_at", table_name="executions")
    op.drop_index("ix_executions_claimable", table_name="executions")
    op.drop_table("executions")
