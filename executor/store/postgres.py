"""PostgreSQL: claims skip rows another replica has locked, so replicas never wait on each other."""

from __future__ import annotations

from collections.abc import Sequence

from executor.store.dialect import Dialect
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
