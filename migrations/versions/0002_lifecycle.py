"""Lifecycle columns (clean-up owed, per-submission timeout, deadline, backoff, idempotency key),
the priority-ordered claim index, and the quota tables shared by every replica.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_NEW_COLUMNS = (
    "abort_owed",
    "finalize_failures",
    "finalize_error",
    "timeout",
    "deadline_at",
    "backoff_base",
    "backoff_max",
    "idempotency_key",
)


def upgrade() -> None:
    # batch mode: SQLite cannot add constraints in place; on PostgreSQL it is plain ALTER TABLE.
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("abort_owed", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(
            sa.Column("finalize_failures", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(sa.Column("finalize_error", sa.Text()))
        batch.add_column(sa.Column("timeout", sa.Double()))
        batch.add_column(sa.Column("deadline_at", sa.Double()))
        batch.add_column(sa.Column("backoff_base", sa.Double()))
        batch.add_column(sa.Column("backoff_max", sa.Double()))
        batch.add_column(sa.Column("idempotency_key", sa.String(255)))
    op.create_index(
        "ix_executions_claimable_priority",
        "executions",
        [sa.text("priority DESC"), "next_round_at"],
        sqlite_where=sa.text("finalized = 0"),
        postgresql_where=sa.text("NOT finalized"),
    )
    op.create_index("ix_executions_idempotency_key", "executions", ["idempotency_key"], unique=True)
    op.create_table(
        "resource_quotas",
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("quota", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", name="pk_resource_quotas"),
    )
    op.create_table(
        "resource_allocations",
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("token", sa.String(255), nullable=False),
        sa.Column("execution_id", sa.String(36)),
        sa.Column("allocated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "token", name="pk_resource_allocations"),
    )
    op.create_index("ix_resource_allocations_execution_id", "resource_allocations", ["execution_id"])


def downgrade() -> None:
    op.drop_index("ix_resource_allocations_execution_id", table_name="resource_allocations")
    op.drop_table("resource_allocations")
    op.drop_table("resource_quotas")
    op.drop_index("ix_executions_idempotency_key", table_name="executions")
    op.drop_index("ix_executions_claimable_priority", table_name="executions")
    with op.batch_alter_table("executions") as batch:
        for name in reversed(_NEW_COLUMNS):
            batch.drop_column(name)
