"""Function tasks for the function-task scenarios (benchmarks only): `@task` on plain functions.

`bench-fn-echo` is `echo` written as an async function task (its inputs become its outputs), so
that scenario 11 compares the decorator's cost with the hand-written plugin's. `bench-fn-cpu`
spins `loops` iterations of plain Python in a worker process, the same work `bench/functions.py`
gives a bare `ProcessPoolExecutor`.
"""

from executor.functions import task


def spin(loops: int) -> int:
    """Python bytecode only, holding the GIL: what a thread cannot take off the loop."""
    total = 0
    for i in range(loops):
        total += i * i % 7
    return total


@task("bench-fn-echo")
async def bench_fn_echo(i: int) -> dict[str, int]:
    return {"i": i}


@task("bench-fn-cpu", cpu=True, timeout="5m")
def bench_fn_cpu(loops: int) -> int:
    return spin(loops)
