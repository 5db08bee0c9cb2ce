"""sleeps-on-loop and starved-step: the two slow steps the loop's diagnostics must tell apart (issue 21).

`sleeps-on-loop` calls `time.sleep` on the event loop (the misbehaviour the blocked-loop warning is
for): its step holds the loop thread, off the CPU, for `seconds`. `starved-step` does a little CPU
work (`cpu_seconds` of the thread's own CPU time) while the test keeps a CPU hog on the one CPU it
pins its thread to, at the lowest priority: the step takes long only because the thread waits for
that CPU, as on an overloaded machine. It restores its affinity (and its priority, where allowed).
"""

import contextlib
import os
import threading
import time

from executor import plugin_registry
from executor.core import PhaseInfo, Plugin, PluginEntry, TaskExecutionContext, Transition, do_transition

SLEEPS = "sleeps-on-loop"
STARVED = "starved-step"


class SleepsOnLoop(Plugin):
    id = SLEEPS

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        inputs = await tctx.input_reader.get()
        time.sleep(float(inputs["seconds"]))  # noqa: ASYNC251 -- the misbehaviour under test
        return do_transition(PhaseInfo.success())


class StarvedStep(Plugin):
    id = STARVED

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        inputs = await tctx.input_reader.get()
        thread = threading.get_native_id()
        affinity = os.sched_getaffinity(0)
        priority = os.getpriority(os.PRIO_PROCESS, thread)
        os.sched_setaffinity(0, {int(inputs["cpu"])})  # this thread only (Linux)
        os.setpriority(os.PRIO_PROCESS, thread, 19)
        try:
            until = time.thread_time() + float(inputs["cpu_seconds"])
            while time.thread_time() < until:
                pass
        finally:
            os.sched_setaffinity(0, affinity)
            with contextlib.suppress(PermissionError):  # raising it back needs CAP_SYS_NICE
                os.setpriority(os.PRIO_PROCESS, thread, priority)
        return do_transition(PhaseInfo.success())


for plugin in (SleepsOnLoop(), StarvedStep()):
    plugin_registry().register_core_plugin(
        PluginEntry(id=plugin.id, registered_task_types=[plugin.id], load_plugin=lambda setup, p=plugin: p)
    )
