"""Retention: an index of finished executions by phase and finish time, which pruning walks.

Partial (only rows with a finish time): rows still running are not in it, so it costs a round
nothing, and a prune of one phase reads only that phase's oldest rows, however many rows of
phases kept forever there are.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_executions_finished",
        "executions",
        ["phase", "finished_at"],
        sqlite_where=sa.text("finished_at IS NOT NULL"),
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_executions_finished", table_name="executions")
