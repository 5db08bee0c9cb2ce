"""The one JSON shape of a schedule, for the CLI, the API and the dashboard."""

from __future__ import annotations

from typing import Any

from executor.schedules.model import SCHEDULE_LABEL, slot_label
from executor.store.schedules import ScheduleRow, SlotRow


def _when(value: float | None) -> str | None:
    return slot_label(value) if value is not None else None


def schedule_dict(row: ScheduleRow, slots: list[SlotRow] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": row.name,
        "task_type": row.spec.get("task_type"),
        "cron": row.spec.get("cron"),
        "timezone": row.spec.get("timezone"),
        "every": row.spec.get("every"),
        "paused": row.paused,
        "source": row.source,
        "next_slot": _when(row.next_slot_at),
        "last_slot": _when(row.last_slot_at),
        "last_execution_id": row.last_execution_id,
        "label": f"{SCHEDULE_LABEL}={row.name}",
        "spec": row.spec,
    }
    if slots is not None:
        body["slots"] = [
            {
                "slot": slot_label(s.slot_at),
                "execution_id": s.execution_id,
                "fired_at": slot_label(s.fired_at),
            }
            for s in slots
        ]
    return body
