"""The schema, as SQLAlchemy Core tables. Migrations in `migrations/` are the only way it changes;
a test checks that a freshly migrated database and these definitions agree."""

from __future__ import annotations

from sqlalchemy import Column, Double, Index, Integer, MetaData, String, Table, Text, text

from executor.store.columns import EVENTS, EXECUTIONS

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# The executions and events columns are declared in `columns.py`, with how each is stored and
# written: the row codecs are derived from the same declaration.
executions = Table("executions", metadata, *(col.column() for col in EXECUTIONS))

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
# Finished executions by phase and finish time (migration 0007), for retention: pruning a phase
# reads only its oldest rows. Partial: running rows are not in it.
Index(
    "ix_executions_finished",
    executions.c.phase,
    executions.c.finished_at,
    sqlite_where=text("finished_at IS NOT NULL"),
    postgresql_where=text("finished_at IS NOT NULL"),
)
# A replica that serves only named queues (EXECUTOR_QUEUES without `default`) claims through this
# one, in the same order per queue: its claim skips no other queue's rows. Only rows of named
# queues are in it, so work in the default queue costs no index write more per round. The claim
# repeats both predicates literally (see `statements.served_predicate`).
Index(
    "ix_executions_claimable_queue",
    executions.c.queue,
    executions.c.priority.desc(),
    executions.c.next_round_at,
    sqlite_where=text("finalized = 0 AND queue <> 'default'"),
    # As PostgreSQL spells it back (the migrations test compares the words).
    postgresql_where=text("((NOT finalized) AND ((queue)::text <> 'default'::text))"),
)
# A second submission with the same key returns the first execution (NULLs never collide).
Index("ix_executions_idempotency_key", executions.c.idempotency_key, unique=True)

events = Table("events", metadata, *(col.column() for col in EVENTS))

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

# Task types paused by `executor pause` (migration 0008): a handful of rows every claim reads once.
paused_task_types = Table(
    "paused_task_types",
    metadata,
    Column("task_type", String(255), primary_key=True),
    Column("paused_at", Double, nullable=False),
    Column("reason", Text),
)

# The schedules' tables live in a module of their own, registered in `metadata` here.
from executor.store import schedule_tables  # noqa: E402, F401
