"""lifecycle-probe: records its own lifecycle in the daemon, one line at a time, in the file named
by LIFECYCLE_PROBE_FILE, for tests/test_plugin_lifecycle_process.py.

`start` starts a background task; the task records when it ends. `aclose` records that it began;
with LIFECYCLE_PROBE_HOLD set it then waits for the file `<LIFECYCLE_PROBE_FILE>.release`, so that
the test can look at the daemon while every other plugin has been closed and the process still
runs. Last it records the tasks still alive on the loop and the httpx clients still open in the
process, then "closed".
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
from pathlib import Path

import anyio
import httpx

from executor import plugin_registry
from executor.core import (
    PhaseInfo,
    Plugin,
    PluginEntry,
    StartContext,
    TaskExecutionContext,
    Transition,
    do_transition,
)

TASK_TYPE = "lifecycle-probe"


def record(line: str) -> None:
    with Path(os.environ["LIFECYCLE_PROBE_FILE"]).open("a") as journal:
        journal.write(line + "\n")


class ProbePlugin(Plugin):
    id = TASK_TYPE

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        return do_transition(PhaseInfo.success())

    async def start(self, ctx: StartContext) -> None:
        record("started")
        ctx.tasks.start_soon(self._background, name="probe background")

    async def _background(self) -> None:
        record("task running")
        try:
            await anyio.sleep_forever()
        finally:
            record("task ended")

    async def aclose(self) -> None:
        record("closing")
        if os.environ.get("LIFECYCLE_PROBE_HOLD"):
            release = anyio.Path(os.environ["LIFECYCLE_PROBE_FILE"] + ".release")
            with anyio.fail_after(8):  # the daemon's bound on an aclose is 10 s
                while not await release.exists():  # noqa: ASYNC110 (another process says when: a file)
                    await anyio.sleep(0.02)
        this = asyncio.current_task()
        tasks = sorted(task.get_name() for task in asyncio.all_tasks() if task is not this)
        record("tasks " + json.dumps(tasks))
        clients = [o for o in gc.get_objects() if isinstance(o, httpx.AsyncClient) and not o.is_closed]
        record(f"open httpx clients {len(clients)}")
        record("closed")


plugin_registry().register_core_plugin(
    PluginEntry(id=TASK_TYPE, registered_task_types=[TASK_TYPE], load_plugin=lambda setup: ProbePlugin())
)
