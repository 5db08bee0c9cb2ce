"""hanging: `handle` never returns; only EXECUTOR_HANDLE_TIMEOUT gets the round going again."""

import anyio

from executor import plugin_registry
from executor.core import Plugin, PluginEntry, TaskExecutionContext, Transition

TASK_TYPE = "hanging"


class HangingPlugin(Plugin):
    id = TASK_TYPE

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


plugin_registry().register_core_plugin(
    PluginEntry(id=TASK_TYPE, registered_task_types=[TASK_TYPE], load_plugin=lambda setup: HangingPlugin())
)
