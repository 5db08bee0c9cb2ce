"""state-probe: puts a new state, then reads the state back in the same round, and reports through
its outputs what it read before and after the `put`. Succeeds once it has seen `inputs["rounds"]`
rounds' worth of state."""

from pydantic import BaseModel

from executor import plugin_registry
from executor.core import PhaseInfo, Plugin, PluginEntry, TaskExecutionContext, Transition, do_transition

TASK_TYPE = "state-probe"


class ProbeState(BaseModel):
    count: int = 0


class StateProbePlugin(Plugin):
    id = TASK_TYPE

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        before_version, before = tctx.plugin_state_reader.get(ProbeState)
        tctx.plugin_state_writer.put(before_version + 1, ProbeState(count=before.count + 1))
        after_version, after = tctx.plugin_state_reader.get(ProbeState)
        await tctx.output_writer.put(
            {
                "before": {"version": before_version, "count": before.count},
                "after_put": {"version": after_version, "count": after.count},
            }
        )
        if before.count + 1 >= int((await tctx.input_reader.get())["rounds"]):
            return do_transition(PhaseInfo.success())
        return do_transition(PhaseInfo.running(before.count + 1), requeue_after=0)


plugin_registry().register_core_plugin(
    PluginEntry(id=TASK_TYPE, registered_task_types=[TASK_TYPE], load_plugin=lambda setup: StateProbePlugin())
)
