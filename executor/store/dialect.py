"""What differs between the SQL dialects the store speaks; one module each implements it, and
`statements.py` builds each dialect's statements from it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    #: Claims a batch: parameters owner, token, lease_ttl, now, limit; returns whole rows.
    claim_sql: str
    #: Appended to the SELECT that re-reads a round's leases before its commit writes.
    lock_suffix: str
    engine_options: dict[str, Any]
    #: The database's own clock, in seconds since the epoch: leases are stamped and compared on it,
    #: never on a replica's clock, so a replica whose clock runs ahead cannot take a live lease.
    now_sql: str
    #: The claim with the lease clock pinned to the parameter `lease_now` (tests of exact expiry).
    claim_sql_pinned: str
    #: The predicate of the claimable rows' partial index, spelled as the index spells it: a query
    #: that repeats it literally reads only rows that still need a round.
    claimable: str
    #: The driver's placeholders: `$1, $2, ...` (asyncpg) or `?` (sqlite3).
    numbered: bool
    #: The literal true.
    true: str
    #: The claim of a replica serving `queues` (None: every queue), its lease clock pinned to
    #: `lease_now` when the second argument says so; `claim_sql` is `claim_for(None, False)`.
    claim_for: Callable[[Sequence[str] | None, bool], str]
