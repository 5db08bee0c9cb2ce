"""bench-wait and bench-block: handles that take long, for the stragglers scenarios (benchmarks only).

`bench-wait` awaits `seconds` (default 0.5) in `handle`, as a remote call does: it holds nothing of
the event loop. `bench-block` sleeps `seconds` on its thread, declared `blocking=True` as the README
advises for synchronous work. Both succeed in one round. A daemon whose rounds wait for their slowest
call lets 1% of either hold everything else; the scenarios measure how much.
"""

import asyncio
import time
from typing import Any

from executor import plugin_registry
from executor.core import (
    PhaseInfo,
    Plugin,
    PluginEntry,
    PluginProperties,
    TaskExecutionContext,
    Transition,
    do_transition,
)

WAIT = "bench-wait"
BLOCK = "bench-block"


def _seconds(inputs: Any) -> float:
    return float(inputs.get("seconds", 0.5)) if isinstance(inputs, dict) else 0.5


class WaitPlugin(Plugin):
    id = WAIT

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        await asyncio.sleep(_seconds(await tctx.input_reader.get()))
        return do_transition(PhaseInfo.success())


class BlockPlugin(Plugin):
    id = BLOCK
    properties = PluginProperties(blocking=True)

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        time.sleep(_seconds(await tctx.input_reader.get()))  # noqa: ASYNC251 -- blocking on purpose
        return do_transition(PhaseInfo.success())


plugin_registry().register_core_plugin(
    PluginEntry(id=WAIT, registered_task_types=[WAIT], load_plugin=lambda setup: WaitPlugin())
)
plugin_registry().register_core_plugin(
    PluginEntry(id=BLOCK, registered_task_types=[BLOCK], load_plugin=lambda setup: BlockPlugin())
)
