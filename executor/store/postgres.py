"""PostgreSQL: claims skip rows another replica has locked, so replicas never wait on each other.

Connections die under a running daemon (`pg_terminate_backend`, a failover, a proxy's idle
timeout), and a dead one must never be used again: `configure` makes the pool discard it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine

from executor.store.dialect import Dialect
from executor.store.guard import session_over
from executor.store.statements import PINNED_LEASE_NOW, claim_statement

#: Must stay the literal predicate of `ix_executions_claimable` (see tables.py).
CLAIMABLE = "NOT finalized"

#: The server's clock in epoch seconds: when the statement began, one value for every row.
NOW = "CAST(EXTRACT(EPOCH FROM statement_timestamp()) AS DOUBLE PRECISION)"

#: Set on every connection of the store. asyncpg prepares and caches each statement, and after five
#: runs PostgreSQL may switch a prepared statement to a *generic plan*, costed once with the
#: statistics of that moment and never again until the table is analyzed: planned on a nearly
#: empty table, the claim and the commit scanned the whole table for ever after (180 ms instead of
#: 1.5 ms for a claim of 100 rows among 100,000, the table grown without ANALYZE). Custom plans
#: are costed on each run with its parameters and the table's size as it is (PostgreSQL reads
#: the current number of pages even when the statistics are stale); planning these statements
#: costs ~0.1 ms, measured no slower than an up-to-date generic plan (see README, PostgreSQL).
SERVER_SETTINGS = {"plan_cache_mode": "force_custom_plan"}


def claim_for(queues: Sequence[str] | None, pinned: bool) -> str:
    lease_now = PINNED_LEASE_NOW if pinned else NOW
    return claim_statement(CLAIMABLE, " FOR UPDATE SKIP LOCKED", lease_now, ids_as_array=True, queues=queues)


DIALECT = Dialect(
    name="postgresql",
    claim_sql=claim_for(None, False),
    lock_suffix=" FOR UPDATE",
    engine_options={
        "pool_size": 5,
        "max_overflow": 5,
        "pool_pre_ping": True,
        "connect_args": {"server_settings": SERVER_SETTINGS},
    },
    now_sql=NOW,
    claim_sql_pinned=claim_for(None, True),
    claimable=CLAIMABLE,
    numbered=True,
    true="TRUE",
    claim_for=claim_for,
)


#: What a connection of the store calls itself (`pg_stat_activity.application_name`) when the
#: caller names no role.
DEFAULT_APPLICATION_NAME = "executor"


def engine_options(application_name: str | None) -> dict[str, Any]:
    """The engine's options, its connections named `application_name` in `pg_stat_activity` (so
    that an operator, or a fault test, can tell the daemon's connections from a client's)."""
    options = copy.deepcopy(DIALECT.engine_options)
    settings = options["connect_args"]["server_settings"]
    settings["application_name"] = application_name or DEFAULT_APPLICATION_NAME
    return options


def configure(engine: AsyncEngine) -> None:
    """Discard every connection an error left unusable, instead of handing it out again.

    SQLAlchemy's asyncpg dialect takes a connection for dead only when asyncpg reports it closed
    at the moment of the error. That covers a session ended by the server once asyncpg has read
    its FATAL error (the later `InternalClientError: cannot switch to state 12; another operation
    (2) is in progress` is asyncpg still consuming it), but not the errors raised before asyncpg
    marks the connection closed: a socket error or a timeout mid-statement, asyncpg's
    `InterfaceError` about an operation already in progress. Those connections went back to the
    pool. Marked as a disconnect, each is invalidated (closed, never reused); a pre-ping that
    finds one connects afresh without the caller seeing anything (`session_over` says which).
    """

    @event.listens_for(engine.sync_engine, "handle_error")
    def _discard_broken(context: ExceptionContext) -> None:
        if context.connection is None and not context.is_pre_ping:
            return  # connecting failed: there is no connection to discard
        if session_over(context.original_exception):
            context.is_disconnect = True
            # Only this connection: the others' sessions are not known to be over (one killed
            # session is not a server restart), and the pre-ping catches any that are.
            context.invalidate_pool_on_disconnect = False
