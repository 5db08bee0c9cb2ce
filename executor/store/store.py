"""The store: every query the daemon, the client and the CLI make, in one place.

A round costs a fixed number of statements whatever its size: one claim, one lease check, one
batched update per shape of change, one batched insert of events. Finished executions cost
nothing: claims read the partial index of rows that still need a round.
"""

from __future__ import annotations

import enum
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from sqlalchemy import Table, func, insert, select, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import ColumnElement, TextClause

from executor.core import ExecutionError, Phase
from executor.core.phase import TERMINAL_PHASES
from executor.core.records import (
    RECORD_FIELDS,
    EventRecord,
    ExecutionRecord,
    RecordDraft,
    RecordUpdate,
    encode_json,
    frozen_record,
)
from executor.store import notify, postgres, sqlite
from executor.store.dialect import Dialect
from executor.store.errors import StoreError
from executor.store.tables import events, executions


@dataclass(frozen=True, slots=True)
class Submission:
    task_type: str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    priority: int = 0
    max_attempts: int = 1
    #: Seconds since the epoch before which the first round must not run.
    not_before: float | None = None
    #: Seconds each attempt may run from its first round; None: no limit.
    timeout: float | None = None
    #: Seconds from submission by which the whole execution must be over; None: no deadline.
    deadline: float | None = None
    #: Overrides of the daemon's retry backoff, in seconds.
    backoff_base: float | None = None
    backoff_max: float | None = None
    #: A second submission with the same key returns the first execution instead of a new one.
    idempotency_key: str | None = None


class AbortResult(enum.Enum):
    REQUESTED = "requested"
    ALREADY_FINISHED = "already_finished"
    NOT_FOUND = "not_found"


@dataclass(frozen=True, slots=True)
class CommitResult:
    committed: frozenset[str]
    #: Executions whose lease another replica took meanwhile: their round was dropped, not written.
    lost: frozenset[str]
    #: Quota tokens released with the commit, per execution (see `commit_round`).
    released: Mapping[str, int] = field(default_factory=dict)


class _Aiosqlite:
    """The aiosqlite connection under a SQLAlchemy one, for a round's statements on SQLite.

    Each call to aiosqlite is a hop to its thread and back: through SQLAlchemy a statement took
    four (cursor, execute, fetch, close), straight to aiosqlite one, about 14 hops fewer a round.
    sqlite3's errors are raised as SQLAlchemy's, as every other statement of the store raises them.
    """

    __slots__ = ("_driver",)

    def __init__(self, driver: Any) -> None:
        self._driver = driver

    @classmethod
    async def of(cls, conn: AsyncConnection) -> _Aiosqlite:
        return cls((await conn.get_raw_connection()).driver_connection)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run `sql` once per row; the number of rows it changed."""
        try:
            return int((await self._driver.executemany(sql, rows)).rowcount)
        except sqlite3.Error as err:
            raise DBAPIError.instance(sql, None, err, sqlite3.Error) from err

    async def fetchall(self, sql: str, parameters: Sequence[Any]) -> Sequence[Any]:
        try:
            rows: Sequence[Any] = await self._driver.execute_fetchall(sql, parameters)
            return rows
        except sqlite3.Error as err:
            raise DBAPIError.instance(sql, parameters, err, sqlite3.Error) from err


def new_execution_id() -> str:
    """A fresh execution id: a UUID of version 7 (RFC 9562), its first 48 bits the time in ms.

    Ids in submission order keep the primary keys' and the events' B-trees writing near their
    end. Random ids (version 4) sent each round's 256 updates and event inserts to 256 pages
    spread over the whole index: with a million finished executions in the table, every round
    dirtied that many more pages and every WAL checkpoint wrote them back.
    """
    milliseconds = (time.time_ns() // 1_000_000) & ((1 << 48) - 1)
    random = int.from_bytes(os.urandom(10), "big")  # 80 bits: 12 for rand_a, 62 for rand_b
    rand_a, rand_b = random >> 68, random & ((1 << 62) - 1)
    value = (milliseconds << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))


def dialect_for(url: str) -> Dialect:
    if url.startswith("sqlite"):
        return sqlite.DIALECT
    if url.startswith("postgresql"):
        return postgres.DIALECT
    raise StoreError(f"unsupported database URL {url!r}: use sqlite+aiosqlite:// or postgresql+asyncpg://")


def create_engine(url: str) -> AsyncEngine:
    dialect = dialect_for(url)
    if dialect is sqlite.DIALECT:
        sqlite.prepare_url(url)
    engine = create_async_engine(url, **dialect.engine_options)
    if dialect is sqlite.DIALECT:
        sqlite.configure(engine)
    return engine


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = dialect_for(engine.url.render_as_string(hide_password=False))
        # Write transactions take SQLite's write lock at BEGIN (see sqlite.py); PostgreSQL ignores it.
        self._writer = engine.execution_options(**{sqlite.BEGIN_OPTION: "IMMEDIATE"})
        # PostgreSQL runs a statement alone as a transaction of its own: the claim needs no
        # BEGIN and COMMIT around it, two round trips of three.
        self._single_statement = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._claim = _DriverSql(text(self.dialect.claim_sql), engine)
        self._claim_pinned = _DriverSql(text(self.dialect.claim_sql_pinned), engine)
        self._round_sql = _RoundSql(self.dialect is postgres.DIALECT)

    @property
    def overlaps_writes(self) -> bool:
        """Whether one round's commit may run while the next round claims: PostgreSQL's row locks
        let them; SQLite's one write lock would make the claim wait behind the commit."""
        return self.dialect is postgres.DIALECT

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(create_engine(url))

    async def close(self) -> None:
        await self.engine.dispose()

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    # -- submission ---------------------------------------------------------------------------

    async def submit(self, submission: Submission, *, now: float) -> str:
        return (await self.submit_many([submission], now=now))[0]

    async def submit_many(self, submissions: Sequence[Submission], *, now: float) -> list[str]:
        """Store new executions, each QUEUED with its first event, in one transaction.

        A submission whose idempotency key is already stored (or repeated earlier in the batch)
        gets the id of the execution that key first made, and stores nothing.
        """
        if not submissions:
            return []
        try:
            return await self._submit_many(submissions, now)
        except IntegrityError:
            if not any(s.idempotency_key for s in submissions):
                raise
            # Another writer stored one of these keys after we looked: look again, once.
            return await self._submit_many(submissions, now)

    async def _submit_many(self, submissions: Sequence[Submission], now: float) -> list[str]:
        keys = sorted({s.idempotency_key for s in submissions if s.idempotency_key is not None})
        rows, first_events, ids = [], [], []
        async with self._writer.begin() as conn:
            known: dict[str, str] = {}
            if keys:
                found = await conn.execute(
                    select(executions.c.idempotency_key, executions.c.id).where(
                        executions.c.idempotency_key.in_(keys)
                    )
                )
                known = {key: execution_id for key, execution_id in found.all()}
            for submission in submissions:
                key = submission.idempotency_key
                if key is not None and key in known:
                    ids.append(known[key])
                    continue
                execution_id = new_execution_id()
                if key is not None:
                    known[key] = execution_id
                ids.append(execution_id)
                rows.append(_new_row(execution_id, submission, now))
                first_events.append(
                    _event_row(EventRecord(execution_id, 1, 1, Phase.QUEUED, 0, now, reason="Submitted"))
                )
            if not rows:
                return ids
            await conn.execute(insert(executions), rows)
            await conn.execute(insert(events), first_events)
            if self.dialect is postgres.DIALECT:
                await notify.send(conn)  # delivered at commit: a woken replica finds the rows
        return ids

    # -- the round ----------------------------------------------------------------------------

    async def claim(
        self,
        *,
        owner: str,
        token: str,
        limit: int,
        lease_ttl: float,
        now: float,
        lease_now: float | None = None,
    ) -> list[ExecutionRecord]:
        """Lease up to `limit` executions due at `now` to `owner` under `token`, oldest due first.

        Leases are stamped and compared on the database's clock, so replicas whose clocks
        disagree still agree on whose lease is live; `lease_now` pins that clock (tests only).
        """
        params: dict[str, Any] = {
            "owner": owner,
            "token": token,
            "lease_ttl": lease_ttl,
            "now": now,
            "limit": limit,
        }
        statement = self._claim
        if lease_now is not None:
            statement, params["lease_now"] = self._claim_pinned, lease_now
        rows: Sequence[Any]
        if self.dialect is sqlite.DIALECT:
            async with self._writer.begin() as conn:
                driver = await _Aiosqlite.of(conn)
                rows = await driver.fetchall(statement.sql, statement.parameters(params))
        else:
            async with self._single_statement.connect() as conn:
                result = await conn.exec_driver_sql(statement.sql, statement.parameters(params))
                # The driver's own rows (asyncpg Records): `_record` reads them by position, and
                # wrapping each in SQLAlchemy's Row, a copy on asyncpg, cost ~0.7 µs a row.
                rows = result.cursor.fetchall()
                result.close()
        # RETURNING gives no order: restore the one the claim chose them by.
        return sorted((_record(row) for row in rows), key=lambda r: (-r.priority, r.next_round_at))

    async def commit_round(
        self,
        token: str,
        updates: Sequence[RecordUpdate],
        *,
        now: float,
        release_allocations_of: Collection[str] = (),
    ) -> CommitResult:
        """Write a round's results in one transaction, only for rows whose lease is still `token`.

        A final record keeps its lease until its clean-up is recorded, so that no other replica
        runs `finalize` meanwhile; every other record's lease is released. The quota tokens of
        `release_allocations_of` (executions whose clean-up completed) are released in the same
        transaction: one statement for the round, never one per execution.
        """
        if not updates:
            return CommitResult(frozenset(), frozenset())
        if self.dialect is postgres.DIALECT:
            return await self._commit_round_returning(token, updates, now, release_allocations_of)
        if self.dialect is sqlite.DIALECT:
            try:
                return await self._commit_round(token, updates, now, release_allocations_of, checked=False)
            except _LeaseLostError:
                pass  # rolled back: write it again, row by row as the lease check allows
        return await self._commit_round(token, updates, now, release_allocations_of, checked=True)

    async def _commit_round(
        self,
        token: str,
        updates: Sequence[RecordUpdate],
        now: float,
        release_allocations_of: Collection[str],
        *,
        checked: bool,
    ) -> CommitResult:
        """`commit_round`, with the leases read first (`checked`), or fenced by the updates alone.

        Unchecked, on SQLite only: its write transaction holds the database's one write lock from
        BEGIN, and each update matches its row only while the row still holds `token`, so the
        updates' row count says whether every lease held. When one did not, this raises
        `_LeaseLostError` and the transaction rolls back; the checked commit then writes what it may.
        """
        wanted = [update.record.id for update in updates]
        released: dict[str, int] = {}
        sql = self._round_sql
        async with self._writer.begin() as conn:
            if checked:
                kept = await self._still_leased(conn, token, wanted)
                mine = [update for update in updates if update.record.id in kept]
            else:
                kept, mine = set(wanted), list(updates)
            # Straight to the driver: these run once per row, and SQLAlchemy's processing of each
            # row's parameters cost more than the database's work (see `_RoundSql`).
            driver = await _Aiosqlite.of(conn)
            written = 0
            for shape, rows in _grouped_updates(mine, token, now).items():
                written += await driver.executemany(sql.update(*shape), rows)
            if not checked and written != len(mine):
                raise _LeaseLostError
            new_events = [_event_params(event) for update in mine for event in update.events]
            if new_events:
                await driver.executemany(sql.insert_event, new_events)
            releasing = [execution_id for execution_id in release_allocations_of if execution_id in kept]
            if releasing:
                for (execution_id,) in await driver.fetchall(sql.release, (sql.id_list(releasing),)):
                    released[execution_id] = released.get(execution_id, 0) + 1
        return CommitResult(frozenset(kept), frozenset(wanted) - kept, released)

    async def _commit_round_returning(
        self,
        token: str,
        updates: Sequence[RecordUpdate],
        now: float,
        release_allocations_of: Collection[str],
    ) -> CommitResult:
        """`commit_round` on PostgreSQL: one statement per shape of change and one for the events,
        each taking its rows as arrays (`unnest`), the updates fenced by the lease token.

        Under READ COMMITTED an UPDATE that finds a row changed by a concurrent transaction waits
        for it and evaluates its WHERE again on the new row, so `lease_token = token` holds for
        every row it writes, and RETURNING names them: rows whose lease was lost are neither
        written nor get events. This saves the lease check's round trip and asyncpg's
        executemany, which sends and the server executes every row as a statement of its own
        (6.9 -> 5.6 ms for a 256-row round's update and events, measured on the bench's rows).
        """
        wanted = [update.record.id for update in updates]
        released: dict[str, int] = {}
        sql = self._round_sql
        async with self._writer.begin() as conn:
            kept: set[str] = set()
            for shape, rows in _grouped_updates(updates, token, now).items():
                # One array per column, the round's token too (see `_RoundSql.update_unnest`).
                columns = tuple(zip(*rows, strict=True))
                result = await conn.exec_driver_sql(sql.update_unnest(*shape), columns)
                kept.update(execution_id for (execution_id,) in result)
            new_events = [
                _event_params(event)
                for update in updates
                if update.record.id in kept
                for event in update.events
            ]
            if new_events:
                await conn.exec_driver_sql(sql.insert_events_unnest, tuple(zip(*new_events, strict=True)))
            releasing = [execution_id for execution_id in release_allocations_of if execution_id in kept]
            if releasing:
                result = await conn.exec_driver_sql(sql.release, (sql.id_list(releasing),))
                for (execution_id,) in result:
                    released[execution_id] = released.get(execution_id, 0) + 1
        return CommitResult(frozenset(kept), frozenset(wanted) - kept, released)

    async def release_leases(self, token: str, ids: Iterable[str]) -> None:
        """Give up leases without writing a round (shutdown): other replicas may claim at once."""
        id_list = list(ids)
        if not id_list:
            return
        async with self._writer.begin() as conn:
            await conn.execute(
                update(executions)
                .where(executions.c.id.in_(id_list), executions.c.lease_token == token)
                .values(lease_owner=None, lease_token=None, lease_expires_at=None)
            )

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
        claimable = sqlite.CLAIMABLE if self.dialect is sqlite.DIALECT else postgres.CLAIMABLE
        async with self.engine.connect() as conn:
            free = (
                await conn.execute(
                    text(
                        f"SELECT next_round_at FROM executions WHERE {claimable} "
                        "AND (lease_expires_at IS NULL OR lease_expires_at <= next_round_at) "
                        "ORDER BY next_round_at LIMIT 1"
                    )
                )
            ).scalar()
            held_sql = (
                f"SELECT min(lease_expires_at) FROM executions WHERE {claimable} "
                "AND lease_expires_at > next_round_at"
            )
            if free is not None:
                held_sql += " AND next_round_at < :free"
            held = (await conn.execute(text(held_sql), {"free": free} if free is not None else {})).scalar()
            db_now = (await conn.execute(text(f"SELECT {self.dialect.now_sql}"))).scalar_one()
        return (
            float(free) if free is not None else None,
            float(held) if held is not None else None,
            float(db_now),
        )

    async def database_now(self) -> float:
        """The database's clock, in seconds since the epoch."""
        async with self.engine.connect() as conn:
            return float((await conn.execute(text(f"SELECT {self.dialect.now_sql}"))).scalar_one())

    async def _still_leased(self, conn: AsyncConnection, token: str, ids: list[str]) -> set[str]:
        # On PostgreSQL the SELECT locks the rows: nobody may take these leases until we commit.
        sql = self._round_sql
        result = await conn.exec_driver_sql(sql.still_leased, (sql.id_list(ids), token))
        return {row[0] for row in result}

    async def watch_changes(self, on_change: Callable[[], None], interval: float = 0.02) -> None:
        """Call `on_change` whenever another connection commits (runs until cancelled).

        SQLite has no LISTEN/NOTIFY; `PRAGMA data_version` changes when any other connection,
        in this process or another, commits. Polling it costs no disk I/O, so submissions from
        the CLI wake an idle daemon within `interval`. On PostgreSQL it LISTENs for the NOTIFY
        that submissions and abort requests send (see notify.py).
        """
        if self.dialect is postgres.DIALECT:
            await notify.listen(self.engine, on_change)
            return
        if self.dialect is not sqlite.DIALECT:
            return
        conn = await self.engine.connect()
        try:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection  # aiosqlite, in autocommit: no transaction is held open
            assert driver is not None
            last = None
            while True:
                async with driver.execute("PRAGMA data_version") as cursor:
                    row = await cursor.fetchone()
                version = row[0] if row else None
                if last is not None and version != last:
                    on_change()
                last = version
                await anyio.sleep(interval)
        finally:
            # This task is cancelled at shutdown. Closing the connection must not be cancelled in
            # turn: a half-closed aiosqlite connection left SQLAlchemy a clean-up task that hung
            # the process's exit.
            with anyio.CancelScope(shield=True):
                await conn.close()

    # -- reading ------------------------------------------------------------------------------

    async def get(self, execution_id: str) -> ExecutionRecord | None:
        async with self.engine.connect() as conn:
            result = await conn.execute(select(executions).where(executions.c.id == execution_id))
            row = result.first()
        return _record(row) if row is not None else None

    async def list_executions(
        self,
        *,
        phases: Sequence[Phase] = (),
        task_type: str | None = None,
        unfinalized: bool = False,
        limit: int = 50,
        before: tuple[float, str] | None = None,
    ) -> list[ExecutionRecord]:
        """Newest first; `before` is the (created_at, id) of the last row of the previous page."""
        query = select(executions)
        if phases:
            query = query.where(executions.c.phase.in_([int(phase) for phase in phases]))
        if task_type is not None:
            query = query.where(executions.c.task_type == task_type)
        if unfinalized:
            # Attempts that ended and still owe their clean-up (`abort`, `finalize`).
            ended = [int(phase) for phase in Phase if phase.is_terminal]
            query = query.where(executions.c.phase.in_(ended), executions.c.finalized.is_(False))
        if before is not None:
            created_at, last_id = before
            older: ColumnElement[bool] = (executions.c.created_at < created_at) | (
                (executions.c.created_at == created_at) & (executions.c.id < last_id)
            )
            query = query.where(older)
        query = query.order_by(executions.c.created_at.desc(), executions.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(row) for row in rows]

    async def count_by_phase(self) -> dict[Phase, int]:
        query = select(executions.c.phase, func.count()).group_by(executions.c.phase)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {Phase(phase): count for phase, count in rows}

    async def events(self, execution_id: str) -> list[EventRecord]:
        query = select(events).where(events.c.execution_id == execution_id).order_by(events.c.seq)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            EventRecord(
                execution_id=row.execution_id,
                seq=row.seq,
                attempt=row.attempt,
                phase=Phase(row.phase),
                phase_version=row.phase_version,
                occurred_at=row.occurred_at,
                reason=row.reason,
                error=ExecutionError.from_dict(json.loads(row.error)) if row.error else None,
                info=json.loads(row.info) if row.info else None,
            )
            for row in rows
        ]

    # -- abort --------------------------------------------------------------------------------

    async def request_abort(self, execution_id: str, reason: str, *, now: float) -> AbortResult:
        """Record an abort request and make the execution due now; the next round carries it out."""
        final = [int(phase) for phase in (Phase.SUCCESS, Phase.PERMANENT_FAILURE, Phase.ABORTED)]
        async with self._writer.begin() as conn:
            result = await conn.execute(
                update(executions)
                .where(executions.c.id == execution_id, executions.c.phase.not_in(final))
                .values(abort_requested=True, abort_reason=reason, next_round_at=now, updated_at=now)
            )
            if result.rowcount:
                if self.dialect is postgres.DIALECT:
                    await notify.send(conn)
                return AbortResult.REQUESTED
            exists = await conn.execute(select(executions.c.id).where(executions.c.id == execution_id))
            return AbortResult.ALREADY_FINISHED if exists.first() else AbortResult.NOT_FOUND


def _new_row(execution_id: str, submission: Submission, now: float) -> dict[str, Any]:
    return {
        "id": execution_id,
        "task_type": submission.task_type,
        "inputs": encode_json(dict(submission.inputs)),
        "outputs": None,
        "labels": encode_json(dict(submission.labels)),
        "priority": submission.priority,
        "phase": int(Phase.QUEUED),
        "phase_version": 0,
        "reason": "Submitted",
        "error": None,
        "info": None,
        "plugin_state": None,
        "plugin_state_version": 0,
        "attempt": 1,
        "max_attempts": submission.max_attempts,
        "timeout": submission.timeout,
        "deadline_at": now + submission.deadline if submission.deadline is not None else None,
        "backoff_base": submission.backoff_base,
        "backoff_max": submission.backoff_max,
        "idempotency_key": submission.idempotency_key,
        "abort_owed": False,
        "finalize_failures": 0,
        "finalize_error": None,
        "system_failures": 0,
        "event_seq": 1,
        "rounds": 0,
        "created_at": now,
        "updated_at": now,
        "next_round_at": max(now, submission.not_before or now),
        "attempt_started_at": None,
        "finished_at": None,
        "abort_requested": False,
        "abort_reason": None,
        "finalized": False,
        "lease_owner": None,
        "lease_token": None,
        "lease_expires_at": None,
    }


def _record(row: Sequence[Any]) -> ExecutionRecord:
    """A whole row of `executions`, its columns in table order (see `_RECORD_COLUMNS`), as a record.

    This runs for every row a claim returns, and costs more than the claim's SQL does: the row is
    unpacked by position (by name cost more than building the record), the phase comes from a
    dictionary (calling `Phase` runs the enum's lookup machinery), and JSON is decoded by
    `_json`, with the common empty object built directly. The record gets its arguments by
    position too, in the order of its fields (checked at import, see `_RECORD_FIELDS`): passing
    37 keywords cost a fifth of the record's construction. It is made as a draft, then frozen
    (see `frozen_record`): the frozen constructor alone cost 2.7 µs a row.
    """
    (
        id_,
        task_type,
        inputs,
        outputs,
        labels,
        priority,
        phase,
        phase_version,
        reason,
        error,
        info,
        plugin_state,
        plugin_state_version,
        attempt,
        max_attempts,
        system_failures,
        event_seq,
        rounds,
        created_at,
        updated_at,
        next_round_at,
        attempt_started_at,
        finished_at,
        abort_requested,
        abort_reason,
        finalized,
        lease_owner,
        lease_token,
        lease_expires_at,
        abort_owed,
        finalize_failures,
        finalize_error,
        timeout,
        deadline_at,
        backoff_base,
        backoff_max,
        idempotency_key,
    ) = row
    return frozen_record(
        RecordDraft(
            id_,
            task_type,
            {} if inputs == "{}" else _json(inputs),
            _PHASE_OF[phase],
            phase_version,
            created_at,
            next_round_at,
            attempt,
            max_attempts,
            system_failures,
            priority,
            {} if labels == "{}" else _json(labels),
            _json(outputs) if outputs is not None else None,
            reason,
            ExecutionError.from_dict(_json(error)) if error else None,
            _json(info) if info else None,
            plugin_state,
            plugin_state_version,
            event_seq,
            rounds,
            attempt_started_at,
            updated_at,
            finished_at,
            bool(abort_requested),  # SQLite gives 0 and 1
            abort_reason,
            bool(finalized),
            bool(abort_owed),
            finalize_failures,
            finalize_error,
            timeout,
            deadline_at,
            backoff_base,
            backoff_max,
            idempotency_key,
            lease_owner,
            lease_token,
            lease_expires_at,
        )
    )


#: The order `_record` passes a record's fields in; `ExecutionRecord`'s must match it.
_RECORD_FIELDS = (
    "id",
    "task_type",
    "inputs",
    "phase",
    "phase_version",
    "created_at",
    "next_round_at",
    "attempt",
    "max_attempts",
    "system_failures",
    "priority",
    "labels",
    "outputs",
    "reason",
    "error",
    "info",
    "plugin_state",
    "plugin_state_version",
    "event_seq",
    "rounds",
    "attempt_started_at",
    "updated_at",
    "finished_at",
    "abort_requested",
    "abort_reason",
    "finalized",
    "abort_owed",
    "finalize_failures",
    "finalize_error",
    "timeout",
    "deadline_at",
    "backoff_base",
    "backoff_max",
    "idempotency_key",
    "lease_owner",
    "lease_token",
    "lease_expires_at",
)
if RECORD_FIELDS != _RECORD_FIELDS:
    raise RuntimeError("ExecutionRecord's fields changed: update _record and _RECORD_FIELDS to match")

#: A stored phase (its integer value) to the phase: a dictionary lookup, where `Phase(value)` runs
#: the enum's lookup machinery for every row. An unknown value raises, as `Phase(value)` does.
_PHASE_OF: dict[int, Phase] = {int(phase): phase for phase in Phase}

_raw_decode = json.JSONDecoder().raw_decode


def _json(text: str) -> Any:
    """`json.loads(text)`, faster for the compact JSON the store writes (see `encode_json`).

    `json.loads` runs two regular expressions around the C scanner, for surrounding whitespace,
    which cost as much as decoding a small object. `raw_decode` decodes from the first character;
    anything it does not take whole (whitespace, trailing text, errors) goes to `json.loads`, so
    the result, or the error, is the same.
    """
    try:
        value, end = _raw_decode(text)
    except ValueError:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


#: The order `_record` unpacks a row in; the table's must match it (checked at import).
_RECORD_COLUMNS = [
    "id",
    "task_type",
    "inputs",
    "outputs",
    "labels",
    "priority",
    "phase",
    "phase_version",
    "reason",
    "error",
    "info",
    "plugin_state",
    "plugin_state_version",
    "attempt",
    "max_attempts",
    "system_failures",
    "event_seq",
    "rounds",
    "created_at",
    "updated_at",
    "next_round_at",
    "attempt_started_at",
    "finished_at",
    "abort_requested",
    "abort_reason",
    "finalized",
    "lease_owner",
    "lease_token",
    "lease_expires_at",
    "abort_owed",
    "finalize_failures",
    "finalize_error",
    "timeout",
    "deadline_at",
    "backoff_base",
    "backoff_max",
    "idempotency_key",
]
if [column.name for column in executions.columns] != _RECORD_COLUMNS:
    raise RuntimeError("executions' columns changed: update _record and _RECORD_COLUMNS to match")


def _event_row(event: EventRecord) -> dict[str, Any]:
    return dict(zip(_EVENT_COLUMNS, _event_params(event), strict=True))


_ALWAYS_WRITTEN = (
    "phase",
    "phase_version",
    "reason",
    "error",
    "info",
    "attempt",
    "system_failures",
    "event_seq",
    "rounds",
    "updated_at",
    "attempt_started_at",
    "finished_at",
    "lease_owner",
    "lease_token",
    "lease_expires_at",
    "finalized",
    "abort_owed",
    "finalize_failures",
    "finalize_error",
)

_EVENT_COLUMNS = (
    "execution_id",
    "seq",
    "attempt",
    "phase",
    "phase_version",
    "reason",
    "error",
    "info",
    "occurred_at",
)


class _DriverSql:
    """A `text()` statement compiled once to the driver's own SQL and positional parameters.

    The claim returns whole rows for a batch; executed through SQLAlchemy, each row went through
    its result processing. The SQL is the dialect's, unchanged (tests read it from there).
    """

    __slots__ = ("names", "sql")

    def __init__(self, statement: TextClause, engine: AsyncEngine) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        self.sql = compiled.string
        self.names = tuple(compiled.positiontup or ())

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(values[name] for name in self.names)


class _LeaseLostError(Exception):
    """A round's unchecked commit found a row whose lease another replica took (see `commit_round`)."""


class _RoundSql:
    """The per-row statements of `commit_round`, as driver SQL with positional parameters.

    They run as one executemany per statement for a whole batch, and handing SQLAlchemy a
    dictionary per row cost more than the database's work: it compiles the statement once but
    processes every row's parameters in Python. The statements are plain enough to write once per
    placeholder style: `?` for sqlite3, `$n` for asyncpg (with casts where PostgreSQL cannot
    infer a parameter's type).
    """

    def __init__(self, numbered: bool) -> None:
        self._numbered = numbered
        self._updates: dict[tuple[bool, bool], str] = {}
        self._unnest_updates: dict[tuple[bool, bool], str] = {}
        #: PostgreSQL: a round's events in one INSERT, each parameter an array of one column.
        self.insert_events_unnest = (
            f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}) SELECT * FROM unnest("
            + ", ".join(
                f"${number}::{_pg_type(name, events)}[]" for number, name in enumerate(_EVENT_COLUMNS, 1)
            )
            + ")"
        )
        self.insert_event = (
            f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}) "
            f"VALUES ({', '.join(self._marks(1, len(_EVENT_COLUMNS)))})"
        )
        # A list of ids is one parameter: an array for asyncpg, a JSON array SQLite's json_each reads.
        # One statement text whatever the round's size, unlike an IN list of one parameter per id.
        first, second = self._marks(1, 2)
        ids_in = f"= ANY({first})" if numbered else f"IN (SELECT value FROM json_each({first}))"
        lock = postgres.DIALECT.lock_suffix if numbered else ""
        self.still_leased = f"SELECT id FROM executions WHERE id {ids_in} AND lease_token = {second}{lock}"
        self.release = f"DELETE FROM resource_allocations WHERE execution_id {ids_in} RETURNING execution_id"

    def id_list(self, ids: list[str]) -> Any:
        """A list of ids as the one parameter `still_leased` and `release` take."""
        return ids if self._numbered else encode_json(ids)

    def update(self, with_state: bool, with_outputs: bool) -> str:
        """The update of one shape of change; rows come from `_grouped_updates`, in this order:
        the written columns, the value of `next_round_at` if an abort was requested meanwhile,
        its value otherwise, then the id and the lease token the row must still hold."""
        shape = (with_state, with_outputs)
        sql = self._updates.get(shape)
        if sql is None:
            columns = _written_columns(with_state, with_outputs)
            marks = self._marks(1, len(columns) + 4)
            assignments = [f"{name} = {mark}" for name, mark in zip(columns, marks, strict=False)]
            on_abort, otherwise, execution_id, token = marks[len(columns) :]
            # An abort requested while the round ran must not wait for the plugin's requeue time.
            # Cast: inside CASE, PostgreSQL would take the parameters for text.
            assignments.append(
                f"next_round_at = CASE WHEN abort_requested THEN CAST({on_abort} AS DOUBLE PRECISION) "
                f"ELSE CAST({otherwise} AS DOUBLE PRECISION) END"
            )
            sql = (
                f"UPDATE executions SET {', '.join(assignments)} "
                f"WHERE id = {execution_id} AND lease_token = {token}"
            )
            self._updates[shape] = sql
        return sql

    def update_unnest(self, with_state: bool, with_outputs: bool) -> str:
        """PostgreSQL: `update` for all of a shape's rows at once, each parameter an array of one
        column (rows from `_grouped_updates`, transposed); it returns the ids of the rows it
        wrote, those still leased under the token.

        Written so that PostgreSQL finds each row by its key whatever its statistics say. With
        the token as one parameter, `lease_token = $n` looked to the planner like one row in the
        table (nearly every row's token is NULL): it scanned the table for it and joined the arrays
        to that row, rescanning them once per row, 16-40 ms for 256 rows instead of 3. Hence the
        token as an array like the rest, and `id = ANY(ids)` to look the rows up by key.
        """
        shape = (with_state, with_outputs)
        sql = self._unnest_updates.get(shape)
        if sql is None:
            columns = _written_columns(with_state, with_outputs)
            arrays = [f"${number}::{_pg_type(name)}[]" for number, name in enumerate(columns, 1)]
            count = len(columns)
            arrays += [f"${count + 1}::DOUBLE PRECISION[]", f"${count + 2}::DOUBLE PRECISION[]"]
            arrays.append(f"${count + 3}::{_pg_type('id')}[]")
            arrays.append(f"${count + 4}::{_pg_type('lease_token')}[]")
            assignments = [f"{name} = u.{name}" for name in columns]
            # An abort requested while the round ran must not wait for the plugin's requeue time.
            assignments.append(
                "next_round_at = CASE WHEN e.abort_requested THEN u.on_abort ELSE u.next_round_at END"
            )
            sql = (
                f"UPDATE executions AS e SET {', '.join(assignments)} "
                f"FROM unnest({', '.join(arrays)}) "
                f"AS u({', '.join(columns)}, on_abort, next_round_at, id, held_token) "
                f"WHERE e.id = ANY(${count + 3}::{_pg_type('id')}[]) "
                "AND e.id = u.id AND e.lease_token = u.held_token RETURNING e.id"
            )
            self._unnest_updates[shape] = sql
        return sql

    def _marks(self, first: int, count: int) -> list[str]:
        if self._numbered:
            return [f"${number}" for number in range(first, first + count)]
        return ["?"] * count


def _pg_type(column: str, table: Table = executions) -> str:
    """A column's PostgreSQL type, as the table declares it, to cast an array parameter to."""
    return str(table.c[column].type.compile(dialect=_POSTGRESQL))


_POSTGRESQL = postgresql.dialect()  # type: ignore[no-untyped-call]


def _written_columns(with_state: bool, with_outputs: bool) -> tuple[str, ...]:
    columns: tuple[str, ...] = _ALWAYS_WRITTEN
    if with_state:
        columns += ("plugin_state", "plugin_state_version")
    if with_outputs:
        columns += ("outputs",)
    return columns


def _grouped_updates(
    updates: Sequence[RecordUpdate], token: str, now: float
) -> dict[tuple[bool, bool], list[tuple[Any, ...]]]:
    """The rows of one executemany per shape of change (see `_RoundSql.update`): state and
    outputs are written only when they changed.

    Each row is built as one tuple, reading each attribute once: this runs for every execution
    of every round.
    """
    groups: dict[tuple[bool, bool], list[tuple[Any, ...]]] = {}
    for item in updates:
        record = item.record
        phase = record.phase
        terminal = phase in TERMINAL_PHASES
        # An attempt that just ended keeps its lease for the clean-up this round runs next, so no
        # other replica runs `abort`/`finalize` meanwhile; a clean-up that failed lets it go.
        finalized, finalize_failures = record.finalized, record.finalize_failures
        keep_lease = terminal and not finalized and finalize_failures == 0
        error, info, updated_at = record.error, record.info, record.updated_at
        heavy: tuple[Any, ...] = ()
        if item.state_changed:
            heavy = (record.plugin_state, record.plugin_state_version)
        if item.outputs_changed:
            outputs, encoded = record.outputs, item.outputs_json
            if encoded is None and outputs is not None:
                encoded = encode_json(outputs)
            heavy += (encoded,)
        next_round_at = record.next_round_at
        row = (
            _PHASE_VALUE[phase],
            record.phase_version,
            record.reason,
            encode_json(error.to_dict()) if error else None,
            encode_json(info) if info is not None else None,
            record.attempt,
            record.system_failures,
            record.event_seq,
            record.rounds,
            updated_at if updated_at is not None else now,
            record.attempt_started_at,
            record.finished_at,
            record.lease_owner if keep_lease else None,
            token if keep_lease else None,
            record.lease_expires_at if keep_lease else None,
            finalized,
            record.abort_owed,
            finalize_failures,
            record.finalize_error,
            *heavy,
            # An abort requested meanwhile wakes a running execution, not one owing its clean-up.
            next_round_at if terminal else now,
            next_round_at,
            record.id,
            token,
        )
        shape = (item.state_changed, item.outputs_changed)
        group = groups.get(shape)
        if group is None:
            groups[shape] = group = []
        group.append(row)
    return groups


def _event_params(event: EventRecord) -> tuple[Any, ...]:
    """An event as the positional parameters of `_RoundSql.insert_event`, in `_EVENT_COLUMNS`'
    order, built directly: a commit inserts at least one event per execution."""
    error, info = event.error, event.info
    return (
        event.execution_id,
        event.seq,
        event.attempt,
        _PHASE_VALUE[event.phase],
        event.phase_version,
        event.reason,
        encode_json(error.to_dict()) if error else None,
        encode_json(info) if info is not None else None,
        event.occurred_at,
    )


#: Phases as the integers stored: `int(phase)` on an IntEnum cost more than this lookup.
_PHASE_VALUE: dict[Phase, int] = {phase: int(phase) for phase in Phase}
