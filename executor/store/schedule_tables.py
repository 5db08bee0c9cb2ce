"""The schedules' tables (migration 0004), in the store's one `metadata`.

`schedule_slots` is the exactly-once key: its primary key (schedule, slot) is written in the
transaction that advances the schedule and inserts the slot's execution, so two replicas racing
for one slot make one execution; the loser's transaction rolls back whole.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Double, Index, String, Table, Text

from executor.store.tables import metadata

schedules = Table(
    "schedules",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(255), nullable=False),
    #: The declaration as JSON (`executor.schedules.model.ScheduleSpec`).
    Column("spec", Text, nullable=False),
    #: Where it was declared: code, file, cli, api.
    Column("source", String(16), nullable=False),
    Column("paused", Boolean, nullable=False),
    #: The next slot to run; NULL while paused or once `end` has passed. Indexed: a round's due
    #: query reads only the schedules that are due, never the whole table.
    Column("next_slot_at", Double),
    Column("last_slot_at", Double),
    Column("last_execution_id", String(36)),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
)
Index("ix_schedules_next_slot_at", schedules.c.next_slot_at)
Index("ix_schedules_name", schedules.c.name, unique=True)

schedule_slots = Table(
    "schedule_slots",
    metadata,
    Column("schedule_id", String(36), primary_key=True),
    Column("slot_at", Double, primary_key=True),
    Column("execution_id", String(36), nullable=False),
    Column("fired_at", Double, nullable=False),
)
