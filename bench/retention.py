"""Retention (issue 20): the daemon's throughput while it prunes old rows, and the size of the
store over a run that submits and prunes continuously.

11. Throughput while pruning: the echo throughput of the daemon's loop on a table holding
    `prune_rows` finished executions (and their events), alone and with the pruner deleting those
    rows meanwhile (the daemon's own `prune` pass, as `Pruner` runs it: batches of
    EXECUTOR_PRUNE_BATCH, each its own transaction, resting as long as each batch took), runs
    interleaved on copies of one template. Target: with pruning >= 0.9 of without.
12. Size under churn: a loop, a pruner with a short retention and a steady stream of submissions,
    for `churn_seconds`; the rows and the bytes of the executions and events tables (SQLite: the
    database file and its WAL) sampled every second. Bounded: the second half's peak is not above
    the first half's by more than the noise of one retention period.
"""

from __future__ import annotations

import time

import anyio
import asyncpg

from bench import daemon
from bench.databases import Backend, PostgresBackend, SqliteBackend, copy_rows, echo_submissions, submit
from bench.scenarios import DAEMON, EXEC_PER_S, Context, _prototype
from executor.core import Phase
from executor.daemon import setup_plugins
from executor.history.retention import PruneReport, prune
from executor.plugin.resources import InProcessResourceManager
from executor.runtime import Reconciler
from executor.store import Store

S11 = "11. Throughput while pruning"
S12 = "12. Store size, submitting and pruning continuously"
PRUNING = f"{DAEMON}, pruning meanwhile"
PRUNE_BATCH = 200  # EXECUTOR_PRUNE_BATCH's default
PRUNE_INTERVAL = 1.0
#: Scenario 11 on a PostgreSQL without autovacuum: how often the run vacuums in its place.
VACUUM_EVERY = 5.0


async def pruning(ctx: Context) -> None:
    for backend in ctx.backends:
        await _pruning_on(ctx, backend)


async def _pruning_on(ctx: Context, backend: Backend) -> None:
    sizes, store = ctx.sizes, backend.label
    rows, count = sizes.prune_rows, sizes.prune_executions
    scenario = f"{S11}, {rows:,} old rows, {count:,} echo executions"
    template = "prune_tpl"
    await backend.create(template)
    prototype = await _prototype(backend, template, finished=True, ctx=ctx)
    await copy_rows(backend, template, prototype, rows - 1, with_events=True, spread=86_400.0)
    await submit(backend.url(template), echo_submissions(count))
    if isinstance(backend, PostgresBackend):
        await backend.vacuum_analyze(template)
    ctx.progress(f"{store}: {rows:,} finished rows to prune, {count:,} executions to run")
    cutoff = time.time()  # every copied row finished before it; the run's executions after
    pruned: list[float] = []
    for number in range(1, sizes.runs + 1):
        for subject in (DAEMON, PRUNING):
            await backend.clone(template, "run")
            try:
                url = backend.url("run")
                if subject == DAEMON:
                    result = await daemon.drive(url, count, ctx.plugins_dir, sizes.batch_size)
                else:
                    result, deleted = await _drive_while_pruning(url, count, ctx, cutoff)
                    pruned.append(deleted / result.seconds)
                    ctx.report.measurement(
                        scenario, store, subject, "old rows deleted during the run", "rows"
                    ).values.append(deleted)
            finally:
                await backend.drop("run")
            ctx.report.measurement(scenario, store, subject, EXEC_PER_S, EXEC_PER_S).values.append(
                result.executions / result.seconds
            )
            ctx.progress(f"{store}: {subject}, run {number}/{sizes.runs} done")
    await backend.drop(template)
    ctx.report.measurement(scenario, store, PRUNING, "rows pruned/s", "rows/s").values.extend(pruned)
    ratio = ctx.report.ratio(
        f"{scenario}, {store}: throughput pruning / not pruning",
        ctx.report.measurement(scenario, store, PRUNING, EXEC_PER_S, EXEC_PER_S),
        ctx.report.measurement(scenario, store, DAEMON, EXEC_PER_S, EXEC_PER_S),
    )
    ctx.report.target(
        f"S11 {store}: throughput while pruning >= 0.9 of without", ratio.value, 0.9, at_least=True
    )


async def _drive_while_pruning(
    url: str, count: int, ctx: Context, cutoff: float
) -> tuple[daemon.DaemonRun, int]:
    """`daemon.drive`, with the pruner's passes running on the same event loop (as in `executor
    run`, where the pruner is a task of the daemon's); the rows it deleted until the drive ended."""
    store = Store.from_url(url)
    done = PruneReport()

    async def pruner() -> None:
        while True:
            await prune(store, {Phase.SUCCESS: cutoff}, batch=PRUNE_BATCH, report=done)
            await anyio.sleep(PRUNE_INTERVAL)

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(pruner)
            result = await daemon.drive(url, count, ctx.plugins_dir, ctx.sizes.batch_size)
            group.cancel_scope.cancel()
    finally:
        await store.close()
    return result, done.total


# -- 11: size under churn -----------------------------------------------------------------------------


async def churn(ctx: Context) -> None:
    for backend in ctx.backends:
        await _churn_on(ctx, backend)


async def _churn_on(ctx: Context, backend: Backend) -> None:
    sizes, store_label = ctx.sizes, backend.label
    seconds, rate, keep = sizes.churn_seconds, sizes.churn_rate, sizes.churn_retention
    scenario = f"{S12}, {rate:,}/s for {seconds:g}s, kept {keep:g}s"
    name = "churn"
    await backend.create(name)
    url = backend.url(name)
    settings = daemon.daemon_settings(url, ctx.plugins_dir, sizes.batch_size)
    resources = InProcessResourceManager(settings.resource_quotas)
    plugins = await setup_plugins(settings, resources)
    store = Store.from_url(url)
    samples: list[tuple[float, int, int]] = []  # (elapsed, executions rows, bytes)
    submitted = 0
    try:
        reconciler = Reconciler(store, plugins, settings, resource_manager=resources)
        started = time.monotonic()

        async def submitter() -> None:
            nonlocal submitted
            tick = 0.1
            while time.monotonic() - started < seconds:
                await store.submit_many(echo_submissions(max(1, int(rate * tick))), now=time.time())
                submitted += max(1, int(rate * tick))
                await anyio.sleep(tick)

        async def pruner() -> None:
            while True:
                await prune(store, {Phase.SUCCESS: time.time() - keep}, batch=PRUNE_BATCH)
                await anyio.sleep(min(PRUNE_INTERVAL, keep / 2))

        async def sampler() -> None:
            while True:
                rows = sum((await store.count_by_phase()).values())
                samples.append((time.monotonic() - started, rows, await _size(backend, name)))
                await anyio.sleep(1.0)

        async with anyio.create_task_group() as group:
            group.start_soon(reconciler.run)
            group.start_soon(pruner)
            group.start_soon(sampler)
            if isinstance(backend, PostgresBackend) and not await _autovacuum_on(backend, name):
                # Deleted rows' space is reused only once vacuumed; with autovacuum off (as on the
                # test server) nothing would be, and the tables would grow whatever is pruned.
                ctx.report.notes.append(
                    f"{S12}, PostgreSQL: autovacuum is off on this server; the run VACUUMs executions "
                    f"and events every {VACUUM_EVERY:g}s in its place."
                )
                group.start_soon(_vacuum, backend, name)
            await submitter()
            reconciler.stop()
            group.cancel_scope.cancel()
    finally:
        await store.close()
        await backend.drop(name)
    _report_churn(ctx, scenario, store_label, samples, seconds, submitted)


def _report_churn(
    ctx: Context,
    scenario: str,
    store_label: str,
    samples: list[tuple[float, int, int]],
    seconds: float,
    submitted: int,
) -> None:
    half = [s for s in samples if s[0] <= seconds / 2] or samples[:1]
    second = [s for s in samples if s[0] > seconds / 2] or samples[-1:]
    report = ctx.report
    for label, part in (("first half", half), ("second half", second)):
        report.measurement(
            scenario, store_label, f"{DAEMON}, {label}", "peak rows", "rows", higher_is_better=False
        ).values.append(max(s[1] for s in part))
        report.measurement(
            scenario, store_label, f"{DAEMON}, {label}", "peak size", "MiB", higher_is_better=False
        ).values.append(max(s[2] for s in part) / 2**20)
    trace = ", ".join(f"{s[0]:.0f}s: {s[1]:,} rows {s[2] / 2**20:.1f} MiB" for s in samples)
    report.notes.append(f"{S12}, {store_label}: {submitted:,} submitted; samples {trace}.")
    grown = max(s[2] for s in second) / max(1, *(s[2] for s in half))
    report.target(
        f"S12 {store_label}: peak size, second half / first half <= 1.5", grown, 1.5, at_least=False
    )


async def _autovacuum_on(backend: PostgresBackend, name: str) -> bool:
    connection = await asyncpg.connect(**backend.connect_kwargs(name))
    try:
        return str(await connection.fetchval("SHOW autovacuum")) == "on"
    finally:
        await connection.close()


async def _vacuum(backend: PostgresBackend, name: str) -> None:
    """What autovacuum does for a high-churn table, every `VACUUM_EVERY` seconds."""
    connection = await asyncpg.connect(**backend.connect_kwargs(name))
    try:
        while True:
            await anyio.sleep(VACUUM_EVERY)
            await connection.execute("VACUUM executions, events")
    finally:
        await connection.close()


async def _size(backend: Backend, name: str) -> int:
    """Bytes the executions and events take: SQLite's file and WAL, PostgreSQL's two tables with
    their indexes and TOAST."""
    if isinstance(backend, SqliteBackend):
        path = backend.path(name)
        wal = path.with_name(path.name + "-wal")
        return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    connection = await asyncpg.connect(**backend.connect_kwargs(name))
    try:
        return int(
            await connection.fetchval(
                "SELECT pg_total_relation_size('executions') + pg_total_relation_size('events')"
            )
        )
    finally:
        await connection.close()
