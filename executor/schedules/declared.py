"""Schedules declared beside the code that runs them, or in a file the daemon reads at start-up.

A plugin module declares its schedules next to its registration, as Flyte's launch plans sit
beside their tasks:

    plugin_registry().register_core_plugin(PluginEntry(id="reports", ...))
    declare_schedule(name="nightly-report", task_type="report", cron="0 3 * * *",
                     timezone="Europe/Berlin")

The daemon stores them (`Schedules.declare`) once its plugins are imported; the file named by
EXECUTOR_SCHEDULES_FILE (TOML, JSON or YAML: a list of schedules, under `schedules`) likewise.
Declaring again what is stored changes nothing, so every replica can do it at every start.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from executor.schedules.model import ScheduleError, ScheduleSpec
from executor.schedules.service import parse_spec

#: By name, the last declaration wins (plugin modules are imported afresh by each collection).
_DECLARED: dict[str, ScheduleSpec] = {}


def declare_schedule(**fields: Any) -> ScheduleSpec:
    """Declare a schedule from a plugin module (its fields as `ScheduleSpec`'s)."""
    spec = parse_spec(fields)
    _DECLARED[spec.name] = spec
    return spec


def declared_in_code() -> list[ScheduleSpec]:
    return list(_DECLARED.values())


def read_file(path: Path) -> list[ScheduleSpec]:
    """The schedules a TOML, JSON or YAML file declares: `[[schedules]]` entries, or a list."""
    try:
        raw = path.read_text()
    except OSError as err:
        raise ScheduleError(f"cannot read the schedules file {path}: {err.strerror}") from None
    try:
        data: Any
        if path.suffix == ".toml":
            data = tomllib.loads(raw)
        elif path.suffix in (".yaml", ".yml"):
            import yaml  # type: ignore[import-untyped,unused-ignore]  # only when a YAML file is named; PyYAML is then needed

            data = yaml.safe_load(raw)
        else:
            data = json.loads(raw)
    except (ValueError, ImportError) as err:
        raise ScheduleError(f"the schedules file {path} cannot be read: {err}") from None
    entries = data.get("schedules", []) if isinstance(data, dict) else data
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ScheduleError(f"the schedules file {path} must hold a list of schedules (under 'schedules')")
    return [parse_spec(entry) for entry in entries]
