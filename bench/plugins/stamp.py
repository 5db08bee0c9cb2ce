"""bench-stamp: records when `handle` was first called, then succeeds (benchmarks only).

The latency scenario reads `handled_at` (seconds since the epoch) from the outputs and subtracts
the execution's `created_at`, the moment it was submitted: submit-to-first-handle latency, with
no clock but the machine's own.
"""

import time

from executor import plugin_registry
from executor.core import PhaseInfo, Plugin, PluginEntry, TaskExecutionContext, Transition, do_transition

TASK_TYPE = "bench-stamp"


class StampPlugin(Plugin):
    id = TASK_TYPE

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        await tctx.output_writer.put({"handled_at": time.time()})
        return do_transition(PhaseInfo.success())


plugin_registry().register_core_plugin(
    PluginEntry(id=TASK_TYPE, registered_task_types=[TASK_TYPE], load_plugin=lambda setup: StampPlugin())
)
