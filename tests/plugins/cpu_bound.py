"""`cpu-primes`: a `cpu_bound=True` plugin that counts primes in pure Python, for the process pool's tests.

Two rounds: the first counts the primes below `below` and keeps the count (and its pid) as plugin
state; the second puts them in the outputs with its own pid. What the inputs may also ask for:

- `gate`: a file; the first round goes on counting (burning CPU) until it exists.
- `die_unless`: a file; unless it exists, the call creates it and kills its own process (SIGKILL).
- `spin_unless`: a file; unless it exists, the call creates it and spins for a minute.
- `allocate`: take a unit of quota (which a worker process cannot).
- `secret`: the name of a secret to read and put, in full, in the outputs.
- `log`: a file each call appends `<method> <pid>` to.
"""

import os
import signal
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

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

GATE_SECONDS = 30.0


def count_primes(below: int) -> int:
    """Trial division: slow on purpose, all of it Python bytecode holding the GIL."""
    count = 0
    for n in range(2, below):
        d = 2
        while d * d <= n:
            if n % d == 0:
                break
            d += 1
        else:
            count += 1
    return count


class PrimesState(BaseModel):
    primes: int | None = None
    pid: int | None = None


class CpuPrimesPlugin(Plugin):
    id = "cpu-primes"
    properties = PluginProperties(cpu_bound=True)

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        inputs = await tctx.input_reader.get()
        _log(inputs, "handle")
        _, state = tctx.plugin_state_reader.get(PrimesState)
        if state.primes is not None:
            outputs: dict[str, Any] = {"primes": state.primes, "pid": os.getpid(), "first_pid": state.pid}
            if "secret" in inputs:
                outputs["secret"] = tctx.secret_manager.get(inputs["secret"])
            await tctx.output_writer.put(outputs)
            return do_transition(PhaseInfo.success())
        if _first_time(inputs, "die_unless"):
            os.kill(os.getpid(), signal.SIGKILL)
        if _first_time(inputs, "spin_unless"):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                count_primes(1000)
        if inputs.get("allocate"):
            await tctx.resource_manager.allocate("cpu", tctx.task_execution_metadata.generated_name)
        primes = count_primes(int(inputs["below"]))
        if "gate" in inputs:
            deadline = time.monotonic() + GATE_SECONDS
            while not os.path.exists(inputs["gate"]) and time.monotonic() < deadline:  # noqa: ASYNC240 -- cpu_bound
                count_primes(1000)
        tctx.plugin_state_writer.put(0, PrimesState(primes=primes, pid=os.getpid()))
        return do_transition(PhaseInfo.running(0), requeue_after=0)

    async def finalize(self, tctx: TaskExecutionContext) -> None:
        _log(await tctx.input_reader.get(), "finalize")


def _first_time(inputs: dict[str, Any], key: str) -> bool:
    if key not in inputs:
        return False
    marker = Path(inputs[key])
    if marker.exists():
        return False
    marker.touch()
    return True


def _log(inputs: dict[str, Any], method: str) -> None:
    if "log" in inputs:
        with open(inputs["log"], "a") as log:
            log.write(f"{method} {os.getpid()}\n")


plugin_registry().register_core_plugin(
    PluginEntry(
        id="cpu-primes", registered_task_types=["cpu-primes"], load_plugin=lambda setup: CpuPrimesPlugin()
    )
)
