"""PostgreSQL: claims skip rows another replica has locked, so replicas never wait on each other."""

from __future__ import annotations

from executor.store.dialect import Dialect, claim_statement

#: Must stay the literal predicate of `ix_executions_claimable` (see tables.py).
CLAIMABLE = "NOT finalized"

DIALECT = Dialect(
    name="postgresql",
    claim_sql=claim_statement(CLAIMABLE, " FOR UPDATE SKIP LOCKED"),
    lock_suffix=" FOR UPDATE",
    engine_options={"pool_size": 5, "max_overflow": 5, "pool_pre_ping": True},
)
