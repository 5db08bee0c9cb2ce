"""garbage: `handle` returns something that is not a Transition (a dict that looks like one)."""

from typing import Any

from executor import plugin_registry
from executor.core import Plugin, PluginEntry, TaskExecutionContext

TASK_TYPE = "garbage"


class GarbagePlugin(Plugin):
    id = TASK_TYPE

    async def handle(self, tctx: TaskExecutionContext) -> Any:
        return {"phase": "SUCCESS"}


plugin_registry().register_core_plugin(
    PluginEntry(id=TASK_TYPE, registered_task_types=[TASK_TYPE], load_plugin=lambda setup: GarbagePlugin())
)
