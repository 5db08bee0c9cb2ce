"""gated and gated-blocking: a call that lasts until the test opens a gate (a file), for issue 12.

The inputs say which call waits (`wait_in`: "handle", "abort" or "finalize"), for which file
(`gate`), and where every call is recorded (`log`: one line per event, "<call> <execution id>",
plus "<call>-cancelled <id>" when the loop cancelled it). Files, not in-process events, so that the
same plugin gates a daemon running as a process of its own. `handle` returns RUNNING (requeued
after an hour) when the wait is elsewhere, so that an abort can meet a running execution.
`gated-blocking` waits with `time.sleep` on its worker thread (declared `blocking=True`).
"""

import asyncio
import time
from pathlib import Path
from typing import Any

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

GATED = "gated"
GATED_BLOCKING = "gated-blocking"
#: A gate never opened gives up after this long, so that a broken test cannot hang the suite.
GIVE_UP_SECONDS = 60.0


def _record(inputs: dict[str, Any], line: str) -> None:
    with Path(inputs["log"]).open("a") as log:
        log.write(line + "\n")


class GatedPlugin(Plugin):
    id = GATED

    async def _wait(self, tctx: TaskExecutionContext, call: str) -> dict[str, Any]:
        inputs: dict[str, Any] = await tctx.input_reader.get()
        execution_id = tctx.task_execution_metadata.execution_id
        _record(inputs, f"{call} {execution_id}")
        if inputs.get("wait_in", "handle") == call:
            gate = Path(inputs["gate"])
            deadline = time.monotonic() + GIVE_UP_SECONDS
            try:
                while not gate.exists() and time.monotonic() < deadline:  # noqa: ASYNC240
                    await self._pause()
            except BaseException:
                _record(inputs, f"{call}-cancelled {execution_id}")
                raise
            _record(inputs, f"{call}-done {execution_id}")
        return inputs

    async def _pause(self) -> None:
        await asyncio.sleep(0.01)

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        inputs = await self._wait(tctx, "handle")
        if inputs.get("wait_in", "handle") == "handle" or inputs.get("wait_in") == "finalize":
            return do_transition(PhaseInfo.success())
        return do_transition(PhaseInfo.running(0), requeue_after=3600)

    async def abort(self, tctx: TaskExecutionContext) -> None:
        await self._wait(tctx, "abort")

    async def finalize(self, tctx: TaskExecutionContext) -> None:
        await self._wait(tctx, "finalize")


class GatedBlockingPlugin(GatedPlugin):
    id = GATED_BLOCKING
    properties = PluginProperties(blocking=True)

    async def _pause(self) -> None:
        time.sleep(0.01)  # noqa: ASYNC251 -- on its worker thread, as a blocking plugin does


plugin_registry().register_core_plugin(
    PluginEntry(id=GATED, registered_task_types=[GATED], load_plugin=lambda setup: GatedPlugin())
)
plugin_registry().register_core_plugin(
    PluginEntry(
        id=GATED_BLOCKING,
        registered_task_types=[GATED_BLOCKING],
        load_plugin=lambda setup: GatedBlockingPlugin(),
    )
)
