"""Declaring and managing schedules, for every door: code, the start-up file, the CLI and the API.

A declaration is checked twice over before anything is stored: the schedule's own fields (cron,
time zone, interval, bounds: `model.check`) and its submission through the same `Client.validate`
every door submits through (task type, inputs against the plugin's input model, options).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import pydantic

from executor.client import Client, SubmissionError
from executor.plugin.task_exec_context import field_errors
from executor.schedules.model import (
    SCHEDULE_LABEL,
    SLOT_LABEL,
    ScheduleError,
    ScheduleSpec,
    check,
    first_slot,
    slot_label,
)
from executor.store import Submission
from executor.store.schedules import ScheduleRow, ScheduleStore

Source = Literal["code", "file", "cli", "api"]


def parse_spec(data: Mapping[str, Any]) -> ScheduleSpec:
    """A spec from JSON-like data (a file's entry, an API body), refused with the field named."""
    try:
        return ScheduleSpec.model_validate(dict(data))
    except pydantic.ValidationError as err:
        raise ScheduleError(f"schedule {data.get('name', '?')!r}: {field_errors(err)}") from None


def submission_for(client: Client, spec: ScheduleSpec, slot: float) -> Submission:
    """The slot's submission, validated by the client as every door's is, labelled with the
    schedule's name and the slot, and held back by the jitter."""
    labels = {**spec.labels, SCHEDULE_LABEL: spec.name, SLOT_LABEL: slot_label(slot)}
    delay = random.uniform(0, spec.jitter) if spec.jitter else 0.0
    return client.validate(
        spec.task_type,
        spec.inputs,
        labels,
        spec.priority,
        spec.max_attempts,
        datetime.fromtimestamp(slot + delay, UTC),
        timeout=spec.timeout,
        deadline=spec.deadline,
        backoff_base=spec.backoff_base,
        backoff_max=spec.backoff_max,
    )


def validated(client: Client, spec: ScheduleSpec) -> ScheduleSpec:
    """`spec` checked, with its inputs as the plugin's input model normalizes them."""
    check(spec)
    submission = submission_for(client, spec, 0.0)
    return spec.model_copy(update={"inputs": dict(submission.inputs)})


class Schedules:
    """What the doors call: add, list, pause, resume, delete, run now."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.store = ScheduleStore(client.store)

    async def add(self, spec: ScheduleSpec, source: Source) -> ScheduleRow:
        """Store a new schedule, refused if one of that name exists."""
        spec = validated(self.client, spec)
        now = await self.store.now()
        created = await self.store.create(
            spec.name, spec.model_dump(mode="json"), source, first_slot(spec, now), now
        )
        if created is None:
            raise ScheduleError(f"a schedule named {spec.name!r} exists: delete it first to replace it")
        return await self._get(spec.name)

    async def declare(self, spec: ScheduleSpec, source: Source) -> str:
        """Create or update a schedule declared in code or a file; the same declaration again
        (every replica, every start) changes nothing."""
        spec = validated(self.client, spec)
        now = await self.store.now()
        return await self.store.upsert(
            spec.name, spec.model_dump(mode="json"), source, first_slot(spec, now), now
        )

    async def get(self, name: str) -> ScheduleRow | None:
        return await self.store.get(name)

    async def all(self) -> list[ScheduleRow]:
        return await self.store.all()

    async def pause(self, name: str) -> ScheduleRow:
        now = await self.store.now()
        if not await self.store.set_paused(name, True, None, now):
            raise LookupError(name)
        return await self._get(name)

    async def resume(self, name: str) -> ScheduleRow:
        """Resume from the first slot after now: slots that passed while paused are not misfires."""
        row = await self._get(name)
        now = await self.store.now()
        await self.store.set_paused(name, False, first_slot(ScheduleSpec.model_validate(row.spec), now), now)
        return await self._get(name)

    async def delete(self, name: str) -> None:
        if not await self.store.delete(name):
            raise LookupError(name)

    async def run_now(self, name: str) -> str:
        """One execution now, outside the schedule's slots (labelled with the current instant)."""
        row = await self._get(name)
        spec = ScheduleSpec.model_validate(row.spec)
        now = await self.store.now()
        submission = submission_for(self.client, spec.model_copy(update={"jitter": 0.0}), now)
        execution_id = await self.store.run_now(row, now, submission, now)
        if execution_id is None:
            raise SubmissionError("a run of this schedule was made for this very instant; try again")
        return execution_id

    async def _get(self, name: str) -> ScheduleRow:
        row = await self.store.get(name)
        if row is None:
            raise LookupError(name)
        return row
