"""oversized-state: puts a plugin state of `inputs["bytes"]` characters, then reports RUNNING."""

from pydantic import BaseModel

from executor import plugin_registry
from executor.core import PhaseInfo, Plugin, PluginEntry, TaskExecutionContext, Transition, do_transition

TASK_TYPE = "oversized-state"


class BigState(BaseModel):
    blob: str = ""


class OversizedStatePlugin(Plugin):
    id = TASK_TYPE

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        size = int((await tctx.input_reader.get())["bytes"])
        tctx.plugin_state_writer.put(1, BigState(blob="x" * size))
        return do_transition(PhaseInfo.running(0))


plugin_registry().register_core_plugin(
    PluginEntry(
        id=TASK_TYPE, registered_task_types=[TASK_TYPE], load_plugin=lambda setup: OversizedStatePlugin()
    )
)
