"""core-sleep: succeeds once `duration` has passed since the execution's first round.

The seed plugin of Flyte's custom-plugin guide. Its start time is plugin state, so a daemon that
restarts mid-sleep resumes the same sleep instead of starting over.
"""

from datetime import UTC, datetime

from pydantic import BaseModel

from executor import plugin_registry
from executor.core import (
    PhaseInfo,
    Plugin,
    PluginEntry,
    TaskExecutionContext,
    Transition,
    do_transition,
    parse_duration,
)

TASK_TYPE = "core-sleep"


class SleepState(BaseModel):
    start_time: datetime | None = None


class SleepPlugin(Plugin):
    id = TASK_TYPE

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        _, state = tctx.plugin_state_reader.get(SleepState)
        try:
            duration = parse_duration((await tctx.input_reader.get())["duration"])
        except KeyError:
            return do_transition(PhaseInfo.failure("InvalidInput", "input 'duration' is required"))
        except ValueError as err:
            return do_transition(PhaseInfo.failure("InvalidInput", str(err)))
        now = datetime.now(UTC)
        if state.start_time is None:
            tctx.plugin_state_writer.put(0, SleepState(start_time=now))
            return do_transition(PhaseInfo.running(0), requeue_after=duration)
        if now - state.start_time >= duration:
            return do_transition(PhaseInfo.success())
        return do_transition(PhaseInfo.running(0), requeue_after=state.start_time + duration - now)


plugin_registry().register_core_plugin(
    PluginEntry(id=TASK_TYPE, registered_task_types=[TASK_TYPE], load_plugin=lambda setup: SleepPlugin())
)
