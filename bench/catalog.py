"""Every scenario `python -m bench` knows, by the name `--only` takes, in the order they run; those
of `ON_REQUEST` run only when named."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bench import longrun, retention, scenarios, schedules, stragglers
from bench.scenarios import Context

SCENARIOS: dict[str, Callable[[Context], Awaitable[None]]] = {
    **scenarios.SCENARIOS,
    "stragglers": stragglers.stragglers,
    "pickup": stragglers.pickup,
    "schedules": schedules.schedules_scenario,
    "pruning": retention.pruning,
    "churn": retention.churn,
}

#: Scenarios run only when named (`--only`): too long for every `make bench` (`make bench-long`).
ON_REQUEST: dict[str, Callable[[Context], Awaitable[None]]] = {
    "long-run": longrun.long_run,
}
