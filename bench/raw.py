"""The raw-SQL limit: the daemon's round with no plugin, no lifecycle, no SQLAlchemy.

Each loop claims a batch with the same statement the store uses (the partial index, a lease,
`RETURNING` the whole row), decides each execution's next phase inline, and writes, in one
transaction, one batched UPDATE of phase, state and outputs (fenced by the lease token) and one
batched INSERT of one event per execution. The same three drivers the daemon can sit on: plain
`sqlite3`, `aiosqlite` and `asyncpg` (which writes each statement's rows as arrays, one statement
for the round, as the daemon's store does there). Whatever the daemon does beyond this is its
overhead; the ratio of the daemon to these loops is the figure that matters.

Workloads: `echo` (one round: SUCCESS, outputs = inputs) and `three` (round 1 writes state
`{"step": 1}`, round 2 reads it and writes `{"step": 2}`, round 3 succeeds).
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg

from executor.store import postgres, sqlite


def _numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    """A statement with `:name` parameters as asyncpg's `$n`, and the names in that order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"(?<!:):(\w+)", number, sql), tuple(names)


#: Phase values as stored (executor.core.Phase); the smoke test checks they still agree.
RUNNING, SUCCESS = 5, 6

#: The daemon's own claim, word for word (named parameters: owner, token, lease_ttl, now, limit):
#: the partial index in priority order, a lease on the database's clock, the whole row returned.
SQLITE_CLAIM = sqlite.DIALECT.claim_sql
SQLITE_UPDATE = (
    "UPDATE executions SET phase = ?, phase_version = ?, reason = ?, outputs = ?, plugin_state = ?, "
    "plugin_state_version = ?, event_seq = ?, rounds = ?, updated_at = ?, attempt_started_at = ?, "
    "finished_at = ?, next_round_at = ?, finalized = ?, "
    "lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL "
    "WHERE id = ? AND lease_token = ?"
)
SQLITE_EVENT = (
    "INSERT INTO events (execution_id, seq, attempt, phase, phase_version, reason, error, info, occurred_at) "
    "VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, ?)"
)
PG_CLAIM, PG_CLAIM_PARAMETERS = _numbered(postgres.DIALECT.claim_sql)
# The same writes as arrays, one statement each: what the daemon's store does on PostgreSQL, so
# that the baseline stays the fastest way to do the same work, not a slower one (the token as an
# array and the ids looked up by key, as there: see `_RoundSql.update_unnest`).
PG_UPDATE_ARRAYS = (
    "UPDATE executions AS e SET phase = u.phase, phase_version = u.phase_version, reason = u.reason, "
    "outputs = u.outputs, plugin_state = u.plugin_state, plugin_state_version = u.plugin_state_version, "
    "event_seq = u.event_seq, rounds = u.rounds, updated_at = u.updated_at, "
    "attempt_started_at = u.attempt_started_at, finished_at = u.finished_at, "
    "next_round_at = u.next_round_at, finalized = u.finalized, "
    "lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL "
    "FROM unnest($1::SMALLINT[], $2::INTEGER[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::INTEGER[], "
    "$7::INTEGER[], $8::INTEGER[], $9::DOUBLE PRECISION[], $10::DOUBLE PRECISION[], "
    "$11::DOUBLE PRECISION[], $12::DOUBLE PRECISION[], $13::BOOLEAN[], $14::VARCHAR(36)[], "
    "$15::VARCHAR(36)[]) "
    "AS u(phase, phase_version, reason, outputs, plugin_state, plugin_state_version, event_seq, rounds, "
    "updated_at, attempt_started_at, finished_at, next_round_at, finalized, id, lease_token) "
    "WHERE e.id = ANY($14::VARCHAR(36)[]) AND e.id = u.id AND e.lease_token = u.lease_token"
)
PG_EVENT_ARRAYS = (
    "INSERT INTO events (execution_id, seq, attempt, phase, phase_version, reason, occurred_at) "
    "SELECT * FROM unnest($1::VARCHAR(36)[], $2::INTEGER[], $3::INTEGER[], $4::SMALLINT[], "
    "$5::INTEGER[], $6::TEXT[], $7::DOUBLE PRECISION[])"
)

OWNER = "raw-baseline"
LEASE_SECONDS = 120.0


def _claim_parameters(token: str, now: float, batch_size: int) -> dict[str, Any]:
    return {
        "owner": OWNER,
        "token": token,
        "lease_ttl": LEASE_SECONDS,
        "now": now,
        "limit": batch_size,
        "dead_after": LEASE_SECONDS,  # the leases of silent replicas: as the store's default
        "host": None,  # the replica's host: it claims unpinned rows (see `store.served`)
    }


@dataclass(frozen=True, slots=True)
class RawRun:
    executions: int
    seconds: float
    rounds: int


def decide(
    rows: Sequence[Any], columns: dict[str, int], workload: str, token: str, now: float, pg: bool
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The round's writes: one UPDATE row and one event row per claimed execution."""
    i_id, i_inputs, i_state = columns["id"], columns["inputs"], columns["plugin_state"]
    i_seq, i_rounds, i_attempt = columns["event_seq"], columns["rounds"], columns["attempt"]
    i_started = columns["attempt_started_at"]
    done = True if pg else 1
    not_done = False if pg else 0
    updates: list[tuple[Any, ...]] = []
    new_events: list[tuple[Any, ...]] = []
    for row in rows:
        seq = row[i_seq] + 1
        started = row[i_started] if row[i_started] is not None else now
        if workload == "echo":
            phase, version, outputs, state, finished = SUCCESS, 0, row[i_inputs], None, True
        else:
            step = json.loads(row[i_state])["step"] if row[i_state] is not None else 0
            outputs = None
            if step >= 2:
                phase, version, state, finished = SUCCESS, 0, row[i_state], True
            else:
                phase, version, state, finished = RUNNING, step, json.dumps({"step": step + 1}), False
        updates.append(
            (
                phase,
                version,
                None,
                outputs,
                state,
                0,
                seq,
                row[i_rounds] + 1,
                now,
                started,
                now if finished else None,
                now,
                done if finished else not_done,
                row[i_id],
                token,
            )
        )
        new_events.append((row[i_id], seq, row[i_attempt], phase, version, None, now))
    return updates, new_events


def _configure(connection: sqlite3.Connection) -> None:
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000", "foreign_keys=ON"):
        connection.execute(f"PRAGMA {pragma}")


def sqlite3_loop(path: Path, workload: str, batch_size: int) -> RawRun:
    """Plain `sqlite3`, synchronous: the ceiling for any SQLite driver stack."""
    connection = sqlite3.connect(path, isolation_level=None)
    _configure(connection)
    rounds = executions = 0
    started = time.perf_counter()
    last = started
    try:
        while True:
            token, now = str(uuid.uuid4()), time.time()
            connection.execute("BEGIN IMMEDIATE")
            cursor = connection.execute(SQLITE_CLAIM, _claim_parameters(token, now, batch_size))
            rows = cursor.fetchall()
            columns = {d[0]: i for i, d in enumerate(cursor.description)}
            connection.execute("COMMIT")
            if not rows:
                break
            updates, new_events = decide(rows, columns, workload, token, time.time(), pg=False)
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(SQLITE_UPDATE, updates)
            connection.executemany(SQLITE_EVENT, new_events)
            connection.execute("COMMIT")
            rounds += 1
            executions += sum(1 for update in updates if update[12])
            last = time.perf_counter()
    finally:
        connection.close()
    return RawRun(executions, last - started, rounds)


async def aiosqlite_loop(path: Path, workload: str, batch_size: int) -> RawRun:
    """`aiosqlite` directly: the driver under the daemon's SQLite store, without SQLAlchemy."""
    async with aiosqlite.connect(path, isolation_level=None) as connection:
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000", "foreign_keys=ON"):
            await connection.execute(f"PRAGMA {pragma}")
        rounds = executions = 0
        started = time.perf_counter()
        last = started
        while True:
            token, now = str(uuid.uuid4()), time.time()
            await connection.execute("BEGIN IMMEDIATE")
            cursor = await connection.execute(SQLITE_CLAIM, _claim_parameters(token, now, batch_size))
            rows = await cursor.fetchall()
            columns = {d[0]: i for i, d in enumerate(cursor.description)}
            await cursor.close()
            await connection.execute("COMMIT")
            if not rows:
                break
            updates, new_events = decide(rows, columns, workload, token, time.time(), pg=False)
            await connection.execute("BEGIN IMMEDIATE")
            await connection.executemany(SQLITE_UPDATE, updates)
            await connection.executemany(SQLITE_EVENT, new_events)
            await connection.execute("COMMIT")
            rounds += 1
            executions += sum(1 for update in updates if update[12])
            last = time.perf_counter()
    return RawRun(executions, last - started, rounds)


async def asyncpg_loop(connect_kwargs: dict[str, Any], workload: str, batch_size: int) -> RawRun:
    """`asyncpg` directly, one connection: the driver under the daemon's PostgreSQL store."""
    connection = await asyncpg.connect(**connect_kwargs)
    try:
        claim = await connection.prepare(PG_CLAIM)
        columns = {attribute.name: i for i, attribute in enumerate(claim.get_attributes())}
        rounds = executions = 0
        started = time.perf_counter()
        last = started
        while True:
            token, now = str(uuid.uuid4()), time.time()
            async with connection.transaction():
                values = _claim_parameters(token, now, batch_size)
                rows = await claim.fetch(*(values[name] for name in PG_CLAIM_PARAMETERS))
            if not rows:
                break
            updates, new_events = decide(rows, columns, workload, token, time.time(), pg=True)
            async with connection.transaction():
                await connection.execute(PG_UPDATE_ARRAYS, *zip(*updates, strict=True))
                await connection.execute(PG_EVENT_ARRAYS, *zip(*new_events, strict=True))
            rounds += 1
            executions += sum(1 for update in updates if update[12])
            last = time.perf_counter()
    finally:
        await connection.close()
    return RawRun(executions, last - started, rounds)
