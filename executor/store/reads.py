"""What the client, the CLI, the HTTP API and the loop read, and the one write they may ask for
outside a round: an abort request."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

from executor.core import Phase
from executor.core.records import EventRecord, ExecutionRecord
from executor.store import notify, postgres, statements
from executor.store.base import StoreBase
from executor.store.columns import decode_event, decode_execution
from executor.store.guard import guarded


class AbortResult(enum.Enum):
    REQUESTED = "requested"
    ALREADY_FINISHED = "already_finished"
    NOT_FOUND = "not_found"


class ReadQueries(StoreBase):
    async def get(self, execution_id: str) -> ExecutionRecord | None:
        with guarded:
            async with self.engine.connect() as conn:
                row = (await conn.execute(self.sql.get_execution, {"id": execution_id})).first()
        return decode_execution(row) if row is not None else None

    async def list_executions(
        self,
        *,
        phases: Sequence[Phase] = (),
        task_type: str | None = None,
        unfinalized: bool = False,
        limit: int = 50,
        before: tuple[float, str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[ExecutionRecord]:
        """Newest first; `before` is the (created_at, id) of the last row of the previous page;
        `labels`: only executions carrying every one of them."""
        query = statements.list_executions(
            phases=phases,
            task_type=task_type,
            unfinalized=unfinalized,
            limit=limit,
            before=before,
            labels=labels,
        )
        with guarded:
            async with self.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        return [decode_execution(row) for row in rows]

    async def count_by_phase(self) -> dict[Phase, int]:
        with guarded:
            async with self.engine.connect() as conn:
                rows = (await conn.execute(self.sql.count_by_phase)).all()
        return {Phase(phase): count for phase, count in rows}

    async def events(self, execution_id: str) -> list[EventRecord]:
        with guarded:
            async with self.engine.connect() as conn:
                rows = (await conn.execute(self.sql.events_of, {"id": execution_id})).all()
        return [decode_event(row) for row in rows]

    async def request_abort(self, execution_id: str, reason: str, *, now: float) -> AbortResult:
        """Record an abort request and make the execution due now; the next round carries it out."""
        with guarded:
            async with self._writer.begin() as conn:
                params = {"id": execution_id, "reason": reason, "now": now}
                result = await conn.execute(self.sql.request_abort, params)
                if result.rowcount:
                    if self.dialect is postgres.DIALECT:
                        await notify.send(conn)
                    return AbortResult.REQUESTED
                exists = await conn.execute(self.sql.execution_exists, {"id": execution_id})
                return AbortResult.ALREADY_FINISHED if exists.first() else AbortResult.NOT_FOUND

    # -- when work is due ---------------------------------------------------------------------

    async def next_due_at(self) -> float | None:
        """When a claim may next find work (None: nothing pending)."""
        free, held, _ = await self._due_times()
        due = [value for value in (free, held) if value is not None]
        return min(due) if due else None

    async def due_in(self, now: float) -> float | None:
        """Seconds from `now` (the caller's clock) until a claim may find work (None: nothing pending).

        Due times are on the clock of the replica that wrote them, lease expiries on the
        database's: each is measured against its own clock, so a replica whose clock runs ahead
        does not see a live lease as expired and spin on empty claims until it really is.
        """
        free, held, db_now = await self._due_times()
        waits = []
        if free is not None:
            waits.append(free - now)
        if held is not None:
            waits.append(held - db_now)
        return max(min(waits), 0.0) if waits else None

    async def _due_times(self) -> tuple[float | None, float | None, float]:
        """The earliest due time of an unleased row, the earliest lease expiry, the database's now.

        That is the earliest `next_round_at` of a row that still needs a round, except that a row
        leased past its due time (a round under way, here or on another replica) is not claimable
        before its lease runs out: counting it as due would make an idle loop spin on empty claims.
        Both queries walk the partial index from its start; the rows before the first unleased one
        are only those of rounds in flight, so this stays O(batch).
        """
        sql = self.sql
        with guarded:
            async with self.engine.connect() as conn:
                free = (await conn.execute(sql.next_free_due)).scalar()
                if free is None:
                    held = (await conn.execute(sql.next_held_expiry)).scalar()
                else:
                    held = (await conn.execute(sql.next_held_expiry_before, {"free": free})).scalar()
                db_now = (await conn.execute(sql.now)).scalar_one()
        return (
            float(free) if free is not None else None,
            float(held) if held is not None else None,
            float(db_now),
        )

    async def database_now(self) -> float:
        """The database's clock, in seconds since the epoch."""
        with guarded:
            async with self.engine.connect() as conn:
                return float((await conn.execute(self.sql.now)).scalar_one())
