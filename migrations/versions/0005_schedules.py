"""Schedules: recurring work, and the (schedule, slot) key that makes each slot run exactly once.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("next_slot_at", sa.Double()),
        sa.Column("last_slot_at", sa.Double()),
        sa.Column("last_execution_id", sa.String(36)),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_schedules"),
    )
    op.create_index("ix_schedules_next_slot_at", "schedules", ["next_slot_at"])
    op.create_index("ix_schedules_name", "schedules", ["name"], unique=True)
    op.create_table(
        "schedule_slots",
        sa.Column("schedule_id", sa.String(36), nullable=False),
        sa.Column("slot_at", sa.Double(), nullable=False),
        sa.Column("execution_id", sa.String(36), nullable=False),
        sa.Column("fired_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("schedule_id", "slot_at", name="pk_schedule_slots"),
    )


def downgrade() -> None:
    op.drop_table("schedule_slots")
    op.drop_index("ix_schedules_name", table_name="schedules")
    op.drop_index("ix_schedules_next_slot_at", table_name="schedules")
    op.drop_table("schedules")
