"""Schedules: work that recurs, each slot submitted exactly once however many replicas run.

`model` is the pure part (what a schedule is, which slots are due); `service` declares and manages
them for every door; `scheduler` runs in every daemon; `declared` reads code and file declarations.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from executor.client import Client
    from executor.schedules.declared import declare_schedule
    from executor.schedules.model import ScheduleError, ScheduleSpec
    from executor.schedules.scheduler import Scheduler
    from executor.schedules.service import Schedules
    from executor.settings import Settings

#: Imported on first use: `executor schedule ...` is registered on every command line, which must not
#: pay for the scheduler and the client when it runs `executor get` (tests/test_cli_speed.py).
_LAZY = {
    "ScheduleError": "executor.schedules.model",
    "ScheduleSpec": "executor.schedules.model",
    "Scheduler": "executor.schedules.scheduler",
    "Schedules": "executor.schedules.service",
    "declare_schedule": "executor.schedules.declared",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'executor.schedules' has no attribute {name!r}")


__all__ = [
    "ScheduleError",
    "ScheduleSpec",
    "Scheduler",
    "Schedules",
    "declare_at_start",
    "declare_schedule",
]


async def declare_at_start(client: Client, settings: Settings) -> None:
    """Store the schedules plugin modules declared and those of EXECUTOR_SCHEDULES_FILE.

    A bad declaration stops the start-up with its reason, as a broken plugin does.
    """
    from executor.client import SubmissionError
    from executor.logging import get_logger
    from executor.schedules.declared import declared_in_code, read_file
    from executor.schedules.model import ScheduleError
    from executor.schedules.service import Schedules

    specs = declared_in_code()
    in_code = {spec.name for spec in specs}
    if settings.schedules_file is not None:
        in_file = read_file(settings.schedules_file)
        _refuse_twice_declared(in_code, in_file, settings.schedules_file)
        specs += in_file
    schedules = Schedules(client)
    log = get_logger(replica=settings.replica_id)
    for spec in specs:
        try:
            result = await schedules.declare(spec, "code" if spec.name in in_code else "file")
        except SubmissionError as err:
            raise ScheduleError(f"schedule {spec.name!r}: {err}") from None
        if result != "unchanged":
            log.info("schedules.declared", schedule=spec.name, result=result)


def _refuse_twice_declared(in_code: set[str], in_file: list[ScheduleSpec], path: object) -> None:
    """A name declared twice would leave the stored schedule to whichever came last, silently
    (and differently on replicas that see different files): refused at start-up instead."""
    from executor.schedules.model import ScheduleError

    seen: set[str] = set()
    for spec in in_file:
        if spec.name in in_code:
            raise ScheduleError(
                f"schedule {spec.name!r} is declared both in plugin code and in {path}; "
                "a schedule has one source: remove one of them"
            )
        if spec.name in seen:
            raise ScheduleError(f"schedule {spec.name!r} is declared twice in {path}")
        seen.add(spec.name)
