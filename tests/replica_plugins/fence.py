"""fence: a few rounds, each recorded with the lease token it ran under (the fault tests' witness).

Every `handle` call appends one line to `$FENCE_LOG_DIR/<pid>.jsonl` (execution, round index,
lease token, replica) before it returns, so a call whose round never committed (its replica was
killed, or lost the lease) is on record too. The round index is the length of the token chain in
plugin state: it grows only when a round commits. Each round reports its token in its event's
info, and the last one puts the whole chain in the outputs; the tests compare the three.

Inputs: `rounds` (default 3), `interval` between rounds (default "100ms"), and `hold` with
`hold_on`: the replica id on which the first round takes `hold` (a slow round to interrupt).
"""

from __future__ import annotations

import json
import os

import anyio
from pydantic import BaseModel

from executor import plugin_registry
from executor.core import (
    PhaseInfo,
    Plugin,
    PluginEntry,
    TaskExecutionContext,
    TaskInfo,
    Transition,
    do_transition,
    parse_duration,
)

TASK_TYPE = "fence"
REPLICA = os.environ.get("EXECUTOR_REPLICA_ID", "")


class FenceState(BaseModel):
    tokens: list[str] = []


def _record(entry: dict[str, object]) -> None:
    directory = os.environ.get("FENCE_LOG_DIR")
    if not directory:
        return
    line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
    fd = os.open(os.path.join(directory, f"{os.getpid()}.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line)  # one write of one short line: whole even if the process is killed next
    finally:
        os.close(fd)


class FencePlugin(Plugin):
    id = TASK_TYPE

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        _, state = tctx.plugin_state_reader.get(FenceState)
        inputs = await tctx.input_reader.get()
        rounds = int(inputs.get("rounds", 3))
        interval = parse_duration(inputs.get("interval", "100ms"))
        token = str(getattr(tctx, "lease_token", None))
        index = len(state.tokens)
        execution_id = tctx.task_execution_metadata.execution_id
        _record({"e": execution_id, "k": index, "token": token, "replica": REPLICA})
        if index == 0 and inputs.get("hold_on") == REPLICA:
            await anyio.sleep(parse_duration(inputs["hold"]).total_seconds())
        chain = [*state.tokens, token]
        info = TaskInfo(custom_info={"token": token, "k": index, "replica": REPLICA})
        if index + 1 >= rounds:
            await tctx.output_writer.put({"tokens": chain})
            return do_transition(PhaseInfo.success(info))
        tctx.plugin_state_writer.put(0, FenceState(tokens=chain))
        return do_transition(PhaseInfo.running(index + 1, info), requeue_after=interval)

    async def abort(self, tctx: TaskExecutionContext) -> None:
        pass

    async def finalize(self, tctx: TaskExecutionContext) -> None:
        pass


plugin_registry().register_core_plugin(
    PluginEntry(id=TASK_TYPE, registered_task_types=[TASK_TYPE], load_plugin=lambda setup: FencePlugin())
)
