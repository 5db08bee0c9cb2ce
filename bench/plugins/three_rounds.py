"""bench-three-rounds: a sleep of 0 s that still takes three rounds (benchmarks only).

Round 1 writes plugin state, round 2 reads it back and writes it again, round 3 succeeds. Every
round moves the phase or its version, so every round appends one event: the same writes (phase,
state, one event per execution) that the raw-SQL baselines in `bench/raw.py` do.
"""

from datetime import timedelta

from pydantic import BaseModel

from executor import plugin_registry
from executor.core import PhaseInfo, Plugin, PluginEntry, TaskExecutionContext, Transition, do_transition

TASK_TYPE = "bench-three-rounds"
NOW = timedelta(0)


class Steps(BaseModel):
    step: int = 0


class ThreeRoundsPlugin(Plugin):
    id = TASK_TYPE

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        _, state = tctx.plugin_state_reader.get(Steps)
        if state.step >= 2:
            return do_transition(PhaseInfo.success())
        tctx.plugin_state_writer.put(0, Steps(step=state.step + 1))
        return do_transition(PhaseInfo.running(state.step), requeue_after=NOW)


plugin_registry().register_core_plugin(
    PluginEntry(
        id=TASK_TYPE, registered_task_types=[TASK_TYPE], load_plugin=lambda setup: ThreeRoundsPlugin()
    )
)
