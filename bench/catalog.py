"""Every scenario `python -m bench` knows, by the name `--only` takes, in the order they run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bench import bulk, scenarios, stragglers
from bench.scenarios import Context

SCENARIOS: dict[str, Callable[[Context], Awaitable[None]]] = {
    **scenarios.SCENARIOS,
    "stragglers": stragglers.stragglers,
    "pickup": stragglers.pickup,
    "bulk": bulk.bulk,
    "concurrent-submissions": bulk.concurrent,
}
