"""example-primes: a CPU-bound plugin, whose calls run in the daemon's worker processes.

Counts the primes below `below` with a sieve written in plain Python: seconds of bytecode for a
large `below`, which would hold the daemon's event loop (and, on a thread, its GIL) all that
time. `PluginProperties(cpu_bound=True)` runs `handle`, `abort` and `finalize` in a worker
process instead; the loop goes on with every other execution meanwhile. Copy it into `plugins/`
(or point EXECUTOR_PLUGINS_DIR at a directory holding it) to run it.

What crosses to the worker is the execution (inputs and plugin state, as the store's JSON), and
what comes back is the transition, the outputs and the new plugin state, as JSON too. The plugin
object itself does not cross: each worker loads the plugins and has an instance of its own.
"""

import os

from pydantic import BaseModel, Field

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

TASK_TYPE = "example-primes"


class PrimesInput(BaseModel):
    below: int = Field(ge=2, le=50_000_000)


class PrimesOutput(BaseModel):
    below: int
    primes: int
    #: The worker process that counted them (not the daemon's pid).
    worker_pid: int


def count_primes(below: int) -> int:
    """The sieve of Eratosthenes, all of it Python bytecode."""
    sieve = bytearray([1]) * below
    sieve[0:2] = b"\x00\x00"
    for n in range(2, int(below**0.5) + 1):
        if sieve[n]:
            for multiple in range(n * n, below, n):
                sieve[multiple] = 0
    return sum(sieve)


class PrimesPlugin(Plugin):
    id = TASK_TYPE
    properties = PluginProperties(cpu_bound=True)

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        below = PrimesInput.model_validate(await tctx.input_reader.get()).below
        primes = count_primes(below)  # blocks this worker process only
        await tctx.output_writer.put(PrimesOutput(below=below, primes=primes, worker_pid=os.getpid()))
        return do_transition(PhaseInfo.success())


plugin_registry().register_core_plugin(
    PluginEntry(
        id=TASK_TYPE,
        registered_task_types=[TASK_TYPE],
        load_plugin=lambda setup: PrimesPlugin(),
        input_model=PrimesInput,
        output_model=PrimesOutput,
    )
)
