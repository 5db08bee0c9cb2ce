"""Every SQL statement of the store's executions and events, each named once, per dialect where
they differ (after procrastinate's `sql/queries.sql`).

The round's statements (claim, lease check, updates, events, releases) run as the driver's own SQL
with positional parameters, `?` for sqlite3 and `$n` for asyncpg, compiled once per store: handing
SQLAlchemy a dictionary per row cost more than the database's work (it compiles a statement once
but processes every row's parameters in Python). The others are SQLAlchemy `text()` with named
parameters. Column lists come from `columns.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, bindparam, insert, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ColumnElement, TextClause

from executor.core import Phase
from executor.core.records import encode_json
from executor.store.columns import EVENT_COLUMNS, EXECUTION_COLUMNS, committed_columns
from executor.store.dialect import Dialect
from executor.store.filters import label_clauses
from executor.store.tables import events, executions

#: Every column, in table order: the claim and the reads return whole records.
ALL_COLUMNS = ", ".join(EXECUTION_COLUMNS)

#: What `claim_sql_pinned` compares leases with instead of the database's clock.
PINNED_LEASE_NOW = "CAST(:lease_now AS DOUBLE PRECISION)"

#: The phases an execution ends in, as stored.
_FINAL = ", ".join(str(int(phase)) for phase in (Phase.SUCCESS, Phase.PERMANENT_FAILURE, Phase.ABORTED))


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

    A lease is also taken over before it expires when its owner is another replica whose
    heartbeat (the `replicas` table, on the same clock) is more than `:dead_after` seconds old:
    a dead replica's work resumes within a few heartbeats, not a whole TTL. The token still
    fences: a replica that was only slow finds its lease gone and loses its commit. The replicas
    are a handful of rows, read once per claim (a hashed subplan), so the claim stays O(batch).

    `ids_as_array` (PostgreSQL): the picked ids become one array the update looks up by primary
    key. Given `id IN (SELECT ...)`, PostgreSQL planned a hash join against a sequential scan of
    the whole table whenever that looked cheap (every pending row read per claim: half the
    claim's time with 20,000 pending); `= ANY(ARRAY(...))` is an index lookup per picked row.
    """
    picked = (
        f"SELECT id FROM executions WHERE {claimable} AND {due} "
        f"AND (lease_expires_at IS NULL OR lease_expires_at < {lease_now} OR lease_owner IN ("
        f"SELECT id FROM replicas WHERE heartbeat_at < {lease_now} - :dead_after AND id <> :owner)) "
        f"ORDER BY priority DESC, next_round_at LIMIT :limit{lock}"
    )
    where = f"id = ANY(ARRAY({picked}))" if ids_as_array else f"id IN ({picked})"
    return (
        "UPDATE executions SET lease_owner = :owner, lease_token = :token, "
        f"lease_expires_at = {lease_now} + :lease_ttl "
        f"WHERE {where} "
        f"RETURNING {ALL_COLUMNS}"
    )


_POSTGRESQL = postgresql.dialect()  # type: ignore[no-untyped-call]


def _pg_type(column: str, table: Any = executions) -> str:
    """A column's PostgreSQL type, as the table declares it, to cast an array parameter to."""
    return str(table.c[column].type.compile(dialect=_POSTGRESQL))


@dataclass(frozen=True)
class Statements:
    """The statements of one dialect. Build with `statements_for`."""

    dialect: Dialect
    #: The database's clock, in seconds since the epoch.
    now: TextClause = field(init=False)
    ping: TextClause = field(init=False)
    #: The earliest due time of an unleased row that still needs a round.
    next_free_due: TextClause = field(init=False)
    #: The earliest lease expiry of a row leased past its due time (`_before`: due before `:free`).
    next_held_expiry: TextClause = field(init=False)
    next_held_expiry_before: TextClause = field(init=False)
    get_execution: TextClause = field(init=False)
    count_by_phase: TextClause = field(init=False)
    events_of: TextClause = field(init=False)
    #: Record an abort request and make the execution due now, unless it has ended.
    request_abort: TextClause = field(init=False)
    execution_exists: TextClause = field(init=False)
    #: The executions some idempotency keys (`:keys`, a list) already made.
    known_idempotency_keys: TextClause = field(init=False)
    insert_executions: Insert = field(init=False)
    insert_events: Insert = field(init=False)
    # -- driver SQL, positional ---------------------------------------------------------------
    #: The leases of a round still held under a token (locked on PostgreSQL): ids, token.
    still_leased: str = field(init=False)
    #: Release the quota tokens of executions, returning whose: ids.
    release_allocations: str = field(init=False)
    #: Give leases up without writing a round: ids, token.
    release_leases: str = field(init=False)
    #: Extend leases still held, returning which: seconds to live, ids, tokens (a list).
    renew_leases: str = field(init=False)
    #: One event, its columns in `EVENT_COLUMNS`' order.
    insert_event: str = field(init=False)
    #: PostgreSQL: a round's events in one INSERT, each parameter an array of one column.
    insert_events_unnest: str = field(init=False)

    def __post_init__(self) -> None:
        d = self.dialect
        claimable = d.claimable
        first, second, third = self._marks(1, 3)

        def in_list(mark: str) -> str:
            # A list is one parameter: an array for asyncpg, a JSON array SQLite's json_each reads.
            # One statement text whatever the round's size, unlike an IN list of one parameter per id.
            return f"= ANY({mark})" if d.numbered else f"IN (SELECT value FROM json_each({mark}))"

        ids_in = in_list(first)
        event_marks = ", ".join(self._marks(1, len(EVENT_COLUMNS)))
        values = {
            "now": text(f"SELECT {d.now_sql}"),
            "ping": text("SELECT 1"),
            "next_free_due": text(
                f"SELECT next_round_at FROM executions WHERE {claimable} "
                "AND (lease_expires_at IS NULL OR lease_expires_at <= next_round_at) "
                "ORDER BY next_round_at LIMIT 1"
            ),
            "next_held_expiry": text(
                f"SELECT min(lease_expires_at) FROM executions WHERE {claimable} "
                "AND lease_expires_at > next_round_at"
            ),
            "next_held_expiry_before": text(
                f"SELECT min(lease_expires_at) FROM executions WHERE {claimable} "
                "AND lease_expires_at > next_round_at AND next_round_at < :free"
            ),
            "get_execution": text(f"SELECT {ALL_COLUMNS} FROM executions WHERE id = :id"),
            "count_by_phase": text("SELECT phase, count(*) FROM executions GROUP BY phase"),
            "events_of": text(
                f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE execution_id = :id ORDER BY seq"
            ),
            "request_abort": text(
                f"UPDATE executions SET abort_requested = {d.true}, abort_reason = :reason, "
                f"next_round_at = :now, updated_at = :now WHERE id = :id AND phase NOT IN ({_FINAL})"
            ),
            "execution_exists": text("SELECT id FROM executions WHERE id = :id"),
            "known_idempotency_keys": text(
                "SELECT idempotency_key, id FROM executions WHERE idempotency_key IN :keys"
            ).bindparams(bindparam("keys", expanding=True)),
            "insert_executions": insert(executions),
            "insert_events": insert(events),
            "still_leased": (
                f"SELECT id FROM executions WHERE id {ids_in} AND lease_token = {second}{d.lock_suffix}"
            ),
            "release_allocations": (
                f"DELETE FROM resource_allocations WHERE execution_id {ids_in} RETURNING execution_id"
            ),
            "release_leases": (
                "UPDATE executions SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL "
                f"WHERE id {ids_in} AND lease_token = {second}"
            ),
            "renew_leases": (
                f"UPDATE executions SET lease_expires_at = {d.now_sql} + CAST({first} AS DOUBLE PRECISION) "
                f"WHERE id {in_list(second)} AND lease_token {in_list(third)} RETURNING id"
            ),
            "insert_event": f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({event_marks})",
            "insert_events_unnest": (
                f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) SELECT * FROM unnest("
                + ", ".join(
                    f"${number}::{_pg_type(name, events)}[]" for number, name in enumerate(EVENT_COLUMNS, 1)
                )
                + ")"
            ),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_updates", {})
        object.__setattr__(self, "_unnest_updates", {})

    def id_list(self, ids: Sequence[str]) -> Any:
        """A list of ids as the one parameter `still_leased`, `release_*` take."""
        return list(ids) if self.dialect.numbered else encode_json(list(ids))

    def update_round(self, with_state: bool, with_outputs: bool) -> str:
        """A round's update of one row, of one shape of change; its parameters are a row of
        `columns.commit_rows`: the written columns, the value of `next_round_at` if an abort was
        requested meanwhile, its value otherwise, then the id and the lease token the row must
        still hold."""
        shape = (with_state, with_outputs)
        updates: dict[tuple[bool, bool], str] = self._updates  # type: ignore[attr-defined]
        sql = updates.get(shape)
        if sql is None:
            columns = committed_columns(with_state, with_outputs)
            marks = self._marks(1, len(columns) + 4)
            assignments = [_assignment(name, mark) for name, mark in zip(columns, marks, strict=False)]
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
            updates[shape] = sql
        return sql

    def update_round_unnest(self, with_state: bool, with_outputs: bool) -> str:
        """PostgreSQL: `update_round` for all of a shape's rows at once, each parameter an array of
        one column (rows from `columns.commit_rows`, transposed); it returns the ids of the rows it
        wrote, those still leased under the token.

        Written so that PostgreSQL's custom plan finds each row by its key whatever its statistics
        say (the store asks for custom plans: a generic plan costed on a small table scans it, see
        `postgres.SERVER_SETTINGS`). With the token as one parameter, `lease_token = $n` looked to
        the planner like one row in the table (nearly every row's token is NULL): it scanned the
        table for it and joined the arrays to that row, rescanning them once per row, 16-40 ms for
        256 rows instead of 3. Hence the token as an array like the rest, and `id = ANY(ids)` to
        look the rows up by key.
        """
        shape = (with_state, with_outputs)
        updates: dict[tuple[bool, bool], str] = self._unnest_updates  # type: ignore[attr-defined]
        sql = updates.get(shape)
        if sql is None:
            columns = committed_columns(with_state, with_outputs)
            arrays = [f"${number}::{_pg_type(name)}[]" for number, name in enumerate(columns, 1)]
            count = len(columns)
            arrays += [f"${count + 1}::DOUBLE PRECISION[]", f"${count + 2}::DOUBLE PRECISION[]"]
            arrays.append(f"${count + 3}::{_pg_type('id')}[]")
            arrays.append(f"${count + 4}::{_pg_type('lease_token')}[]")
            assignments = [_assignment(name, f"u.{name}", row="e.") for name in columns]
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
            updates[shape] = sql
        return sql

    def _marks(self, first: int, count: int) -> list[str]:
        if self.dialect.numbered:
            return [f"${number}" for number in range(first, first + count)]
        return ["?"] * count


def _assignment(name: str, value: str, row: str = "") -> str:
    """A committed column's assignment. A lease kept past the commit keeps the expiry the row has:
    the loop may have renewed it since the claim (a call that outlived its round), so the
    record's copy could be stale; NULL gives the lease up."""
    if name == "lease_expires_at":
        return (
            f"{name} = CASE WHEN CAST({value} AS DOUBLE PRECISION) IS NULL THEN NULL "
            f"ELSE {row}lease_expires_at END"
        )
    return f"{name} = {value}"


def list_executions(
    *,
    phases: Sequence[Phase],
    task_type: str | None,
    unfinalized: bool,
    limit: int,
    before: tuple[float, str] | None,
    labels: Mapping[str, str] | None = None,
) -> Select[Any]:
    """Executions newest first, filtered; `before` is the (created_at, id) of the previous page's
    last row. Built per call: its filters are optional."""
    query = select(executions)
    if phases:
        query = query.where(executions.c.phase.in_([int(phase) for phase in phases]))
    if task_type is not None:
        query = query.where(executions.c.task_type == task_type)
    if labels:
        query = query.where(*label_clauses(labels))
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
    return query.order_by(executions.c.created_at.desc(), executions.c.id.desc()).limit(limit)


_BY_DIALECT: dict[str, Statements] = {}


def statements_for(dialect: Dialect) -> Statements:
    """The statements of `dialect`, built once."""
    found = _BY_DIALECT.get(dialect.name)
    if found is None:
        found = _BY_DIALECT[dialect.name] = Statements(dialect)
    return found
