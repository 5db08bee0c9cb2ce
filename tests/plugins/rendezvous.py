"""rendezvous: executions that meet within one round. A `wait` execution enters a cancel scope,
then waits until a `set` execution of the same key has run; a `set` one marks its key as reached.
Both succeed. A `wait` can succeed only if the `set` runs while it waits: in the same round, at
once, not after it."""

import anyio

from executor import plugin_registry
from executor.core import PhaseInfo, Plugin, PluginEntry, TaskExecutionContext, Transition, do_transition

TASK_TYPE = "rendezvous"

_reached: dict[str, anyio.Event] = {}


class RendezvousPlugin(Plugin):
    id = TASK_TYPE

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        inputs = await tctx.input_reader.get()
        reached = _reached.setdefault(inputs["key"], anyio.Event())
        if inputs["role"] == "set":
            reached.set()
        else:
            with anyio.fail_after(inputs.get("within", 5)):  # a scope of this call's own task
                await reached.wait()
        return do_transition(PhaseInfo.success())


plugin_registry().register_core_plugin(
    PluginEntry(id=TASK_TYPE, registered_task_types=[TASK_TYPE], load_plugin=lambda setup: RendezvousPlugin())
)
