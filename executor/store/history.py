"""Finished executions: the filters every door lists them by, pruning them, requeueing them, and
counting failures by error code.

The store decides nothing here either: which rows are old enough and what a requeued record
looks like come from `executor.history`; these are the statements that find and move them.

Pruning deletes in small transactions, each a batch of rows found through the partial index
`ix_executions_finished` (final rows only, by phase and finish time), so that a pass over a
million rows never holds a long transaction and never reads a row a round is working on. Only
rows in a final phase whose clean-up has run (`finalized`) are deleted: the condition is in the
DELETE itself, so a row requeued between the batch's choice and its deletion stays. On
PostgreSQL a batch takes a transaction-level advisory lock first (`try`: a replica that finds it
taken leaves the pass to the one holding it) and skips rows another transaction has locked;
on SQLite the write lock every write transaction takes at BEGIN makes batches one at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import anyio
from sqlalchemy import and_, bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from executor.core import Phase
from executor.core.records import EventRecord, ExecutionRecord, encode_json
from executor.store import notify, postgres
from executor.store.base import StoreBase
from executor.store.columns import decode_execution, event_row
from executor.store.filters import ExecutionFilter, error_code_of, filter_clauses
from executor.store.guard import guarded
from executor.store.tables import executions

#: The phases an execution ends in, and the ones it can be requeued from.
FINAL = (Phase.SUCCESS, Phase.PERMANENT_FAILURE, Phase.ABORTED)
REQUEUEABLE = (Phase.PERMANENT_FAILURE, Phase.ABORTED)

#: The key of the advisory lock a PostgreSQL replica holds while it prunes (any constant; "prune").
PRUNE_LOCK_KEY = 0x7072756E65
_TRY_LOCK = text("SELECT pg_try_advisory_lock(:key)")
_UNLOCK = text("SELECT pg_advisory_unlock(:key)")
_DELETE_EVENTS = text("DELETE FROM events WHERE execution_id IN :ids").bindparams(
    bindparam("ids", expanding=True)
)


@dataclass(frozen=True, slots=True)
class FailureCount:
    phase: Phase
    error_code: str | None
    count: int


class HistoryQueries:
    """The statements over finished executions, on a store's connections."""

    def __init__(self, store: StoreBase) -> None:
        self.store = store
        self._postgres = store.dialect is postgres.DIALECT
        true = store.dialect.true
        finished = (
            f"finished_at IS NOT NULL AND phase = :phase AND finished_at < :cutoff AND finalized = {true}"
        )
        # The condition again in the DELETE: a row requeued since the SELECT chose it stays. On
        # PostgreSQL, rows another transaction holds (a requeue) are skipped, not waited for.
        skip = " FOR UPDATE SKIP LOCKED" if self._postgres else ""
        self._count_prunable = text(f"SELECT count(*) FROM executions WHERE {finished}")
        self._prune = text(
            f"DELETE FROM executions WHERE id IN (SELECT id FROM executions WHERE {finished} "
            f"ORDER BY finished_at LIMIT :limit{skip}) AND phase = :phase AND finalized = {true} RETURNING id"
        )

    # -- listing ---------------------------------------------------------------------------------

    async def matching(
        self, selection: ExecutionFilter, *, limit: int, before: tuple[float, str] | None = None
    ) -> list[ExecutionRecord]:
        """Newest first, as `list_executions`; `before` continues after that (created_at, id)."""
        query = select(executions).where(*filter_clauses(selection))
        if before is not None:
            created_at, last_id = before
            query = query.where(
                (executions.c.created_at < created_at)
                | and_(executions.c.created_at == created_at, executions.c.id < last_id)
            )
        query = query.order_by(executions.c.created_at.desc(), executions.c.id.desc()).limit(limit)
        with guarded:
            async with self.store.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        return [decode_execution(row) for row in rows]

    async def failure_counts(self, selection: ExecutionFilter) -> list[FailureCount]:
        """How many executions ended in each failed phase, per error code, most first."""
        phases = selection.phases or REQUEUEABLE
        failed = replace(selection, phases=phases)
        code = error_code_of().label("code")
        query = (
            select(executions.c.phase, code, func.count().label("n"))
            .where(*filter_clauses(failed))
            .group_by(executions.c.phase, code)
        )
        with guarded:
            async with self.store.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        counts = [FailureCount(Phase(phase), code, int(n)) for phase, code, n in rows]
        return sorted(counts, key=lambda c: (-c.count, c.phase, c.error_code or ""))

    # -- pruning ---------------------------------------------------------------------------------

    async def count_prunable(self, phase: Phase, cutoff: float) -> int:
        """How many executions a prune of `phase` finished before `cutoff` would delete."""
        params = {"phase": int(phase), "cutoff": cutoff}
        with guarded:
            async with self.store.engine.connect() as conn:
                return int((await conn.execute(self._count_prunable, params)).scalar_one())

    @asynccontextmanager
    async def prune_lease(self) -> AsyncIterator[bool]:
        """Whether this replica may prune now: on PostgreSQL, while it holds a session advisory
        lock on a connection of its own (in autocommit: no transaction stays open), which another
        replica's `try` finds taken, and which the server drops with the connection if this process
        dies. On SQLite, always: its write lock makes the batches one at a time anyway."""
        if not self._postgres:
            yield True
            return
        with guarded:
            conn = await self.store._single_statement.connect()
        try:
            with guarded:
                held = bool((await conn.execute(_TRY_LOCK, {"key": PRUNE_LOCK_KEY})).scalar_one())
            try:
                yield held
            finally:
                if held:
                    await _unlock(conn)
        finally:
            with anyio.CancelScope(shield=True):
                await conn.close()

    async def prune_batch(self, phase: Phase, cutoff: float, limit: int) -> list[str]:
        """Delete up to `limit` executions of final `phase` finished before `cutoff`, oldest first,
        and their events, in one short transaction; the ids deleted."""
        if phase not in FINAL:
            raise ValueError(f"{phase.name} is not a final phase: only finished executions are pruned")
        params = {"phase": int(phase), "cutoff": cutoff, "limit": limit}
        with guarded:
            async with self.store._writer.begin() as conn:
                ids = [row[0] for row in (await conn.execute(self._prune, params)).all()]
                if ids:
                    await conn.execute(_DELETE_EVENTS, {"ids": ids})
        return ids

    # -- requeueing ------------------------------------------------------------------------------

    async def ids(
        self, selection: ExecutionFilter, *, limit: int, after: tuple[float, str] | None = None
    ) -> list[tuple[float, str]]:
        """(created_at, id) of the executions `selection` matches, oldest first, `limit` at a time."""
        query = select(executions.c.created_at, executions.c.id).where(*filter_clauses(selection))
        if after is not None:
            created_at, last_id = after
            query = query.where(
                (executions.c.created_at > created_at)
                | and_(executions.c.created_at == created_at, executions.c.id > last_id)
            )
        query = query.order_by(executions.c.created_at, executions.c.id).limit(limit)
        with guarded:
            async with self.store.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        return [(float(created_at), str(execution_id)) for created_at, execution_id in rows]

    async def count(self, selection: ExecutionFilter) -> int:
        query = select(func.count()).select_from(executions).where(*filter_clauses(selection))
        with guarded:
            async with self.store.engine.connect() as conn:
                return int((await conn.execute(query)).scalar_one())

    async def write_requeue(
        self, before: ExecutionRecord, after: ExecutionRecord, event: EventRecord
    ) -> bool:
        """Store `after` (a new attempt of `before`, which ended in a requeueable phase) and its
        event, if the row is still as `before` was read: ended, cleaned up, with no event since.
        False when it changed meanwhile (requeued by someone else, pruned)."""
        final = ", ".join(str(int(p)) for p in REQUEUEABLE)
        true, false = self.store.dialect.true, "FALSE" if self._postgres else "0"
        update = text(
            "UPDATE executions SET phase = :phase, phase_version = :phase_version, reason = :reason, "
            "error = NULL, info = :info, outputs = NULL, plugin_state = NULL, plugin_state_version = 0, "
            "attempt = :attempt, max_attempts = :max_attempts, system_failures = 0, "
            "event_seq = :event_seq, updated_at = :now, next_round_at = :next_round_at, "
            f"attempt_started_at = NULL, finished_at = NULL, abort_requested = {false}, "
            f"abort_reason = NULL, finalized = {false}, abort_owed = {false}, finalize_failures = 0, "
            "finalize_error = NULL, deadline_at = :deadline_at, lease_owner = NULL, lease_token = NULL, "
            "lease_expires_at = NULL "
            f"WHERE id = :id AND event_seq = :seen_seq AND finalized = {true} AND phase IN ({final})"
        )
        params = {
            "id": before.id,
            "seen_seq": before.event_seq,
            "phase": int(after.phase),
            "phase_version": after.phase_version,
            "reason": after.reason,
            "info": encode_json(after.info) if after.info is not None else None,
            "attempt": after.attempt,
            "max_attempts": after.max_attempts,
            "event_seq": after.event_seq,
            "now": after.updated_at,
            "next_round_at": after.next_round_at,
            "deadline_at": after.deadline_at,
        }
        with guarded:
            async with self.store._writer.begin() as conn:
                if not (await conn.execute(update, params)).rowcount:
                    return False
                await conn.execute(self.store.sql.insert_events, [event_row(event)])
                if self._postgres:
                    await notify.send(conn)
        return True


async def _unlock(conn: AsyncConnection) -> None:
    """Give the pruning lock back. A connection that cannot is closed rather than pooled: the
    server drops a session's advisory locks with it, and a pooled one would hold the lock on."""
    with anyio.CancelScope(shield=True):
        try:
            await conn.execute(_UNLOCK, {"key": PRUNE_LOCK_KEY})
        except Exception:
            await conn.invalidate()
