"""New executions: each stored QUEUED with its first event, in one transaction per batch."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy.exc import IntegrityError

from executor.core import Phase
from executor.core.records import EventRecord
from executor.store import notify, postgres
from executor.store.base import StoreBase
from executor.store.columns import event_row, new_row_encoder
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


class SubmissionQueries(StoreBase):
    async def submit(self, submission: Submission, *, now: float) -> str:
        return (await self.submit_many([submission], now=now))[0]

    async def submit_many(self, submissions: Sequence[Submission], *, now: float) -> list[str]:
        """Store new executions, each QUEUED with its first event, in one transaction.

        A submission whose idempotency key is already stored (or repeated earlier in the batch)
        gets the id of the execution that key first made, and stores nothing.
        """
        if not submissions:
            return []
        with guarded:
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
                found = await conn.execute(self.sql.known_idempotency_keys, {"keys": keys})
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
                rows.append(new_row(execution_id, submission, now))
                first_events.append(
                    event_row(EventRecord(execution_id, 1, 1, Phase.QUEUED, 0, now, reason="Submitted"))
                )
            if not rows:
                return ids
            await conn.execute(self.sql.insert_executions, rows)
            await conn.execute(self.sql.insert_events, first_events)
            if self.dialect is postgres.DIALECT:
                await notify.send(conn)  # delivered at commit: a woken replica finds the rows
        return ids
