"""The schema, as SQLAlchemy Core tables. Migrations in `migrations/` are the only way it changes;
a test checks that a freshly migrated database and these definitions agree."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    false,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)

executions = Table(
    "executions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("task_type", String(255), nullable=False),
    Column("inputs", Text, nullable=False),
    Column("outputs", Text),
    Column("labels", Text, nullable=False),
    Column("priority", Integer, nullable=False),
    # Where it stands (Phase as its integer value), and why.
    Column("phase", SmallInteger, nullable=False),
    Column("phase_version", Integer, nullable=False),
    Column("reason", Text),
    Column("error", Text),
    Column("info", Text),
    # The plugin's own state between rounds, JSON, with the version the plugin gave it.
    Column("plugin_state", Text),
    Column("plugin_state_version", Integer, nullable=False),
    # Budgets and counters.
    Column("attempt", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("system_failures", Integer, nullable=False),
    Column("event_seq", Integer, nullable=False),
    Column("rounds", Integer, nullable=False),
    # Times, as seconds since the epoch.
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("next_round_at", Double, nullable=False),
    Column("attempt_started_at", Double),
    Column("finished_at", Double),
    Column("abort_requested", Boolean, nullable=False),
    Column("abort_reason", Text),
    # True once the phase is final and `finalize` has run: the row never needs a round again.
    Column("finalized", Boolean, nullable=False),
    # The lease of the replica working on it right now.
    Column("lease_owner", String(255)),
    Column("lease_token", String(36)),
    Column("lease_expires_at", Double),
    # The lifecycle (migration 0002): clean-up owed by the current attempt, and per-submission limits.
    Column("abort_owed", Boolean, nullable=False, server_default=false()),
    Column("finalize_failures", Integer, nullable=False, server_default=text("0")),
    Column("finalize_error", Text),
    Column("timeout", Double),
    Column("deadline_at", Double),
    Column("backoff_base", Double),
    Column("backoff_max", Double),
    Column("idempotency_key", String(255)),
)

# The claimable set: only rows that still need a round. Finished rows are outside the index, so a
# million of them cost a claim nothing. SQLite uses a partial index only when the query repeats
# the predicate literally, so the claim SQL in `sqlite.py`/`postgres.py` spells it the same way.
Index(
    "ix_executions_claimable",
    executions.c.next_round_at,
    sqlite_where=text("finalized = 0"),
    postgresql_where=text("NOT finalized"),
)
Index("ix_executions_created_at", executions.c.created_at)
# The claim's order: higher priority first, then the longest due. The same partial predicate, so it
# too holds only rows that still need a round. `next_due_at` keeps using the index above.
Index(
    "ix_executions_claimable_priority",
    executions.c.priority.desc(),
    executions.c.next_round_at,
    sqlite_where=text("finalized = 0"),
    postgresql_where=text("NOT finalized"),
)
# A second submission with the same key returns the first execution (NULLs never collide).
Index("ix_executions_idempotency_key", executions.c.idempotency_key, unique=True)

events = Table(
    "events",
    metadata,
    Column("execution_id", String(36), primary_key=True),
    # 1, 2, ... per execution: the primary key is what makes a duplicate event impossible.
    Column("seq", Integer, primary_key=True),
    Column("attempt", Integer, nullable=False),
    Column("phase", SmallInteger, nullable=False),
    Column("phase_version", Integer, nullable=False),
    Column("reason", Text),
    Column("error", Text),
    Column("info", Text),
    Column("occurred_at", Double, nullable=False),
)

# Quotas shared by every replica of one store: the registered size of each namespace, and one row
# per token holding a unit of it. The primary key makes an allocation idempotent per token.
resource_quotas = Table(
    "resource_quotas",
    metadata,
    Column("namespace", String(255), primary_key=True),
    Column("quota", Integer, nullable=False),
    Column("updated_at", Double, nullable=False),
)

resource_allocations = Table(
    "resource_allocations",
    metadata,
    Column("namespace", String(255), primary_key=True),
    Column("token", String(255), primary_key=True),
    # The execution that allocated it: its finalize releases whatever it still holds.
    Column("execution_id", String(36)),
    Column("allocated_at", Double, nullable=False),
)
Index("ix_resource_allocations_execution_id", resource_allocations.c.execution_id)

# One row per running daemon (migration 0003): a heartbeat on the database's clock, so that
# `executor replicas` can tell live replicas from ones that died without saying goodbye.
replicas = Table(
    "replicas",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", Double, nullable=False),
    Column("heartbeat_at", Double, nullable=False),
    # Its reconciler's progress: rounds run, when the last one ran, executions in the round under way.
    Column("rounds", Integer, nullable=False),
    Column("last_round_at", Double),
    Column("in_flight", Integer, nullable=False),
)
