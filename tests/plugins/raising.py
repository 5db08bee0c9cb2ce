"""raising: `handle` raises every time (a bug in a plugin, or a remote call that failed). The loop
counts it as a system failure. `inputs["error"]` names a builtin exception type (default RuntimeError)."""

import builtins

from executor import plugin_registry
from executor.core import Plugin, PluginEntry, TaskExecutionContext, Transition

TASK_TYPE = "raising"


class RaisingPlugin(Plugin):
    id = TASK_TYPE

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        error_type = getattr(builtins, (await tctx.input_reader.get()).get("error", "RuntimeError"))
        raise error_type("the plugin broke on purpose")


plugin_registry().register_core_plugin(
    PluginEntry(id=TASK_TYPE, registered_task_types=[TASK_TYPE], load_plugin=lambda setup: RaisingPlugin())
)
