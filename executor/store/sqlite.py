"""SQLite: WAL, one writer at a time, and transactions that take the write lock up front.

pysqlite's own transaction handling is switched off so that write transactions can begin with
`BEGIN IMMEDIATE`: a deferred transaction that reads and then writes can fail with SQLITE_BUSY
when another process got the lock in between, and `busy_timeout` does not help in that case.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from executor.store.dialect import Dialect
from executor.store.statements import PINNED_LEASE_NOW, claim_statement

#: Must stay the literal predicate of `ix_executions_claimable` (see tables.py).
CLAIMABLE = "finalized = 0"

#: The database's clock in epoch seconds, to the millisecond (`unixepoch('subsec')` needs 3.42).
NOW = "((julianday('now') - 2440587.5) * 86400.0)"

#: The claim reads `ix_executions_claimable_priority` in its (priority DESC, next_round_at) order.
#: Told that half the rows may be due, SQLite's planner walks that index (with statistics, as a
#: skip-scan: each priority's due range, O(priorities + batch)) instead of reading every due row
#: through `ix_executions_claimable` and sorting them; likelihood() changes only the estimate.
DUE = "likelihood(next_round_at <= :now, 0.5)"


def claim_for(queues: Sequence[str] | None, pinned: bool) -> str:
    lease_now = PINNED_LEASE_NOW if pinned else NOW
    return claim_statement(CLAIMABLE, "", lease_now, DUE, queues=queues, likely=LIKELY)


#: The claim's other terms, which nearly every row passes (see `statements.served_predicate`).
LIKELY = "likelihood({}, 0.99)"

DIALECT = Dialect(
    name="sqlite",
    claim_sql=claim_for(None, False),
    lock_suffix="",
    # Every transaction ends in an explicit commit or rollback (a Connection rolls back what it
    # began when it closes), so the pool's own rollback on return is a second, empty one: a hop
    # to aiosqlite's thread and back for nothing, twice a round.
    engine_options={"connect_args": {"timeout": 30}, "pool_reset_on_return": None},
    now_sql=NOW,
    claim_sql_pinned=claim_for(None, True),
    claimable=CLAIMABLE,
    numbered=False,
    true="1",
    claim_for=claim_for,
)

BEGIN_OPTION = "executor_sqlite_begin"

#: Changes whenever another connection commits: how an idle daemon notices submissions.
DATA_VERSION = "PRAGMA data_version"


def prepare_url(url: str) -> None:
    """Create the database file's directory, so a fresh path just works."""
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)


def database_missing(url: str) -> bool:
    """Whether `url` names a SQLite file that does not exist yet (opening it would create it)."""
    if not url.startswith("sqlite"):
        return False
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return False
    return not Path(database).expanduser().exists()


def configure(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            "PRAGMA busy_timeout=30000",
            "PRAGMA foreign_keys=ON",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(BEGIN_OPTION, "DEFERRED")
        # Straight to aiosqlite: one hop to its thread, where a statement through SQLAlchemy's
        # cursor takes three (cursor, execute, close); two transactions a round begin here.
        connection.connection.dbapi_connection.run_async(
            lambda driver: driver.execute_fetchall(f"BEGIN {mode}")
        )
