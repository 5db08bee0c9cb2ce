"""What the doors print for a paused task type: the one JSON shape, for the CLI and the API."""

from __future__ import annotations

from typing import Any

from executor.store.pauses import PausedTaskType
from executor.views import iso


def paused_dict(row: PausedTaskType) -> dict[str, Any]:
    return {"task_type": row.task_type, "paused_at": iso(row.paused_at), "reason": row.reason}
