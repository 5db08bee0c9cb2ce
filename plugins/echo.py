"""echo: copies its inputs to its outputs and succeeds in one round."""

from executor import plugin_registry
from executor.core import PhaseInfo, Plugin, PluginEntry, TaskExecutionContext, Transition, do_transition

TASK_TYPE = "echo"


class EchoPlugin(Plugin):
    id = TASK_TYPE

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        await tctx.output_writer.put(await tctx.input_reader.get())
        return do_transition(PhaseInfo.success())


plugin_registry().register_core_plugin(
    PluginEntry(id=TASK_TYPE, registered_task_types=[TASK_TYPE], load_plugin=lambda setup: EchoPlugin())
)
