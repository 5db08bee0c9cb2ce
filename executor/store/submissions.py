"""New executions: each stored QUEUED with its first event, in one transaction per batch."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from executor.core import Phase
from executor.core.records import EventRecord
from executor.store import notify, postgres
from executor.store.base import Aiosqlite, StoreBase
from executor.store.columns import encode_event, new_row_encoder
from executor.store.errors import ConnectionLost, StoreUnavailable, SubmissionFailed
from executor.store.group_commit import GroupCommit
from executor.store.guard import guarded


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
    #: The queue it waits in (README: Queues and pinning).
    queue: str = "default"
    #: Pin it to the host of the replica that claims it first.
    pin_to_host: bool = False


#: Idempotency keys looked up per statement (SQLite allows 32,766 parameters in one).
KEYS_PER_LOOKUP: Final = 1000
#: Groups of single submissions written at once on PostgreSQL (see `group_commit.py`).
GROUP_WRITERS: Final = 4
#: New executions per INSERT on PostgreSQL: each column one array of this many values.
ROWS_PER_INSERT: Final = 5000


def new_execution_id() -> str:
    """A fresh execution id: a UUID of version 7 (RFC 9562), its first 48 bits the time in ms.

    Ids in submission order keep the primary keys' and the events' B-trees writing near their
    end. Random ids (version 4) sent each round's 256 updates and event inserts to 256 pages
    spread over the whole index: with a million finished executions in the table, every round
    dirtied that many more pages and every WAL checkpoint wrote them back.
    """
    return new_execution_ids(1)[0]


def new_execution_ids(count: int) -> list[str]:
    """`count` fresh ids (see `new_execution_id`), their random bits read in one call: a bulk
    submission paid a system call and a `uuid.UUID` per row."""
    milliseconds = (time.time_ns() // 1_000_000) & ((1 << 48) - 1)
    random = os.urandom(10 * count)  # 80 bits each: 12 for rand_a, 62 for rand_b
    ids = []
    for start in range(0, 10 * count, 10):
        bits = int.from_bytes(random[start : start + 10], "big")
        rand_a, rand_b = bits >> 68, bits & ((1 << 62) - 1)
        text = f"{(milliseconds << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b:032x}"
        ids.append(f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}")
    return ids


#: What a submission sets of its execution's record, as Python expressions over `execution_id`,
#: `submission` and `now`; every other field is `ExecutionRecord`'s default.
SUBMITTED: Final = {
    "id": "execution_id",
    "task_type": "submission.task_type",
    "inputs": "dict(submission.inputs)",
    "labels": "dict(submission.labels)",
    "priority": "submission.priority",
    "max_attempts": "submission.max_attempts",
    "phase": "Phase.QUEUED",
    "phase_version": "0",
    "reason": "'Submitted'",
    # The first event (`Submitted`) is written with the row.
    "event_seq": "1",
    "created_at": "now",
    "updated_at": "now",
    "next_round_at": "max(now, submission.not_before or now)",
    "timeout": "submission.timeout",
    "deadline_at": "now + submission.deadline if submission.deadline is not None else None",
    "backoff_base": "submission.backoff_base",
    "backoff_max": "submission.backoff_max",
    "idempotency_key": "submission.idempotency_key",
    "not_before": "submission.not_before",
    "queue": "submission.queue",
    "pin_to_host": "submission.pin_to_host",
}

#: A new execution's row, by column name: `new_row(execution_id, submission, now)`.
new_row: Final = new_row_encoder("new_row", SUBMITTED, ("execution_id", "submission", "now"))


#: Attempts at storing a submission whose connection was lost (its session killed, a failover),
#: and the pause before the second, doubled before each next one up to `MAX_RETRY_PAUSE` (with
#: jitter): at most 3.75 s of pauses in all, then the caller is told whether anything was stored
#: (`SubmissionFailed`). Five attempts within 0.75 s were not enough on a loaded machine whose
#: sessions were all killed twice a second: one submission in ~2,500 failed (saying so).
SUBMIT_ATTEMPTS = 8
FIRST_RETRY_PAUSE = 0.05
MAX_RETRY_PAUSE = 1.0


@dataclass(slots=True)
class _Attempt:
    """How far one attempt got, for the verdict when it fails."""

    #: Its statements ran and the commit was under way: the database may have committed it.
    committing: bool = False
    #: It found the earlier attempts' executions not stored (so none of them committed).
    looked: bool = False


class SubmissionQueries(StoreBase):
    async def submit(self, submission: Submission, *, now: float) -> str:
        """Store one execution, in the transaction of the submissions that arrive with it
        (`group_commit.py`); its id once that transaction has committed."""
        grouped: GroupCommit | None = self.__dict__.get("_grouped")
        if grouped is None:
            writers = GROUP_WRITERS if self.dialect is postgres.DIALECT else 1
            grouped = self.__dict__["_grouped"] = GroupCommit(self._submit_at, writers=writers)
        return await grouped.submit(submission, now)

    async def drain_submissions(self) -> None:
        """Wait for the group commits under way (before the engine closes)."""
        grouped: GroupCommit | None = self.__dict__.get("_grouped")
        if grouped is not None:
            await grouped.drain()

    async def submit_many(self, submissions: Sequence[Submission], *, now: float) -> list[str]:
        """Store new executions, each QUEUED with its first event, in one transaction.

        A submission whose idempotency key is already stored (or repeated earlier in the batch)
        gets the id of the execution that key first made, and stores nothing.

        A lost connection is retried (`SUBMIT_ATTEMPTS`), safely: each new execution's id is
        drawn once, before the first attempt, and an attempt after one whose commit was under
        way when the connection died first looks whether those ids are stored. A submission is
        thus never stored twice, whether or not the caller gave idempotency keys. When every
        attempt fails, `SubmissionFailed` says whether anything was stored.
        """
        return await self._submit_at(submissions, [now] * len(submissions))

    async def _submit_at(self, submissions: Sequence[Submission], times: Sequence[float]) -> list[str]:
        """`submit_many`, each submission at its own time of submission."""
        if not submissions:
            return []
        planned = new_execution_ids(len(submissions))
        maybe_stored = False  # whether an earlier attempt's commit may have taken place
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            progress = _Attempt()
            try:
                with guarded:
                    return await self._submit_keyed(submissions, planned, times, maybe_stored, progress)
            except StoreUnavailable as err:
                if progress.committing:
                    maybe_stored = True
                elif progress.looked:
                    maybe_stored = False
                if attempt == SUBMIT_ATTEMPTS or not isinstance(err, ConnectionLost):
                    # Only a lost connection is worth another attempt at once (SQLite's errors
                    # come after its 30 s busy timeout): the others are answered as they come.
                    raise SubmissionFailed(
                        str(err), stored=None if maybe_stored else False, execution_ids=tuple(planned)
                    ) from err
                pause = min(FIRST_RETRY_PAUSE * 2 ** (attempt - 1), MAX_RETRY_PAUSE)
                await anyio.sleep(pause * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _submit_keyed(
        self,
        submissions: Sequence[Submission],
        planned: Sequence[str],
        times: Sequence[float],
        look_first: bool,
        progress: _Attempt,
    ) -> list[str]:
        try:
            return await self._submit_once(submissions, planned, times, look_first, progress)
        except IntegrityError:
            if not any(s.idempotency_key for s in submissions):
                raise
            # Another writer stored one of these keys after we looked: look again, once.
            return await self._submit_once(submissions, planned, times, look_first, progress)

    async def _submit_once(
        self,
        submissions: Sequence[Submission],
        planned: Sequence[str],
        times: Sequence[float],
        look_first: bool,
        progress: _Attempt,
    ) -> list[str]:
        """One attempt, in one transaction: the executions get the `planned` ids, or, when
        `look_first`, the ids they already have if an earlier attempt stored them."""
        keys = sorted({s.idempotency_key for s in submissions if s.idempotency_key is not None})
        rows: list[tuple[Any, ...]] = []
        first_events: list[tuple[Any, ...]] = []
        new_ids: list[str] = []
        ids: list[str] = []
        async with self._writer.begin() as conn:
            known = await self._known_keys(conn, keys)
            for submission, execution_id, now in zip(submissions, planned, times, strict=True):
                key = submission.idempotency_key
                if key is not None and key in known:
                    ids.append(known[key])
                    continue
                if key is not None:
                    known[key] = execution_id
                ids.append(execution_id)
                new_ids.append(execution_id)
                rows.append(tuple(new_row(execution_id, submission, now).values()))
                first_events.append(
                    encode_event(EventRecord(execution_id, 1, 1, Phase.QUEUED, 0, now, reason="Submitted"))
                )
            if not rows:
                return ids
            if look_first:
                # One transaction stored all of them or none: one found means all were.
                if (await conn.execute(self.sql.stored_ids, {"ids": new_ids})).first() is not None:
                    return ids
                progress.looked = True
            await self._insert_new(conn, rows, first_events)
            if self.dialect is postgres.DIALECT:
                await notify.send(conn)  # delivered at commit: a woken replica finds the rows
            progress.committing = True  # the block's end commits: from here the outcome may be unknown
        return ids

    async def _known_keys(self, conn: AsyncConnection, keys: Sequence[str]) -> dict[str, str]:
        """The executions these idempotency keys already made, asked in slices: one statement
        with a parameter per key would pass SQLite's limit of parameters in a bulk submission."""
        known: dict[str, str] = {}
        for start in range(0, len(keys), KEYS_PER_LOOKUP):
            found = await conn.execute(
                self.sql.known_idempotency_keys, {"keys": keys[start : start + KEYS_PER_LOOKUP]}
            )
            known.update({key: execution_id for key, execution_id in found.all()})
        return known

    async def _insert_new(
        self, conn: AsyncConnection, rows: list[tuple[Any, ...]], first_events: list[tuple[Any, ...]]
    ) -> None:
        """The rows as the driver's own statements, positional: through SQLAlchemy's `insert()`
        each row's dictionary of parameters was processed in Python, which cost more than the
        database's work. PostgreSQL takes a slice of rows per INSERT, one array per column
        (`unnest`); SQLite runs one prepared INSERT per row (`executemany`), in its own thread."""
        sql = self.sql
        if self.dialect is postgres.DIALECT:
            for start in range(0, len(rows), ROWS_PER_INSERT):
                end = start + ROWS_PER_INSERT
                columns = tuple(zip(*rows[start:end], strict=True))
                await conn.exec_driver_sql(sql.insert_executions_unnest, columns)
                events = tuple(zip(*first_events[start:end], strict=True))
                await conn.exec_driver_sql(sql.insert_events_unnest, events)
            return
        driver = await Aiosqlite.of(conn)
        await driver.executemany(sql.insert_execution, rows)
        await driver.executemany(sql.insert_event, first_events)
