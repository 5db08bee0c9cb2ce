"""Read-only figures for the status dashboard: what finished per minute, and who holds leases.

Kept apart from `store.py` because nothing in a round depends on them; kept in the store package
because SQL lives here. Both are bounded reads meant for a page refreshed every few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Integer, and_, cast, func, select, text
from sqlalchemy.sql.elements import ColumnElement

from executor.core import Phase
from executor.store import postgres, sqlite
from executor.store.guard import guarded
from executor.store.store import Store
from executor.store.tables import executions

#: The phases an execution ends in.
FINAL_PHASES = (Phase.SUCCESS, Phase.PERMANENT_FAILURE, Phase.ABORTED)


@dataclass(frozen=True, slots=True)
class FinishedCount:
    #: Start of the minute, in seconds since the epoch (a multiple of 60).
    minute: int
    phase: Phase
    count: int


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    owner: str
    executions: int
    #: The latest expiry among its leases, in seconds since the epoch.
    lease_expires_at: float


async def finished_per_minute(store: Store, *, since: float) -> list[FinishedCount]:
    """Executions that reached a final phase at or after `since`, counted per minute and phase.

    There is no index on `finished_at`: this reads the executions table. Fine for a dashboard
    polled every few seconds on a modest table; see the README before pointing it at millions.
    """
    minute = _minute_of(executions.c.finished_at, postgres_dialect=store.dialect is postgres.DIALECT)
    query = (
        select(minute.label("minute"), executions.c.phase, func.count())
        .where(
            executions.c.finished_at >= since,
            executions.c.phase.in_([int(phase) for phase in FINAL_PHASES]),
        )
        .group_by(minute, executions.c.phase)
    )
    with guarded:
        async with store.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
    return sorted(
        (FinishedCount(int(row[0]) * 60, Phase(row[1]), int(row[2])) for row in rows),
        key=lambda item: (item.minute, item.phase),
    )


async def lease_holders(store: Store, *, now: float) -> list[LeaseHolder]:
    """Replicas holding unexpired leases right now, with how many executions each holds.

    A leased row is never finalized, so the query repeats the claimable predicate literally and
    reads only the partial index's rows, not the finished history.
    """
    claimable = sqlite.CLAIMABLE if store.dialect is sqlite.DIALECT else postgres.CLAIMABLE
    query = (
        select(executions.c.lease_owner, func.count(), func.max(executions.c.lease_expires_at))
        .where(
            and_(
                text(claimable),
                executions.c.lease_owner.is_not(None),
                executions.c.lease_expires_at > now,
            )
        )
        .group_by(executions.c.lease_owner)
        .order_by(executions.c.lease_owner)
    )
    with guarded:
        async with store.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
    return [LeaseHolder(str(row[0]), int(row[1]), float(row[2])) for row in rows]


def _minute_of(column: ColumnElement[float], *, postgres_dialect: bool) -> ColumnElement[int]:
    # PostgreSQL rounds when it casts a double to an integer; SQLite truncates (and has no floor()
    # unless built with its math functions). Times are positive, so truncation is the floor.
    if postgres_dialect:
        return cast(func.floor(column / 60), Integer)
    return cast(column / 60, Integer)
