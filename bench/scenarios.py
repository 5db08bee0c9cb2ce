"""The seven scenarios of issue 5. Each adds its measurements, ratios and targets to the report.

Runs of the daemon and of what it is compared with are interleaved (daemon, baseline, baseline,
daemon, ...), each on a fresh copy of the same seeded database, so that a machine that slows down
mid-run slows every subject alike and the ratios stay honest.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import daemon, paced, peers, raw
from bench.cpu import CpuUse
from bench.databases import (
    POSTGRES,
    Backend,
    PostgresBackend,
    SqliteBackend,
    copy_rows,
    count_rows,
    echo_submissions,
    finished_where,
    submit,
    three_round_submissions,
)
from bench.harness import Measurement, Progress, Report, Sizes, percentile
from executor.client import Client
from executor.store import Store, Submission

DAEMON = "executor daemon"
RAW_SQLITE3 = "raw SQL, sqlite3"
RAW_AIOSQLITE = "raw SQL, aiosqlite"
RAW_ASYNCPG = "raw SQL, asyncpg"
EXEC_PER_S = "executions/s"
ROUND_LATENCY = "round latency, median"

S1 = "1. Throughput, one-round tasks (echo)"
S2 = "2. Throughput, three-round tasks"
S4 = "4. Cost against history"
S5 = "5. Memory, pending executions queued"
S6 = "6. Latency, submit to first handle (daemon idle)"
S7 = "7. Peers, no-op jobs"


@dataclass(slots=True)
class Context:
    sizes: Sizes
    sqlite: SqliteBackend
    postgres: PostgresBackend | None
    plugins_dir: Path
    workdir: Path
    report: Report = field(default_factory=Report)
    progress: Progress = field(default_factory=Progress)

    @property
    def backends(self) -> list[Backend]:
        return [self.sqlite] + ([self.postgres] if self.postgres is not None else [])


Run = Callable[[str], Awaitable[None]]


async def _interleaved(ctx: Context, backend: Backend, template: str, subjects: dict[str, Run]) -> None:
    """Each run of each subject on its own copy of `template`, subjects interleaved run by run."""
    for number in range(1, ctx.sizes.runs + 1):
        for subject, run in subjects.items():
            name = "run"
            await backend.clone(template, name)
            try:
                await run(name)
            finally:
                await backend.drop(name)
            ctx.progress(f"{backend.label}: {subject}, run {number}/{ctx.sizes.runs} done")


# -- 1 and 2: throughput against the raw-SQL limit --------------------------------------------------


async def throughput(ctx: Context, workload: str) -> None:
    """Scenario 1 (`echo`) or 2 (`three`): the daemon against the raw-SQL loops, each store."""
    for backend in ctx.backends:
        await _throughput_on(ctx, backend, workload)


async def _throughput_on(ctx: Context, backend: Backend, workload: str) -> None:
    sizes, store = ctx.sizes, backend.label
    count = sizes.one_round if workload == "echo" else sizes.three_rounds
    scenario = f"{S1}, {count:,}" if workload == "echo" else f"{S2}, {count:,}"
    rounds_each = 1 if workload == "echo" else 3
    template = f"{workload}_tpl"
    await backend.create(template)
    subs = echo_submissions(count) if workload == "echo" else three_round_submissions(count)
    await submit(backend.url(template), subs)
    if isinstance(backend, PostgresBackend):
        await backend.vacuum_analyze(template)
    ctx.progress(f"{store}: seeded {count:,} {workload} executions")

    def record(subject: str, executions: int, seconds: float, rounds: list[float] | None = None) -> None:
        report = ctx.report
        report.measurement(scenario, store, subject, EXEC_PER_S, EXEC_PER_S).values.append(
            executions / seconds
        )
        if rounds_each > 1:
            per_round = "execution-rounds/s"
            report.measurement(scenario, store, subject, per_round, per_round).values.append(
                executions * rounds_each / seconds
            )
        if rounds:
            report.measurement(
                scenario, store, subject, ROUND_LATENCY, "ms", higher_is_better=False
            ).values.append(1000 * percentile(rounds, 0.5))

    async def with_daemon(name: str) -> None:
        cpu_of = backend.database(name) if isinstance(backend, PostgresBackend) else None
        result = await daemon.drive(
            backend.url(name), count, ctx.plugins_dir, sizes.batch_size, cpu_of=cpu_of
        )
        record(DAEMON, result.executions, result.seconds, result.full_round_seconds)
        _record_cpu(ctx, scenario, store, DAEMON, EXEC_PER_S, result.executions, result.seconds, result.cpu)

    subjects: dict[str, Run] = {DAEMON: with_daemon, **_raw_subjects(backend, workload, count, sizes, record)}
    await _interleaved(ctx, backend, template, subjects)
    await backend.drop(template)

    ours = ctx.report.measurement(scenario, store, DAEMON, EXEC_PER_S, EXEC_PER_S)
    for subject in subjects:
        if subject == DAEMON:
            continue
        limit = ctx.report.measurement(scenario, store, subject, EXEC_PER_S, EXEC_PER_S)
        ratio = ctx.report.ratio(f"{scenario}, {store}: daemon / {subject}", ours, limit)
        if workload == "echo":
            threshold = 0.35 if subject == RAW_SQLITE3 else 0.5
            ctx.report.target(
                f"S1 {store}: daemon >= {threshold:.0%} of {subject}", ratio.value, threshold, at_least=True
            )


def _raw_subjects(
    backend: Backend, workload: str, count: int, sizes: Sizes, record: Callable[[str, int, float], None]
) -> dict[str, Run]:
    """The raw-SQL loops on the drivers the daemon's store uses for `backend`."""
    if isinstance(backend, SqliteBackend):
        sqlite_backend = backend

        async def with_aiosqlite(name: str) -> None:
            result = await raw.aiosqlite_loop(sqlite_backend.path(name), workload, sizes.batch_size)
            _check(result.executions, count, RAW_AIOSQLITE)
            record(RAW_AIOSQLITE, result.executions, result.seconds)

        async def with_sqlite3(name: str) -> None:
            path = sqlite_backend.path(name)
            result = await asyncio.to_thread(raw.sqlite3_loop, path, workload, sizes.batch_size)
            _check(result.executions, count, RAW_SQLITE3)
            record(RAW_SQLITE3, result.executions, result.seconds)

        return {RAW_AIOSQLITE: with_aiosqlite, RAW_SQLITE3: with_sqlite3}
    pg_backend = backend

    async def with_asyncpg(name: str) -> None:
        result = await raw.asyncpg_loop(pg_backend.connect_kwargs(name), workload, sizes.batch_size)
        _check(result.executions, count, RAW_ASYNCPG)
        record(RAW_ASYNCPG, result.executions, result.seconds)

    return {RAW_ASYNCPG: with_asyncpg}


def _check(done: int, expected: int, who: str) -> None:
    if done != expected:
        raise RuntimeError(f"{who} finished {done} of {expected} executions")


async def one_round(ctx: Context) -> None:
    await throughput(ctx, "echo")


async def three_rounds(ctx: Context) -> None:
    await throughput(ctx, "three")


# -- 4: cost against history --------------------------------------------------------------------------


async def _prototype(backend: Backend, name: str, *, finished: bool, ctx: Context) -> str:
    """One echo execution made through the real API (and, if `finished`, driven by the real loop)."""
    [prototype] = await submit(backend.url(name), [Submission("echo", {"i": 0})])
    if finished:
        await daemon.drive(backend.url(name), 1, ctx.plugins_dir, ctx.sizes.batch_size)
    return prototype


async def history(ctx: Context) -> None:
    """Scenario 4: the echo throughput and round latency on an empty table and with N finished rows."""
    for backend in ctx.backends:
        await _history_on(ctx, backend)


async def _history_on(ctx: Context, backend: Backend) -> None:
    sizes, store = ctx.sizes, backend.label
    count, rows = sizes.history_executions, sizes.history_rows
    scenario = f"{S4}, {count:,} echo executions"
    empty, full = "hist_empty_tpl", "hist_full_tpl"
    await backend.create(empty)
    await submit(backend.url(empty), echo_submissions(count))
    await backend.create(full)
    started = time.perf_counter()
    prototype = await _prototype(backend, full, finished=True, ctx=ctx)
    await copy_rows(backend, full, prototype, rows - 1, with_events=True, spread=86_400.0)
    generated = time.perf_counter() - started
    finished_rows = await count_rows(backend, full, finished_where(backend))
    if finished_rows != rows:
        raise RuntimeError(f"history generation made {finished_rows} finished rows, not {rows}")
    await submit(backend.url(full), echo_submissions(count))
    if isinstance(backend, PostgresBackend):
        await backend.vacuum_analyze(empty)
        await backend.vacuum_analyze(full)
    ctx.progress(f"{store}: generated {rows:,} finished executions in {generated:.1f}s")
    ctx.report.notes.append(
        f"{store}: {rows:,} finished executions (and {2 * rows:,} events) generated in SQL in "
        f"{generated:.1f}s."
    )
    labels = {empty: f"{DAEMON}, empty table", full: f"{DAEMON}, {rows:,} finished rows"}
    for number in range(1, sizes.runs + 1):
        for template, subject in labels.items():
            await backend.clone(template, "run")
            try:
                result = await daemon.drive(backend.url("run"), count, ctx.plugins_dir, sizes.batch_size)
            finally:
                await backend.drop("run")
            ctx.report.measurement(scenario, store, subject, EXEC_PER_S, EXEC_PER_S).values.append(
                result.executions / result.seconds
            )
            ctx.report.measurement(
                scenario, store, subject, ROUND_LATENCY, "ms", higher_is_better=False
            ).values.append(1000 * percentile(result.full_round_seconds, 0.5))
            ctx.progress(f"{store}: history, {subject}, run {number}/{sizes.runs} done")
    await backend.drop(empty)
    await backend.drop(full)

    def figure(template: str, metric: str) -> Measurement:
        return ctx.report.measurement(scenario, store, labels[template], metric, "")

    ratio = ctx.report.ratio(
        f"{scenario}, {store}: throughput with history / empty",
        figure(full, EXEC_PER_S),
        figure(empty, EXEC_PER_S),
    )
    ctx.report.ratio(
        f"{scenario}, {store}: round latency with history / empty",
        figure(full, ROUND_LATENCY),
        figure(empty, ROUND_LATENCY),
    )
    ctx.report.target(
        f"S4 {store}: throughput with {rows:,} finished rows >= 0.8 of empty", ratio.value, 0.8, at_least=True
    )


# -- 5: memory with a million pending -----------------------------------------------------------------


async def memory(ctx: Context) -> None:
    """Scenario 5: peak RSS of the daemon process while a million pending executions are queued."""
    sizes = ctx.sizes
    rows = sizes.pending_rows
    scenario = f"{S5}, {rows:,} pending, {sizes.memory_seconds:g}s of work"
    for backend in ctx.backends:
        store = backend.label
        template = "pending_tpl"
        await backend.create(template)
        started = time.perf_counter()
        prototype = await _prototype(backend, template, finished=False, ctx=ctx)
        await copy_rows(backend, template, prototype, rows - 1, with_events=False, spread=3_600.0)
        ctx.progress(
            f"{store}: generated {rows:,} pending executions in {time.perf_counter() - started:.1f}s"
        )
        for number in range(1, sizes.runs + 1):
            await backend.clone(template, "run")
            try:
                peak, done = await _watch_memory(ctx, backend, "run")
            finally:
                await backend.drop("run")
            ctx.report.measurement(
                scenario, store, DAEMON, "peak RSS", "MB", higher_is_better=False
            ).values.append(peak)
            ctx.report.measurement(
                scenario, store, DAEMON, "executions finished meanwhile", "executions"
            ).values.append(float(done))
            ctx.progress(f"{store}: memory run {number}/{sizes.runs}: peak {peak:.0f} MB, {done:,} finished")
        await backend.drop(template)
        peak_rss = ctx.report.measurement(scenario, store, DAEMON, "peak RSS", "MB")
        ctx.report.target(
            f"S5 {store}: peak RSS with {rows:,} pending < 300 MB",
            peak_rss.median,
            300.0,
            at_least=False,
            unit="MB",
        )


async def _watch_memory(ctx: Context, backend: Backend, name: str) -> tuple[float, int]:
    """Start the daemon process, sample its RSS for `memory_seconds` of work, stop it."""
    log = ctx.workdir / f"daemon-memory-{backend.label}.log"
    process = daemon.DaemonProcess(
        backend.url(name), ctx.plugins_dir, ctx.sizes.batch_size, log, ctx.sizes.daemon_poll_interval
    )
    peak_mib = 0.0
    try:
        # Until the first execution is done the process is still starting (imports, plugins).
        deadline = time.monotonic() + 60
        while await count_rows(backend, name, finished_where(backend)) == 0:
            process.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemon finished nothing in 60s; see {log}")
            await asyncio.sleep(0.05)
        end = time.monotonic() + ctx.sizes.memory_seconds
        while time.monotonic() < end:
            process.check_alive()
            peak_mib = max(peak_mib, process.memory()[1])
            await asyncio.sleep(0.1)
        process.check_alive()
        peak_mib = max(peak_mib, process.memory()[1])
    finally:
        process.stop()
    done = await count_rows(backend, name, finished_where(backend))
    return peak_mib * 1.048576, done  # MiB to decimal MB, the unit of the target


# -- 6: latency ------------------------------------------------------------------------------------------


async def latency(ctx: Context) -> None:
    """Scenario 6: submit (Python client, another process) to the first `handle` call, daemon idle."""
    sizes = ctx.sizes
    scenario = f"{S6}, up to {sizes.latency_samples} samples a run"
    for backend in ctx.backends:
        store = backend.label
        await latency_runs(ctx, backend, scenario, "latency", _latency_samples)
        p50m = ctx.report.measurement(scenario, store, DAEMON, "p50", "ms")
        p99m = ctx.report.measurement(scenario, store, DAEMON, "p99", "ms")
        ctx.report.target(f"S6 {store}: latency p50 < 20 ms", p50m.median, 20.0, at_least=False, unit="ms")
        ctx.report.target(f"S6 {store}: latency p99 < 100 ms", p99m.median, 100.0, at_least=False, unit="ms")
    await paced_latency(ctx)


async def paced_latency(ctx: Context) -> None:
    """Scenario 6 under a steady stream: `latency_rate` submissions a second (issue 21's 200/s),
    offered open-loop for `latency_rate_seconds`, each timed from submit to first `handle`."""
    sizes = ctx.sizes
    scenario = (
        f"{S6[: -len(' (daemon idle)')]} at {sizes.latency_rate:g}/s for {sizes.latency_rate_seconds:g}s"
    )

    for backend in ctx.backends:
        store = backend.label
        await latency_runs(ctx, backend, scenario, "paced", _paced_sampler(scenario, store))
        if isinstance(backend, PostgresBackend):
            p50m = ctx.report.measurement(scenario, store, DAEMON, "p50", "ms")
            p99m = ctx.report.measurement(scenario, store, DAEMON, "p99", "ms")
            rate = f"{sizes.latency_rate:g}/s"
            ctx.report.target(
                f"S6 {store} at {rate}: p50 < 5 ms", p50m.median, 5.0, at_least=False, unit="ms"
            )
            ctx.report.target(
                f"S6 {store} at {rate}: p99 < 20 ms", p99m.median, 20.0, at_least=False, unit="ms"
            )


def _paced_sampler(scenario: str, store: str) -> Sampler:
    async def sample(ctx: Context, url: str, process: daemon.DaemonProcess) -> list[float]:
        sizes = ctx.sizes
        run = await paced.paced_samples(
            url, process, rate=sizes.latency_rate, seconds=sizes.latency_rate_seconds
        )
        # The submitter's share: on a loaded machine it, not the daemon, may be what is slow.
        report, submitter = ctx.report, "submitter (Python client)"
        report.measurement(
            scenario, store, submitter, "submit p50", "ms", higher_is_better=False
        ).values.append(1000 * percentile(run.submit_seconds, 0.5))
        report.measurement(scenario, store, submitter, "offered", "submissions/s").values.append(
            run.offered_rate
        )
        # The daemon's share without the submitter's commit: from `submit` returning to `handle`.
        after = [s.after_return for s in run.samples]
        for metric, fraction in (("p50 after submit returned", 0.5), ("p99 after submit returned", 0.99)):
            report.measurement(scenario, store, DAEMON, metric, "ms", higher_is_better=False).values.append(
                1000 * percentile(after, fraction)
            )
        return [s.latency for s in run.samples]

    return sample


Sampler = Callable[[Context, str, daemon.DaemonProcess], Awaitable[list[float]]]


async def latency_runs(ctx: Context, backend: Backend, scenario: str, label: str, sample: Sampler) -> None:
    """Each run: a fresh database and the daemon as its own process, `sample` timing submissions
    from submit to first `handle`; each run's p50, p99 and number of samples are recorded."""
    store = backend.label
    for number in range(1, ctx.sizes.runs + 1):
        await backend.create(label)
        log = ctx.workdir / f"daemon-{label}-{store}.log"
        process = daemon.DaemonProcess(
            backend.url(label), ctx.plugins_dir, ctx.sizes.batch_size, log, ctx.sizes.daemon_poll_interval
        )
        try:
            samples = await sample(ctx, backend.url(label), process)
        finally:
            process.stop()
            await backend.drop(label)
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        for metric, value in (("p50", p50), ("p99", p99)):
            ctx.report.measurement(
                scenario, store, DAEMON, metric, "ms", higher_is_better=False
            ).values.append(1000 * value)
        ctx.report.measurement(scenario, store, DAEMON, "samples", "samples").values.append(len(samples))
        ctx.progress(
            f"{store}: {label} run {number}/{ctx.sizes.runs}: "
            f"p50 {1000 * p50:.1f} ms, p99 {1000 * p99:.1f} ms ({len(samples)} samples)"
        )


async def _latency_samples(ctx: Context, url: str, process: daemon.DaemonProcess) -> list[float]:
    sizes = ctx.sizes
    rng = random.Random(5)
    store = Store.from_url(url)
    client = Client(store)
    samples: list[float] = []
    try:
        await _one_latency(client, process, limit=60.0)  # warm-up: the process has started
        stop_at = time.monotonic() + sizes.latency_seconds
        while len(samples) < sizes.latency_samples and time.monotonic() < stop_at:
            await asyncio.sleep(rng.uniform(0.03, 0.12))  # let the daemon go idle again
            samples.append(await _one_latency(client, process, limit=10.0, poll=sizes.poll_ms / 1000))
    finally:
        await client.close()
    return samples


async def _one_latency(
    client: Client, process: daemon.DaemonProcess, *, limit: float, poll: float = 0.01
) -> float:
    execution_id = await client.submit("bench-stamp")
    deadline = time.monotonic() + limit
    while True:
        record = await client.get(execution_id)
        if record is not None and record.outputs is not None:
            return float(record.outputs["handled_at"]) - record.created_at
        process.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"execution {execution_id} was not handled within {limit}s")
        await asyncio.sleep(poll)


# -- 7: peers ----------------------------------------------------------------------------------------------

JOBS_PER_S = "jobs/s"
PER_CORE = "jobs/s per core used"
CORES = "cores used"


@dataclass(frozen=True, slots=True)
class PeerSetting:
    """One peer at one setting: `default` marks its documented defaults."""

    peer: str
    subject: str
    run: Callable[[str], Awaitable[peers.PeerRun]]
    default: bool = False


def _peer_settings(backend: PostgresBackend, sizes: Sizes) -> list[PeerSetting]:
    """Every peer at its defaults and at its best documented settings (see the Method section)."""
    jobs, batch = sizes.peer_jobs, sizes.batch_size
    slow = sizes.procrastinate_jobs
    pgq, proc = peers.version(peers.PGQUEUER), peers.version(peers.PROCRASTINATE)
    gw, boss = peers.version(peers.GRAPHILE_WORKER), peers.version(peers.PG_BOSS)

    def node(peer: str, count: int, settings: dict[str, object]) -> Callable[[str], Awaitable[peers.PeerRun]]:
        return lambda name: peers.node_run(backend, name, peer, count, settings)

    # Graphile Worker's performance page: 24 concurrent jobs, a pool of 25, a local queue of 500 and
    # completions (and failures) batched with a delay of 0.
    graphile_concurrent = {"concurrency": 24, "maxPoolSize": 25}
    graphile_best = graphile_concurrent | {
        "preset": {"localQueue": {"size": 500}, "completeJobBatchDelay": 0, "failJobBatchDelay": 0}
    }
    # pg-boss 10 has no team size: each work() call is one polling loop fetching `batchSize` jobs,
    # at most once per polling interval (0.5 s at the least). Its docs give no best; the batch is
    # the daemon's, and 8 loops were the fastest of 4, 8, 16 and 32 here (more contend for rows).
    boss_workers = 8
    boss_best = {"workers": boss_workers, "work": {"batchSize": batch, "pollingIntervalSeconds": 0.5}}
    return [
        PeerSetting(
            peers.PGQUEUER,
            f"pgqueuer {pgq}, batch 10 (default), {jobs:,} jobs",
            lambda name: peers.pgqueuer_run(backend, name, jobs, 10),
            default=True,
        ),
        PeerSetting(
            peers.PGQUEUER,
            f"pgqueuer {pgq}, batch {batch}, {jobs:,} jobs",
            lambda name: peers.pgqueuer_run(backend, name, jobs, batch),
        ),
        PeerSetting(
            peers.PROCRASTINATE,
            f"procrastinate {proc}, concurrency 1 (default), {slow:,} jobs",
            lambda name: peers.procrastinate_run(backend, name, slow, 1),
            default=True,
        ),
        PeerSetting(
            peers.PROCRASTINATE,
            f"procrastinate {proc}, concurrency 10, {slow:,} jobs",
            lambda name: peers.procrastinate_run(backend, name, slow, 10),
        ),
        PeerSetting(
            peers.GRAPHILE_WORKER,
            f"Graphile Worker {gw}, concurrency 1 (default), {jobs:,} jobs",
            node(peers.GRAPHILE_WORKER, jobs, {}),
            default=True,
        ),
        PeerSetting(
            peers.GRAPHILE_WORKER,
            f"Graphile Worker {gw}, concurrency 24, {jobs:,} jobs",
            node(peers.GRAPHILE_WORKER, jobs, graphile_concurrent),
        ),
        PeerSetting(
            peers.GRAPHILE_WORKER,
            f"Graphile Worker {gw}, concurrency 24, local queue 500, batched completions, {jobs:,} jobs",
            node(peers.GRAPHILE_WORKER, jobs, graphile_best),
        ),
        PeerSetting(
            peers.PG_BOSS,
            f"pg-boss {boss}, 1 worker, batch 1, polling 2 s (default), {sizes.pgboss_default_jobs:,} jobs",
            node(peers.PG_BOSS, sizes.pgboss_default_jobs, {}),
            default=True,
        ),
        PeerSetting(
            peers.PG_BOSS,
            f"pg-boss {boss}, {boss_workers} workers, batch {batch}, polling 0.5 s, {jobs:,} jobs",
            node(peers.PG_BOSS, jobs, boss_best),
        ),
    ]


def _record_cpu(
    ctx: Context, scenario: str, store: str, subject: str, unit: str, count: int, seconds: float, cpu: object
) -> str:
    """Throughput per CPU core used and the cores used, when the run's backends were seen; the same
    for a progress line (empty when not measured)."""
    if not isinstance(cpu, CpuUse) or not cpu.seen or cpu.total <= 0:
        return ""
    per_core = f"{unit} per core used"
    ctx.report.measurement(scenario, store, subject, per_core, per_core).values.append(count / cpu.total)
    ctx.report.measurement(scenario, store, subject, CORES, CORES, higher_is_better=False).values.append(
        cpu.total / seconds
    )
    return f", {count / cpu.total:,.0f} {per_core} ({cpu.total / seconds:.2f} cores)"


async def peer_jobs(ctx: Context) -> None:
    """Scenario 7: the Python and Node.js peers on the same PostgreSQL, as ratios to the daemon."""
    sizes = ctx.sizes
    backend = ctx.postgres
    if backend is None:
        ctx.report.skipped.append(f"{S7}: no PostgreSQL")
        return
    missing = {
        peer: reason for peer in peers.PYTHON_PEERS + peers.NODE_PEERS if (reason := peers.available(peer))
    }
    ctx.report.skipped.extend(f"{S7}: {reason}" for reason in missing.values())
    settings = [setting for setting in _peer_settings(backend, sizes) if setting.peer not in missing]
    if not settings:
        return
    store = backend.label
    ours_scenario = f"{S1}, {sizes.one_round:,}"
    ours = ctx.report.find(ours_scenario, store, DAEMON, EXEC_PER_S)
    if ours is None or not ours.values:
        await _throughput_on(ctx, backend, "echo")
        ours = ctx.report.measurement(ours_scenario, store, DAEMON, EXEC_PER_S, EXEC_PER_S)
    scenario = S7
    daemon_subject = f"{DAEMON} (S1 {store}), {sizes.one_round:,} executions"
    # The daemon's figures from scenario 1, beside the peers'.
    for metric in (EXEC_PER_S, f"{EXEC_PER_S} per core used", CORES):
        measured = ctx.report.find(ours_scenario, store, DAEMON, metric)
        if measured is not None and measured.values:
            name = {EXEC_PER_S: JOBS_PER_S, f"{EXEC_PER_S} per core used": PER_CORE}.get(metric, metric)
            ctx.report.measurement(
                scenario, store, daemon_subject, name, name, higher_is_better=measured.higher_is_better
            ).values.extend(measured.values)
    for number in range(1, sizes.runs + 1):
        for setting in settings:
            try:
                result = await setting.run("peer")
            finally:
                await backend.drop("peer")
            rate = result.jobs / result.seconds
            ctx.report.measurement(scenario, store, setting.subject, JOBS_PER_S, JOBS_PER_S).values.append(
                rate
            )
            cpu = _record_cpu(
                ctx, scenario, store, setting.subject, JOBS_PER_S, result.jobs, result.seconds, result.cpu
            )
            ctx.progress(f"{store}: {setting.subject}, run {number}/{sizes.runs}: {rate:,.0f} jobs/s{cpu}")
    _peer_ratios(ctx, settings, ours, daemon_subject)


def _peer_ratios(ctx: Context, settings: list[PeerSetting], ours: Measurement, daemon_subject: str) -> None:
    """Each setting over the daemon (jobs/s and per core), and the targets of issues 5 and 18."""
    report, store, scenario = ctx.report, POSTGRES, S7
    ours_per_core = report.find(scenario, store, daemon_subject, PER_CORE)
    best: dict[str, float] = {}
    default: dict[str, float] = {}
    for setting in settings:
        measured = report.measurement(scenario, store, setting.subject, JOBS_PER_S, JOBS_PER_S)
        report.ratio(f"{S7}: {setting.subject} / executor daemon (S1 {store})", measured, ours)
        per_core = report.find(scenario, store, setting.subject, PER_CORE)
        if per_core is not None and ours_per_core is not None:
            report.ratio(
                f"{S7}, per core used: {setting.subject} / executor daemon (S1 {store})",
                per_core,
                ours_per_core,
            )
        best[setting.peer] = max(best.get(setting.peer, 0.0), measured.median)
        if setting.default:
            default[setting.peer] = measured.median
    # Issue 18: twice pgqueuer at its best; ahead of the Node.js peers at their documented defaults.
    thresholds = {peers.PGQUEUER: 2.0, peers.PROCRASTINATE: 1.0}
    for peer, rate in best.items():
        if peer in thresholds:
            threshold = thresholds[peer]
            wording = "ahead of" if threshold == 1.0 else f">= {threshold:g}x"
            report.target(
                f"S7: daemon (S1 {store}) {wording} {peer} at its best",
                ours.median / rate,
                threshold,
                at_least=True,
                unit="x",
            )
    for peer in peers.NODE_PEERS:
        if peer in default:
            report.target(
                f"S7: daemon (S1 {store}) ahead of {peer} at its defaults",
                ours.median / default[peer],
                1.0,
                at_least=True,
                unit="x",
            )


SCENARIOS: dict[str, Callable[[Context], Awaitable[None]]] = {
    "one-round": one_round,
    "three-rounds": three_rounds,
    "history": history,
    "memory": memory,
    "latency": latency,
    "peers": peer_jobs,
}
