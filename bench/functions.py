"""Scenarios 13 and 14: function tasks (issue 15).

13 runs one-round async function tasks (`bench-fn-echo`, bench/plugins/functions.py) against the
hand-written `echo` plugin, in the same run: what `@task` costs per execution. 14 runs CPU-bound
function tasks of about `cpu_task_ms` each on the daemon's process pool against a bare
`ProcessPoolExecutor` with as many workers doing the same work, both from a cold start (the
pool's worker processes started within the clock), as executions (or calls) per second; the
daemon's clock runs to the commit of the last call, which outlives the round that claimed it.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

from bench import daemon
from bench.databases import Backend, PostgresBackend, submit
from bench.scenarios import EXEC_PER_S, Context
from executor.store import Submission

S13 = "13. Function tasks: one-round async"
S14 = "14. Function tasks: CPU-bound on the process pool"
ECHO = "echo plugin"
FUNCTION = "async function task (@task)"
DAEMON_POOL = "cpu=True function task, daemon"
BARE_POOL = "bare ProcessPoolExecutor"


async def async_functions(ctx: Context) -> None:
    for backend in ctx.backends:
        count = ctx.sizes.function_tasks
        scenario = f"{S13}, {count:,}"
        workloads = {
            ECHO: [Submission("echo", {"i": i}) for i in range(count)],
            FUNCTION: [Submission("bench-fn-echo", {"i": i}) for i in range(count)],
        }
        await _daemon_runs(ctx, backend, scenario, workloads)
        ratio = ctx.report.ratio(
            f"{scenario}, {backend.label}: {FUNCTION} / {ECHO}",
            ctx.report.measurement(scenario, backend.label, FUNCTION, EXEC_PER_S, EXEC_PER_S),
            ctx.report.measurement(scenario, backend.label, ECHO, EXEC_PER_S, EXEC_PER_S),
        )
        ctx.report.target(
            f"S13 {backend.label}: function tasks >= 0.8 of echo", ratio.value, 0.8, at_least=True
        )


async def cpu_functions(ctx: Context) -> None:
    sizes = ctx.sizes
    loops = calibrate(sizes.cpu_task_ms)
    workers = os.cpu_count() or 1
    for backend in ctx.backends:
        count = sizes.cpu_tasks
        scenario = f"{S14}, {count:,} x {sizes.cpu_task_ms:g} ms, {workers} workers"
        template = "fn_cpu_tpl"
        await backend.create(template)
        await submit(backend.url(template), [Submission("bench-fn-cpu", {"loops": loops})] * count)
        for number in range(1, sizes.runs + 1):  # interleaved: a slowing machine slows both alike
            await backend.clone(template, "run")
            try:
                result = await daemon.drive(backend.url("run"), count, ctx.plugins_dir, sizes.batch_size)
            finally:
                await backend.drop("run")
            measured = ctx.report.measurement(scenario, backend.label, DAEMON_POOL, EXEC_PER_S, EXEC_PER_S)
            measured.values.append(result.executions / result.seconds_to_last_finalized)
            seconds = bare_pool(count, loops, workers)
            bare = ctx.report.measurement(scenario, backend.label, BARE_POOL, EXEC_PER_S, EXEC_PER_S)
            bare.values.append(count / seconds)
            ctx.progress(f"{backend.label}: cpu function tasks, run {number}/{sizes.runs} done")
        await backend.drop(template)
        ratio = ctx.report.ratio(
            f"{scenario}, {backend.label}: {DAEMON_POOL} / {BARE_POOL}",
            ctx.report.measurement(scenario, backend.label, DAEMON_POOL, EXEC_PER_S, EXEC_PER_S),
            ctx.report.measurement(scenario, backend.label, BARE_POOL, EXEC_PER_S, EXEC_PER_S),
        )
        ctx.report.target(
            f"S14 {backend.label}: process pool >= 0.8 of a bare ProcessPoolExecutor",
            ratio.value,
            0.8,
            at_least=True,
        )


async def _daemon_runs(
    ctx: Context, backend: Backend, scenario: str, workloads: dict[str, list[Submission]]
) -> None:
    templates: dict[str, str] = {}
    for number, (subject, submissions) in enumerate(workloads.items()):
        template = templates[subject] = f"fn_tpl_{number}"
        await backend.create(template)
        await submit(backend.url(template), submissions)
        if isinstance(backend, PostgresBackend):
            await backend.vacuum_analyze(template)
    for number in range(1, ctx.sizes.runs + 1):
        for subject, template in templates.items():
            await backend.clone(template, "run")
            try:
                count = len(workloads[subject])
                result = await daemon.drive(backend.url("run"), count, ctx.plugins_dir, ctx.sizes.batch_size)
            finally:
                await backend.drop("run")
            ctx.report.measurement(scenario, backend.label, subject, EXEC_PER_S, EXEC_PER_S).values.append(
                result.executions / result.seconds
            )
            ctx.progress(f"{backend.label}: {subject}, run {number}/{ctx.sizes.runs} done")
    for template in templates.values():
        await backend.drop(template)


def calibrate(milliseconds: float) -> int:
    """How many `spin` loops take about `milliseconds` here (the best of a few tries)."""
    from bench.plugins.functions import spin  # registers its tasks into the process-wide registry

    probe = 20_000
    best = min(_timed(spin, probe) for _ in range(5))
    return max(1, round(probe * milliseconds / 1000 / best))


def bare_pool(count: int, loops: int, workers: int) -> float:
    """Seconds for a bare pool, started within the clock as the daemon's is, to run the work."""
    from bench.plugins.functions import spin

    started = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for _ in pool.map(spin, [loops] * count):
            pass
    return time.perf_counter() - started


def _timed(function: object, argument: int) -> float:
    started = time.perf_counter()
    function(argument)  # type: ignore[operator]
    return time.perf_counter() - started
