"""PostgreSQL: claims skip rows another replica has locked, so replicas never wait on each other."""

from __future__ import annotations

from executor.store.dialect import Dialect
from executor.store.statements import PINNED_LEASE_NOW, claim_statement

#: Must stay the literal predicate of `ix_executions_claimable` (see tables.py).
CLAIMABLE = "NOT finalized"

#: The server's clock in epoch seconds: when the statement began, one value for every row.
NOW = "CAST(EXTRACT(EPOCH FROM statement_timestamp()) AS DOUBLE PRECISION)"

DIALECT = Dialect(
    name="postgresql",
    claim_sql=claim_statement(CLAIMABLE, " FOR UPDATE SKIP LOCKED", NOW, ids_as_array=True),
    lock_suffix=" FOR UPDATE",
    engine_options={"pool_size": 5, "max_overflow": 5, "pool_pre_ping": True},
    now_sql=NOW,
    claim_sql_pinned=claim_statement(
        CLAIMABLE, " FOR UPDATE SKIP LOCKED", PINNED_LEASE_NOW, ids_as_array=True
    ),
    claimable=CLAIMABLE,
    numbered=True,
    true="TRUE",
)
