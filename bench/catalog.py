"""Every scenario `python -m bench` knows, by the name `--only` takes, in the order they run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bench import functions, scenarios, schedules, stragglers
from bench.scenarios import Context

SCENARIOS: dict[str, Callable[[Context], Awaitable[None]]] = {
    **scenarios.SCENARIOS,
    "stragglers": stragglers.stragglers,
    "pickup": stragglers.pickup,
    "schedules": schedules.schedules_scenario,
    "function-tasks": functions.async_functions,
    "function-cpu": functions.cpu_functions,
}
