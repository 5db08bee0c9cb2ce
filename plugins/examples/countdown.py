"""example-countdown: a plain core plugin, written in the four steps of the seed guide.

Counts `count` rounds down, one a round, reporting progress as RUNNING phase versions, then
succeeds with `{"rounds": count}`. Copy it into `plugins/` (or point EXECUTOR_PLUGINS_DIR at a
directory holding it) to run it: this directory is not loaded by the daemon on its own.
"""

from pydantic import BaseModel

from executor import plugin_registry
from executor.core import PhaseInfo, Plugin, PluginEntry, TaskExecutionContext, Transition, do_transition

TASK_TYPE = "example-countdown"


# Step 1: the plugin and the state it keeps between rounds. The state is a pydantic model, stored
# as JSON with the execution when the round commits: a restarted daemon carries on from it.
class CountdownState(BaseModel):
    remaining: int | None = None


class CountdownPlugin(Plugin):
    id = TASK_TYPE

    # Step 2: handle. Non-blocking and idempotent: it reads the state the previous round wrote,
    # decides, and writes the next state; nothing is visible before the round commits.
    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        _, state = tctx.plugin_state_reader.get(CountdownState)
        count = (await tctx.input_reader.get()).get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            return do_transition(PhaseInfo.failure("InvalidInput", "input 'count' must be an int >= 0"))
        remaining = count if state.remaining is None else state.remaining
        if remaining == 0:
            await tctx.output_writer.put({"rounds": count})
            return do_transition(PhaseInfo.success())
        # Readable from the next round on, never in this one.
        tctx.plugin_state_writer.put(0, CountdownState(remaining=remaining - 1))
        return do_transition(PhaseInfo.running(version=count - remaining), requeue_after=0.1)

    # Step 3: abort and finalize. Nothing outside the daemon to stop or release here; a plugin
    # that starts remote work stops it in `abort` (see remote_job.py, which the kit does it for).
    async def abort(self, tctx: TaskExecutionContext) -> None:
        return None

    async def finalize(self, tctx: TaskExecutionContext) -> None:
        return None


# Step 4: register. The loader imports the module; this call makes the task type known.
plugin_registry().register_core_plugin(
    PluginEntry(id=TASK_TYPE, registered_task_types=[TASK_TYPE], load_plugin=lambda setup: CountdownPlugin())
)
