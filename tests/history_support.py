"""Seeding a store with finished history fast: rows written as the store writes them (the row
codecs of `executor.store.columns`), in a few multi-row inserts, as if a daemon had run them long ago."""

from __future__ import annotations

from executor.core import Phase
from executor.core.records import EventRecord, ExecutionRecord
from executor.store import Store
from executor.store.columns import encode_execution, event_row
from executor.store.submissions import new_execution_id

CHUNK = 2000


async def seed_finished(
    store: Store, count: int, phase: Phase, *, finished_at: float, finalized: bool = True
) -> list[str]:
    """`count` executions that ended in `phase` at `finished_at`, each with its two events."""
    ids: list[str] = []
    for start in range(0, count, CHUNK):
        rows, events = [], []
        for _ in range(min(CHUNK, count - start)):
            execution_id = new_execution_id()
            ids.append(execution_id)
            record = ExecutionRecord(
                execution_id,
                "echo",
                {},
                phase,
                0,
                finished_at - 1,
                finished_at,
                event_seq=2,
                rounds=1,
                updated_at=finished_at,
                finished_at=finished_at,
                finalized=finalized,
            )
            rows.append(encode_execution(record))
            events.append(event_row(EventRecord(execution_id, 1, 1, Phase.QUEUED, 0, finished_at - 1)))
            events.append(event_row(EventRecord(execution_id, 2, 1, phase, 0, finished_at)))
        async with store.engine.begin() as conn:
            await conn.execute(store.sql.insert_executions, rows)
            await conn.execute(store.sql.insert_events, events)
    return ids


async def seed_waiting(store: Store, count: int, *, created_at: float, due_at: float) -> list[str]:
    """`count` executions submitted at `created_at` (long ago) that are not due before `due_at`."""
    ids = []
    for _ in range(count):
        execution_id = new_execution_id()
        ids.append(execution_id)
        record = ExecutionRecord(
            execution_id, "echo", {}, Phase.QUEUED, 0, created_at, due_at, event_seq=1, updated_at=created_at
        )
        async with store.engine.begin() as conn:
            await conn.execute(store.sql.insert_executions, [encode_execution(record)])
            await conn.execute(
                store.sql.insert_events,
                [event_row(EventRecord(execution_id, 1, 1, Phase.QUEUED, 0, created_at))],
            )
    return ids
