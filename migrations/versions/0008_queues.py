"""Queues, pinning and pause: which replica may claim what, and task types held back.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN, on SQLite too: a batch operation would copy the table, and
    # the copy's indexes lose their DESC (the claim's order: see tables.py).
    op.add_column(
        "executions", sa.Column("queue", sa.String(255), nullable=False, server_default=sa.text("'default'"))
    )
    op.add_column(
        "executions", sa.Column("pin_to_host", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column("executions", sa.Column("pinned_host", sa.String(255)))
    op.create_index(
        "ix_executions_claimable_queue",
        "executions",
        ["queue", sa.text("priority DESC"), "next_round_at"],
        sqlite_where=sa.text("finalized = 0 AND queue <> 'default'"),
        postgresql_where=sa.text("((NOT finalized) AND ((queue)::text <> 'default'::text))"),
    )
    op.create_table(
        "paused_task_types",
        sa.Column("task_type", sa.String(255), nullable=False),
        sa.Column("paused_at", sa.Double(), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.PrimaryKeyConstraint("task_type", name="pk_paused_task_types"),
    )


def downgrade() -> None:
    op.drop_table("paused_task_types")
    op.drop_index("ix_executions_claimable_queue", table_name="executions")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("pinned_host")
        batch.drop_column("pin_to_host")
        batch.drop_column("queue")
