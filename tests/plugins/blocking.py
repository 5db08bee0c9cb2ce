"""Two plugins that only succeed if a blocking plugin really runs off the event loop.

`blocking-wait` declares `blocking=True` and waits, with `time.sleep`, for a gate that only the
async `gate-open` plugin opens, and `gate-open` opens it only once `blocking-wait` has started. Were
`blocking-wait` run on the event loop, `gate-open` could never run and `blocking-wait` would give up
after its deadline with PERMANENT_FAILURE `Stalled`.
"""

import threading
import time

import anyio

from executor import plugin_registry
from executor.core import (
    PhaseInfo,
    Plugin,
    PluginEntry,
    PluginProperties,
    TaskExecutionContext,
    Transition,
    do_transition,
)

DEADLINE_SECONDS = 2.0

started = threading.Event()
gate = threading.Event()


class BlockingWaitPlugin(Plugin):
    id = "blocking-wait"
    properties = PluginProperties(blocking=True)

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        started.set()
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not gate.is_set():
            if time.monotonic() > deadline:
                return do_transition(PhaseInfo.failure("Stalled", "the gate never opened"))
            time.sleep(0.005)  # noqa: ASYNC251 -- blocking on purpose: what `blocking=True` is for
        return do_transition(PhaseInfo.success())


class GateOpenPlugin(Plugin):
    id = "gate-open"

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        if not await anyio.to_thread.run_sync(started.wait, DEADLINE_SECONDS):
            return do_transition(PhaseInfo.failure("NeverStarted", "blocking-wait never started"))
        gate.set()
        return do_transition(PhaseInfo.success())


plugin_registry().register_core_plugin(
    PluginEntry(
        id="blocking-wait",
        registered_task_types=["blocking-wait"],
        load_plugin=lambda setup: BlockingWaitPlugin(),
    )
)
plugin_registry().register_core_plugin(
    PluginEntry(
        id="gate-open", registered_task_types=["gate-open"], load_plugin=lambda setup: GateOpenPlugin()
    )
)
