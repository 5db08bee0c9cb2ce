"""Plugins for the schedule tests: `tick` (done at once, inputs checked by a model), `nap` (done
after `seconds`, its start time in plugin state), and a schedule declared in code beside them
when SCHEDULE_TEST_DECLARE names one."""

import os
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict

from executor import plugin_registry
from executor.core import PhaseInfo, Plugin, PluginEntry, TaskExecutionContext, Transition, do_transition
from executor.schedules import declare_schedule


class TickInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = 0


class NapInput(BaseModel):
    seconds: float


class NapState(BaseModel):
    start_time: datetime | None = None


class Tick(Plugin):
    id = "tick"

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        return do_transition(PhaseInfo.success())


class Nap(Plugin):
    id = "nap"

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        _, state = tctx.plugin_state_reader.get(NapState)
        duration = timedelta(seconds=(await tctx.input_reader.get())["seconds"])
        now = datetime.now(UTC)
        if state.start_time is None:
            tctx.plugin_state_writer.put(0, NapState(start_time=now))
            return do_transition(PhaseInfo.running(0), requeue_after=duration)
        if now - state.start_time >= duration:
            return do_transition(PhaseInfo.success())
        return do_transition(PhaseInfo.running(0), requeue_after=state.start_time + duration - now)


plugin_registry().register_core_plugin(
    PluginEntry(
        id="tick", registered_task_types=["tick"], load_plugin=lambda s: Tick(), input_model=TickInput
    )
)
plugin_registry().register_core_plugin(
    PluginEntry(id="nap", registered_task_types=["nap"], load_plugin=lambda s: Nap(), input_model=NapInput)
)

if os.environ.get("SCHEDULE_TEST_DECLARE"):
    declare_schedule(name=os.environ["SCHEDULE_TEST_DECLARE"], task_type="tick", every=1.0, inputs={"n": 7})
