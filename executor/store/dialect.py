"""What differs between the SQL dialects the store speaks; one module each implements it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from executor.store.tables import executions

#: Every column, in table order: the claim returns whole records.
ALL_COLUMNS = ", ".join(column.name for column in executions.columns)


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    #: Claims a batch: parameters owner, token, expires, now, limit; returns whole rows.
    claim_sql: str
    #: Appended to the SELECT that re-reads a round's leases before its commit writes.
    lock_suffix: str
    engine_options: dict[str, Any]
    #: The database's own clock, in seconds since the epoch: leases are stamped and compared on it,
    #: never on a replica's clock, so a replica whose clock runs ahead cannot take a live lease.
    now_sql: str = ""
    #: The claim with the lease clock pinned to the parameter `lease_now` (tests of exact expiry).
    claim_sql_pinned: str = ""


def claim_statement(
    claimable: str,
    lock: str,
    lease_now: str,
    due: str = "next_round_at <= :now",
    *,
    ids_as_array: bool = False,
) -> str:
    """The claim as one statement: pick the due rows through the partial index, stamp a lease.

    Due times compare with `:now`, the replica's clock (a skewed replica runs a round a little
    early or late, which an idempotent `handle` tolerates). Leases are safety: they expire and are
    stamped on `lease_now`, the database's clock, with `:lease_ttl` seconds to live. Rows come
    highest priority first, then longest due, in the order of `ix_executions_claimable_priority`.

    `ids_as_array` (PostgreSQL): the picked ids become one array the update looks up by primary
    key. Given `id IN (SELECT ...)`, PostgreSQL planned a hash join against a sequential scan of
    the whole table whenever that looked cheap (every pending row read per claim: half the
    claim's time with 20,000 pending); `= ANY(ARRAY(...))` is an index lookup per picked row.
    """
    picked = (
        f"SELECT id FROM executions WHERE {claimable} AND {due} "
        f"AND (lease_expires_at IS NULL OR lease_expires_at < {lease_now}) "
        f"ORDER BY priority DESC, next_round_at LIMIT :limit{lock}"
    )
    where = f"id = ANY(ARRAY({picked}))" if ids_as_array else f"id IN ({picked})"
    return (
        "UPDATE executions SET lease_owner = :owner, lease_token = :token, "
        f"lease_expires_at = {lease_now} + :lease_ttl "
        f"WHERE {where} "
        f"RETURNING {ALL_COLUMNS}"
    )


#: What `claim_sql_pinned` compares leases with instead of the database's clock.
PINNED_LEASE_NOW = "CAST(:lease_now AS DOUBLE PRECISION)"
