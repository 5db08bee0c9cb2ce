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


def claim_statement(claimable: str, lock: str) -> str:
    """The claim as one statement: pick the due rows through the partial index, stamp a lease."""
    return (
        "UPDATE executions SET lease_owner = :owner, lease_token = :token, lease_expires_at = :expires "
        "WHERE id IN ("
        f"SELECT id FROM executions WHERE {claimable} AND next_round_at <= :now "
        "AND (lease_expires_at IS NULL OR lease_expires_at < :now) "
        f"ORDER BY next_round_at LIMIT :limit{lock}) "
        f"RETURNING {ALL_COLUMNS}"
    )
