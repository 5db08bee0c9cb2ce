"""Paused task types: `executor pause TYPE` holds their executions back on every replica.

A pause is one row of `paused_task_types`, read by every claim (see
`statements.served_predicate`), so every replica honours it at its next claim: within one poll
interval. Paused executions stay as they are, queued or between rounds; a round under way
finishes, and an abort request is still carried out. Resuming deletes the row and wakes the
replicas (NOTIFY on PostgreSQL), which find the held-back work due at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select, text

from executor.store import notify, postgres, sqlite
from executor.store.guard import guarded
from executor.store.store import Store
from executor.store.tables import paused_task_types


@dataclass(frozen=True, slots=True)
class PausedTaskType:
    task_type: str
    #: When it was paused, seconds since the epoch.
    paused_at: float
    reason: str | None


async def pause(store: Store, task_type: str, *, now: float, reason: str | None = None) -> bool:
    """Pause `task_type`; False when it was paused already (its first pause is kept)."""
    insert = (
        "INSERT INTO paused_task_types (task_type, paused_at, reason) VALUES (:task_type, :now, :reason) "
        "ON CONFLICT (task_type) DO NOTHING"
    )
    with guarded:
        async with store.engine.execution_options(**{sqlite.BEGIN_OPTION: "IMMEDIATE"}).begin() as conn:
            result = await conn.execute(text(insert), {"task_type": task_type, "now": now, "reason": reason})
            return bool(result.rowcount)


async def resume(store: Store, task_type: str) -> bool:
    """Resume `task_type`; False when it was not paused."""
    with guarded:
        async with store.engine.execution_options(**{sqlite.BEGIN_OPTION: "IMMEDIATE"}).begin() as conn:
            result = await conn.execute(
                delete(paused_task_types).where(paused_task_types.c.task_type == task_type)
            )
            if result.rowcount and store.dialect is postgres.DIALECT:
                await notify.send(conn)  # its executions are due: wake the replicas
            return bool(result.rowcount)


async def paused(store: Store) -> list[PausedTaskType]:
    """The paused task types, by name."""
    with guarded:
        async with store.engine.connect() as conn:
            rows = (
                await conn.execute(select(paused_task_types).order_by(paused_task_types.c.task_type))
            ).all()
    return [PausedTaskType(row.task_type, float(row.paused_at), row.reason) for row in rows]
