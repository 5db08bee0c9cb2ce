"""Scenarios 8 and 9: executions that do not wait for each other (issue 12).

Every other scenario runs no-op handles, so a loop whose round waits for its slowest call looks
fine there. These put slow calls beside fast ones: 8 measures throughput when 1% of the calls take
half a second (awaiting, as a remote call does, or blocking a worker thread), against the same run
with no slow calls; 9 measures how soon a fresh submission is first handled while ten calls each
take five seconds.
"""

from __future__ import annotations

import asyncio
import random
import time

from sqlalchemy import text

from bench import daemon
from bench.databases import Backend, PostgresBackend, submit
from bench.scenarios import DAEMON, EXEC_PER_S, Context, _one_latency, latency_runs
from executor.client import Client
from executor.settings import Settings
from executor.store import Store, Submission

#: The task types of bench/plugins/stragglers.py (not imported here: importing it registers them).
WAIT = "bench-wait"
BLOCK = "bench-block"

S8 = "8. Stragglers: one-round tasks, 1% slow"
S9 = "9. Pickup under load: submit to first handle while 10 calls take long"

ALL_FAST = "all fast (echo)"
SLOW_AWAIT = "1% awaiting in handle"
SLOW_BLOCKING = "1% blocking (blocking=True)"
#: The other 99%'s throughput: from the start to the last `echo` finished, slow calls excluded.
FAST_PER_S = "fast ones' executions/s"


def _with_slow(count: int, share: float, task_type: str, seconds: float) -> list[Submission]:
    """`count` echo submissions, every (1/share)-th replaced by a slow one, spread evenly."""
    every = max(round(1 / share), 1) if share > 0 else 0
    return [
        Submission(task_type, {"seconds": seconds})
        if every and i % every == every - 1
        else Submission("echo", {"i": i})
        for i in range(count)
    ]


async def stragglers(ctx: Context) -> None:
    for backend in ctx.backends:
        await _stragglers_on(ctx, backend)


async def _stragglers_on(ctx: Context, backend: Backend) -> None:
    sizes, store = ctx.sizes, backend.label
    count = sizes.stragglers
    scenario = f"{S8}, {count:,}, slow = {sizes.straggler_seconds:g}s"
    workloads = {
        ALL_FAST: _with_slow(count, 0.0, "echo", 0.0),
        SLOW_AWAIT: _with_slow(count, sizes.straggler_share, WAIT, sizes.straggler_seconds),
        SLOW_BLOCKING: _with_slow(count, sizes.straggler_share, BLOCK, sizes.straggler_seconds),
    }
    templates: dict[str, str] = {}
    for number, (subject, submissions) in enumerate(workloads.items()):
        template = templates[subject] = f"straggler_tpl_{number}"
        await backend.create(template)
        await submit(backend.url(template), submissions)
        if isinstance(backend, PostgresBackend):
            await backend.vacuum_analyze(template)

    for number in range(1, sizes.runs + 1):
        for subject, template in templates.items():  # interleaved: a slowing machine slows all alike
            await backend.clone(template, "run")
            try:
                result = await daemon.drive(backend.url("run"), count, ctx.plugins_dir, sizes.batch_size)
                fast, fast_done_at = await _fast_ones_done(backend.url("run"))
            finally:
                await backend.drop("run")
            ctx.report.measurement(scenario, store, subject, EXEC_PER_S, EXEC_PER_S).values.append(
                result.executions / result.seconds
            )
            ctx.report.measurement(scenario, store, subject, FAST_PER_S, EXEC_PER_S).values.append(
                fast / (fast_done_at - result.wall_started)
            )
            ctx.progress(f"{store}: {subject}, run {number}/{sizes.runs} done")
    for template in templates.values():
        await backend.drop(template)

    fast = ctx.report.measurement(scenario, store, ALL_FAST, EXEC_PER_S, EXEC_PER_S)
    fast_seconds = count / fast.median
    for subject in (SLOW_AWAIT, SLOW_BLOCKING):
        slow = ctx.report.measurement(scenario, store, subject, EXEC_PER_S, EXEC_PER_S)
        ratio = ctx.report.ratio(f"{scenario}, {store}: {subject} / {ALL_FAST}", slow, fast)
        ctx.report.target(f"S8 {store}: {subject} >= 0.8 of all fast", ratio.value, 0.8, at_least=True)
        ctx.report.notes.append(
            f"S8 {store}, {subject}: the run cannot end before its last slow call does, and the last "
            f"submission is slow, so even a daemon that lost no time to its stragglers reaches at most "
            f"{fast_seconds / (fast_seconds + sizes.straggler_seconds):.2f} of all fast here "
            f"({count:,} in {fast_seconds:.2f} s, plus {sizes.straggler_seconds:g} s)"
            + (
                f"; blocking calls also queue for the pool's {Settings().blocking_threads} threads"
                if subject == SLOW_BLOCKING
                else ""
            )
            + f"; measured {ratio.value:.2f}."
        )
        others = ctx.report.measurement(scenario, store, subject, FAST_PER_S, EXEC_PER_S)
        beside = ctx.report.ratio(f"{scenario}, {store}: {FAST_PER_S}, {subject} / {ALL_FAST}", others, fast)
        ctx.report.target(
            f"S8 {store}: the fast 99% beside 1% {subject.split(' ', 1)[1]} >= 0.8 of all fast",
            beside.value,
            0.8,
            at_least=True,
        )


async def _fast_ones_done(url: str) -> tuple[int, float]:
    """How many `echo` executions the run finished, and when the last of them finished (the
    wall clock): what the slow calls beside them cost the others, without their own duration."""
    store = Store.from_url(url)
    try:
        async with store.engine.connect() as conn:
            found = await conn.execute(
                text("SELECT count(*), max(finished_at) FROM executions WHERE task_type = 'echo'")
            )
            count, last = found.one()
        return int(count), float(last)
    finally:
        await store.close()


async def pickup(ctx: Context) -> None:
    sizes = ctx.sizes
    scenario = f"{S9}, {sizes.busy_seconds:g}s each, stream for {sizes.pickup_seconds:g}s"
    for backend in ctx.backends:
        store = backend.label
        await latency_runs(ctx, backend, scenario, "pickup", _pickup_samples)
        p99m = ctx.report.measurement(scenario, store, DAEMON, "p99", "ms")
        ctx.report.target(
            f"S9 {store}: pickup p99 under load < 50 ms", p99m.median, 50.0, at_least=False, unit="ms"
        )


async def _pickup_samples(ctx: Context, url: str, process: daemon.DaemonProcess) -> list[float]:
    """Keep ten busy calls in flight (a fresh ten every `busy_seconds`) while echo-like submissions
    are timed one after another from submit to their first `handle`."""
    sizes = ctx.sizes
    rng = random.Random(9)
    store = Store.from_url(url)
    client = Client(store)
    samples: list[float] = []
    try:
        await _one_latency(client, process, limit=60.0)  # warm-up: the process has started
        stop_at = time.monotonic() + sizes.pickup_seconds
        next_busy = time.monotonic()
        while time.monotonic() < stop_at:
            if time.monotonic() >= next_busy:
                for _ in range(10):
                    await client.submit(WAIT, {"seconds": sizes.busy_seconds})
                next_busy += sizes.busy_seconds
                await asyncio.sleep(0.05)  # let a round take them up before the stream goes on
            await asyncio.sleep(rng.uniform(0.01, 0.03))
            samples.append(await _one_latency(client, process, limit=30.0, poll=sizes.poll_ms / 1000))
    finally:
        await client.close()
    return samples
