"""Storage parameters for a high-churn queue on PostgreSQL (no-op on SQLite).

`executions` is updated by every round (claim, commit, lease renewal) and grows by every
submission; `events` only grows. PostgreSQL's defaults wait for 20% of a table to be dead before
vacuuming it and 10% to have changed before analysing it, which on a table of millions of finished
rows means hours of bloat and of stale statistics under a steady stream (issue 21: a table that
grew from empty with no ANALYZE). So autovacuum and auto-analyse start at 1-2% here, and new pages
of `executions` keep 10% free so that the updates which change no indexed column (a claim's
lease, a renewal) can stay on their page (HOT) instead of adding index entries. README, "On a
production PostgreSQL", says why each value.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

#: Per table, the storage parameters set (and reset by the downgrade).
STORAGE: dict[str, dict[str, str]] = {
    "executions": {
        "fillfactor": "90",
        "autovacuum_vacuum_scale_factor": "0.02",
        "autovacuum_vacuum_threshold": "1000",
        "autovacuum_analyze_scale_factor": "0.01",
        "autovacuum_analyze_threshold": "1000",
        "autovacuum_vacuum_insert_scale_factor": "0.05",
    },
    "events": {
        "autovacuum_vacuum_insert_scale_factor": "0.05",
        "autovacuum_analyze_scale_factor": "0.02",
        "autovacuum_analyze_threshold": "1000",
    },
}


def _on_postgresql() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def upgrade() -> None:
    if not _on_postgresql():
        return
    for table, parameters in STORAGE.items():
        settings = ", ".join(f"{name} = {value}" for name, value in parameters.items())
        op.execute(f"ALTER TABLE {table} SET ({settings})")


def downgrade() -> None:
    if not _on_postgresql():
        return
    for table, parameters in STORAGE.items():
        op.execute(f"ALTER TABLE {table} RESET ({', '.join(parameters)})")
