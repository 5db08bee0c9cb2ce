"""The schedules' queries: declaring, pausing, finding the due ones, and firing a slot.

Firing is the exactly-once part. One transaction advances the schedule only if its next slot is
still the one this replica saw (compare-and-set), writes the (schedule, slot) key, and inserts the
slot's execution with its first event. Two replicas racing for a slot: the second one's update
finds the slot moved on (PostgreSQL re-reads the row once the first commits; SQLite's write lock
serializes them), or its key insert collides, and its transaction rolls back whole. No leader.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from executor.core import Phase
from executor.core.phase import FINAL_PHASES
from executor.core.records import EventRecord
from executor.store import notify, postgres
from executor.store.columns import event_row
from executor.store.guard import guarded
from executor.store.schedule_tables import schedule_slots, schedules
from executor.store.store import Store
from executor.store.submissions import Submission, new_execution_id, new_row


@dataclass(frozen=True, slots=True)
class Decision:
    """What the scheduler decided for one due schedule: its next slot, and the slots to run now."""

    schedule: ScheduleRow
    next_slot: float | None
    slots: Sequence[tuple[float, Submission]]
    skip_if_running: bool


#: The scheduler's decision for each due schedule, made inside the transaction that holds them.
Decide = Callable[[list["ScheduleRow"]], list[Decision]]


@dataclass(frozen=True, slots=True)
class Fired:
    """What one batch did: the executions made, by schedule name; the slots passed over for overlap."""

    executions: dict[str, list[str]]
    overlapped: list[str]
    schedules: int


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    id: str
    name: str
    spec: dict[str, Any]
    source: str
    paused: bool
    next_slot_at: float | None
    last_slot_at: float | None
    last_execution_id: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class SlotRow:
    slot_at: float
    execution_id: str
    fired_at: float


def _row(r: Any) -> ScheduleRow:
    return ScheduleRow(
        r.id,
        r.name,
        json.loads(r.spec),
        r.source,
        bool(r.paused),
        r.next_slot_at,
        r.last_slot_at,
        r.last_execution_id,
        r.created_at,
        r.updated_at,
    )


def _spec_text(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


class ScheduleStore:
    """The schedules' part of the store, over the store's engine (its own errors, its own clock)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._engine = store.engine
        self._writer = store._writer  # BEGIN IMMEDIATE on SQLite: the write lock from the start

    async def now(self) -> float:
        """The database's clock: slots are due by it, whatever the replicas' clocks say."""
        return await self.store.database_now()

    # -- declaring ------------------------------------------------------------------------------

    async def create(
        self, name: str, spec: Mapping[str, Any], source: str, next_slot: float | None, now: float
    ) -> str | None:
        """Store a new schedule; None when one of that name exists (nothing changed)."""
        schedule_id = str(uuid.uuid4())
        with guarded:
            try:
                async with self._writer.begin() as conn:
                    await conn.execute(
                        insert(schedules).values(self._new(schedule_id, name, spec, source, next_slot, now))
                    )
            except IntegrityError:
                return None
        return schedule_id

    async def upsert(
        self, name: str, spec: Mapping[str, Any], source: str, next_slot: float | None, now: float
    ) -> Literal["created", "updated", "unchanged"]:
        """Declare from code or a file, at every replica's start: the same declaration changes
        nothing (its next slot stays); a changed one takes the new spec and its next slot."""
        text_ = _spec_text(spec)
        with guarded:
            for _ in range(2):  # a replica starting at the same time may insert it first
                try:
                    async with self._writer.begin() as conn:
                        found = (
                            await conn.execute(select(schedules).where(schedules.c.name == name))
                        ).first()
                        if found is None:
                            values = self._new(str(uuid.uuid4()), name, spec, source, next_slot, now)
                            await conn.execute(insert(schedules).values(values))
                            return "created"
                        if found.spec == text_:
                            return "unchanged"
                        changes: dict[str, Any] = {"spec": text_, "source": source, "updated_at": now}
                        if not found.paused:
                            changes["next_slot_at"] = next_slot
                        await conn.execute(
                            update(schedules).where(schedules.c.id == found.id).values(changes)
                        )
                        return "updated"
                except IntegrityError:
                    continue
        return "unchanged"

    @staticmethod
    def _new(
        schedule_id: str, name: str, spec: Mapping[str, Any], source: str, next_slot: float | None, now: float
    ) -> dict[str, Any]:
        return {
            "id": schedule_id,
            "name": name,
            "spec": _spec_text(spec),
            "source": source,
            "paused": False,
            "next_slot_at": next_slot,
            "last_slot_at": None,
            "last_execution_id": None,
            "created_at": now,
            "updated_at": now,
        }

    async def get(self, name: str) -> ScheduleRow | None:
        with guarded:
            async with self._engine.connect() as conn:
                found = (await conn.execute(select(schedules).where(schedules.c.name == name))).first()
        return _row(found) if found is not None else None

    async def all(self) -> list[ScheduleRow]:
        with guarded:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(select(schedules).order_by(schedules.c.name))).all()
        return [_row(r) for r in rows]

    async def delete(self, name: str) -> bool:
        """Remove a schedule and its slot keys (the executions it made stay)."""
        with guarded:
            async with self._writer.begin() as conn:
                found = (await conn.execute(select(schedules.c.id).where(schedules.c.name == name))).first()
                if found is None:
                    return False
                await conn.execute(delete(schedule_slots).where(schedule_slots.c.schedule_id == found.id))
                await conn.execute(delete(schedules).where(schedules.c.id == found.id))
        return True

    async def set_paused(self, name: str, paused: bool, next_slot: float | None, now: float) -> bool:
        """Pause (no next slot: a paused schedule is not in the due index) or resume at `next_slot`."""
        with guarded:
            async with self._writer.begin() as conn:
                result = await conn.execute(
                    update(schedules)
                    .where(schedules.c.name == name)
                    .values(paused=paused, next_slot_at=None if paused else next_slot, updated_at=now)
                )
        return bool(result.rowcount)

    # -- the scheduler's round ------------------------------------------------------------------

    async def due(self, now: float, limit: int) -> list[ScheduleRow]:
        """The schedules whose next slot has come, earliest first: a range of the next-slot index."""
        query = (
            select(schedules)
            .where(schedules.c.next_slot_at <= now)
            .order_by(schedules.c.next_slot_at)
            .limit(limit)
        )
        with guarded:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        return [_row(r) for r in rows]

    async def next_due(self) -> float | None:
        """The earliest next slot of all schedules (the index's first entry), to sleep until."""
        with guarded:
            async with self._engine.connect() as conn:
                value = (await conn.execute(select(func.min(schedules.c.next_slot_at)))).scalar()
        return float(value) if value is not None else None

    async def fire_due(self, now: float, limit: int, decide: Decide) -> Fired:
        """Take up to `limit` due schedules, let `decide` plan them, and fire them all in one
        transaction: their rows locked (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so that replicas
        share the due schedules instead of queueing on them; SQLite: the write lock), every slot's
        key, execution and first event inserted in bulk, every schedule advanced.

        10,000 schedules due in the same second were 10,000 transactions one at a time; in
        batches they are a few dozen. Should a key collide nonetheless, the whole batch rolls back
        and nothing was made twice.
        """
        lock = " FOR UPDATE SKIP LOCKED" if self.store.dialect is postgres.DIALECT else ""
        with guarded:
            async with self._writer.begin() as conn:
                rows = (
                    await conn.execute(
                        text(
                            "SELECT * FROM schedules WHERE next_slot_at <= :now "
                            f"ORDER BY next_slot_at LIMIT :limit{lock}"
                        ),
                        {"now": now, "limit": limit},
                    )
                ).all()
                if not rows:
                    return Fired({}, [], 0)
                decisions = decide([_row(r) for r in rows])
                running = await self._still_running(
                    conn, [d.schedule.last_execution_id for d in decisions if d.skip_if_running and d.slots]
                )
                overlapped: list[str] = []
                keyed: list[tuple[str, float, Submission]] = []
                for d in decisions:
                    if d.slots and d.skip_if_running and d.schedule.last_execution_id in running:
                        overlapped.append(d.schedule.name)
                        continue
                    keyed += [(d.schedule.id, slot, submission) for slot, submission in d.slots]
                ids = await self._insert_many(conn, keyed, now)
                names = {d.schedule.id: d.schedule.name for d in decisions}
                made: dict[str, list[str]] = {}
                last: dict[str, tuple[float, str]] = {}
                for (schedule_id, slot, _), eid in zip(keyed, ids, strict=True):
                    last[schedule_id] = (slot, eid)
                    made.setdefault(names[schedule_id], []).append(eid)
                await self._advance(conn, decisions, last, now)
                if ids and self.store.dialect is postgres.DIALECT:
                    await notify.send(conn)
        return Fired(made, overlapped, len(decisions))

    async def _advance(
        self,
        conn: AsyncConnection,
        decisions: Sequence[Decision],
        last: Mapping[str, tuple[float, str]],
        now: float,
    ) -> None:
        """Every decided schedule moved on to its next slot, with its last slot and execution.

        PostgreSQL: one statement over arrays (a batch of 500 sent as 500 updates, even pipelined,
        was a third of a batch's time); SQLite: `executemany` in the open write transaction.
        """
        ids = [d.schedule.id for d in decisions]
        nexts = [d.next_slot for d in decisions]
        slots = [last[i][0] if i in last else None for i in ids]
        executions = [last[i][1] if i in last else None for i in ids]
        if self.store.dialect is postgres.DIALECT:
            await conn.execute(
                text(
                    "UPDATE schedules AS s SET next_slot_at = u.next_slot_at, updated_at = :now, "
                    "last_slot_at = COALESCE(u.last_slot_at, s.last_slot_at), "
                    "last_execution_id = COALESCE(u.last_execution_id, s.last_execution_id) "
                    "FROM unnest(CAST(:ids AS VARCHAR(36)[]), CAST(:nexts AS DOUBLE PRECISION[]), "
                    "CAST(:slots AS DOUBLE PRECISION[]), CAST(:executions AS VARCHAR(36)[])) "
                    "AS u(id, next_slot_at, last_slot_at, last_execution_id) "
                    "WHERE s.id = ANY(CAST(:ids AS VARCHAR(36)[])) AND s.id = u.id"
                ),
                {"ids": ids, "nexts": nexts, "slots": slots, "executions": executions, "now": now},
            )
            return
        await conn.execute(
            text(
                "UPDATE schedules SET next_slot_at = :next, updated_at = :now, "
                "last_slot_at = COALESCE(:last_slot, last_slot_at), "
                "last_execution_id = COALESCE(:last_id, last_execution_id) WHERE id = :id"
            ),
            [
                {"id": i, "next": n, "now": now, "last_slot": slot, "last_id": eid}
                for i, n, slot, eid in zip(ids, nexts, slots, executions, strict=True)
            ],
        )

    async def _still_running(self, conn: AsyncConnection, ids: Sequence[str | None]) -> set[str]:
        wanted = sorted({i for i in ids if i is not None})
        if not wanted:
            return set()
        marks = ", ".join(f":i{n}" for n in range(len(wanted)))
        found = await conn.execute(
            text(f"SELECT id, phase FROM executions WHERE id IN ({marks})"),
            {f"i{n}": value for n, value in enumerate(wanted)},
        )
        return {row.id for row in found if Phase(row.phase) not in FINAL_PHASES}

    async def _insert_many(
        self, conn: AsyncConnection, keyed: Sequence[tuple[str, float, Submission]], now: float
    ) -> list[str]:
        """The slots' keys, executions and first events, each kind in one statement."""
        if not keyed:
            return []
        ids = [new_execution_id() for _ in keyed]
        sql = self.store.sql
        await conn.execute(
            insert(schedule_slots),
            [
                {"schedule_id": schedule_id, "slot_at": slot, "execution_id": eid, "fired_at": now}
                for (schedule_id, slot, _), eid in zip(keyed, ids, strict=True)
            ],
        )
        await conn.execute(
            sql.insert_executions,
            [new_row(eid, sub, now) for (_, _, sub), eid in zip(keyed, ids, strict=True)],
        )
        await conn.execute(
            sql.insert_events,
            [event_row(EventRecord(eid, 1, 1, Phase.QUEUED, 0, now, reason="Submitted")) for eid in ids],
        )
        return ids

    async def run_now(
        self, schedule: ScheduleRow, slot: float, submission: Submission, now: float
    ) -> str | None:
        """One execution of `schedule` for the slot `slot` (now, on the database's clock), outside
        its cron; keyed like any slot, so a repeat for the same instant makes nothing. None: taken."""
        with guarded:
            try:
                async with self._writer.begin() as conn:
                    ids = await self._insert_many(conn, [(schedule.id, slot, submission)], now)
                    await conn.execute(
                        update(schedules)
                        .where(schedules.c.id == schedule.id)
                        .values(last_slot_at=slot, last_execution_id=ids[0], updated_at=now)
                    )
                    if self.store.dialect is postgres.DIALECT:
                        await notify.send(conn)
                    return ids[0]
            except IntegrityError:
                return None

    async def slots(self, schedule_id: str, limit: int = 20) -> list[SlotRow]:
        """The latest slots the schedule made executions for, newest first."""
        query = (
            select(schedule_slots)
            .where(schedule_slots.c.schedule_id == schedule_id)
            .order_by(schedule_slots.c.slot_at.desc())
            .limit(limit)
        )
        with guarded:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        return [SlotRow(r.slot_at, r.execution_id, r.fired_at) for r in rows]
