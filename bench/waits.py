"""Scenario 15: submit to answer through `Client.wait`, for an `echo`, daemon idle (issue 20).

The time from before `submit` to the final record in the caller's hands, which is what a caller
that waits for an answer sees: the daemon's wake-up, its round, its commit, the NOTIFY (PostgreSQL)
or the `PRAGMA data_version` change (SQLite), and the waiter's one read. The baseline, measured in
the same runs against the same daemon and interleaved sample by sample, is what a caller did
before `wait` existed: poll `get` every `poll_ms` until the phase is final. Polling that often
is fast but costs the database a query every 2 ms per caller; `wait` costs it a read or two per
answer, whatever the number of callers (the reads are counted and reported).
"""

from __future__ import annotations

import asyncio
import random
import time

from bench import daemon
from bench.harness import percentile
from bench.scenarios import DAEMON, Context
from executor.client import Client
from executor.core import FINAL_PHASES
from executor.store import Store

S15 = "15. Submit to answer (echo), daemon idle"
WAIT = f"{DAEMON}, Client.wait"
POLL = f"{DAEMON}, polling get (baseline)"


async def submit_to_answer(ctx: Context) -> None:
    sizes = ctx.sizes
    scenario = f"{S15}, up to {sizes.latency_samples} samples of each a run"
    for backend in ctx.backends:
        store = backend.label
        for number in range(1, sizes.runs + 1):
            label = "waits"
            await backend.create(label)
            log = ctx.workdir / f"daemon-{label}-{store}.log"
            process = daemon.DaemonProcess(
                backend.url(label), ctx.plugins_dir, sizes.batch_size, log, sizes.daemon_poll_interval
            )
            try:
                waited, polled, reads = await _samples(ctx, backend.url(label), process)
            finally:
                process.stop()
                await backend.drop(label)
            for subject, samples in ((WAIT, waited), (POLL, polled)):
                for metric, fraction in (("p50", 0.5), ("p99", 0.99)):
                    ctx.report.measurement(
                        scenario, store, subject, metric, "ms", higher_is_better=False
                    ).values.append(1000 * percentile(samples, fraction))
            per_answer = reads / max(len(waited), 1)
            ctx.report.measurement(
                scenario, store, WAIT, "reads per answer", "reads", higher_is_better=False
            ).values.append(per_answer)
            ctx.progress(
                f"{store}: wait run {number}/{sizes.runs}: p50 {1000 * percentile(waited, 0.5):.1f} ms, "
                f"p99 {1000 * percentile(waited, 0.99):.1f} ms; polling p50 "
                f"{1000 * percentile(polled, 0.5):.1f} ms, p99 {1000 * percentile(polled, 0.99):.1f} ms "
                f"({len(waited)} samples each, {per_answer:.2f} reads per answer)"
            )
        for metric in ("p50", "p99"):
            ctx.report.ratio(
                f"S15 {store}: {metric} through wait / polling get every {sizes.poll_ms:g} ms",
                ctx.report.measurement(scenario, store, WAIT, metric, "ms"),
                ctx.report.measurement(scenario, store, POLL, metric, "ms"),
            )


async def _samples(
    ctx: Context, url: str, process: daemon.DaemonProcess
) -> tuple[list[float], list[float], int]:
    sizes = ctx.sizes
    rng = random.Random(10)
    store = Store.from_url(url)
    client = Client(store)
    waited: list[float] = []
    polled: list[float] = []
    try:
        await _through_wait(client, process, limit=60.0)  # warm-up: the process has started
        reads = store.finish_watch.reads
        stop_at = time.monotonic() + sizes.latency_seconds
        while len(waited) < sizes.latency_samples and time.monotonic() < stop_at:
            await asyncio.sleep(rng.uniform(0.03, 0.12))  # let the daemon go idle again
            waited.append(await _through_wait(client, process, limit=10.0))
            await asyncio.sleep(rng.uniform(0.03, 0.12))
            polled.append(await _through_polling(client, process, limit=10.0, poll=sizes.poll_ms / 1000))
        reads = store.finish_watch.reads - reads
    finally:
        await client.close()
    return waited, polled, reads


async def _through_wait(client: Client, process: daemon.DaemonProcess, *, limit: float) -> float:
    started = time.perf_counter()
    execution_id = await client.submit("echo", {"n": 1})
    try:
        record = await client.wait(execution_id, timeout=limit)
    except TimeoutError:
        process.check_alive()
        raise
    assert record.outputs == {"n": 1}
    return time.perf_counter() - started


async def _through_polling(
    client: Client, process: daemon.DaemonProcess, *, limit: float, poll: float
) -> float:
    started = time.perf_counter()
    execution_id = await client.submit("echo", {"n": 1})
    deadline = time.monotonic() + limit
    while True:
        record = await client.get(execution_id)
        if record is not None and record.phase in FINAL_PHASES:
            return time.perf_counter() - started
        process.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"execution {execution_id} did not finish within {limit}s")
        await asyncio.sleep(poll)
