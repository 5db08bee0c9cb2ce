"""The long run (`make bench-long`, not part of `make bench`): a constant stream for ten minutes on
PostgreSQL with autovacuum off on the run's own tables, pickup latency in the last minute against
the first (issue 21).

Issue 21 saw pickup p50 go from 9 ms to 28-61 ms within three minutes at a flat 200/s: prepared
statements had switched to generic plans costed on a nearly empty table, and nothing re-planned them
(autovacuum, hence auto-analyse, off). Autovacuum is turned off here per table (`ALTER TABLE ... SET
(autovacuum_enabled = off)` on the run's own database, never ALTER SYSTEM), so the run shows what
the daemon does on a table whose statistics never catch up: the target is a last minute within
1.2x of the first. One run (it is long); `--size long_seconds=...` shortens it.
"""

from __future__ import annotations

from bench import daemon, paced
from bench.databases import PostgresBackend
from bench.harness import percentile
from bench.scenarios import DAEMON, Context

LONG = "Long run: pickup at a constant rate, autovacuum off"
#: The tables whose autovacuum the run turns off (every table the stream writes).
TABLES = ("executions", "events")


async def long_run(ctx: Context) -> None:
    sizes = ctx.sizes
    backend = ctx.postgres
    if backend is None:
        ctx.report.skipped.append(f"{LONG}: needs PostgreSQL")
        return
    rate, seconds, window = sizes.latency_rate, sizes.long_seconds, sizes.long_window_seconds
    scenario = f"{LONG}, {rate:g}/s for {seconds:g}s, first and last {window:g}s"
    store = backend.label
    await backend.create("long")
    await autovacuum_off(backend, "long")
    log = ctx.workdir / "daemon-long.log"
    process = daemon.DaemonProcess(
        backend.url("long"), ctx.plugins_dir, sizes.batch_size, log, sizes.daemon_poll_interval
    )
    try:
        run = await paced.paced_samples(backend.url("long"), process, rate=rate, seconds=seconds)
    finally:
        process.stop()
        await backend.drop("long")
    span = run.samples[-1].offset
    ends = {
        "first": paced.window(run.samples, 0.0, window),
        "last": paced.window(run.samples, span - window, span + 1),
    }
    report = ctx.report
    for end, latencies in ends.items():
        for metric, fraction in (("p50", 0.5), ("p99", 0.99)):
            report.measurement(
                scenario, store, f"{DAEMON}, {end} window", metric, "ms", higher_is_better=False
            ).values.append(1000 * percentile(latencies, fraction))
    submitter = "submitter (Python client)"
    report.measurement(scenario, store, submitter, "offered", "submissions/s").values.append(run.offered_rate)
    report.measurement(scenario, store, submitter, "submit p50", "ms", higher_is_better=False).values.append(
        1000 * percentile(run.submit_seconds, 0.5)
    )
    for metric in ("p50", "p99"):
        last = report.measurement(scenario, store, f"{DAEMON}, last window", metric, "ms")
        first = report.measurement(scenario, store, f"{DAEMON}, first window", metric, "ms")
        ratio = report.ratio(f"{scenario}, {store}: {metric} last / first", last, first)
        report.target(
            f"Long run {store}: pickup {metric} last / first <= 1.2",
            ratio.value,
            1.2,
            at_least=False,
            unit="x",
        )
    ctx.progress(
        f"{store}: long run: first {window:g}s p50 {1000 * percentile(ends['first'], 0.5):.1f} ms, "
        f"last {window:g}s p50 {1000 * percentile(ends['last'], 0.5):.1f} ms ({len(run.samples)} samples, "
        f"{run.offered_rate:.0f}/s offered)"
    )


async def autovacuum_off(backend: PostgresBackend, name: str) -> None:
    """Autovacuum (and so auto-analyse) off on this run's tables only: a per-table storage
    parameter of the run's own database, which overrides what migration 0006 set."""
    statements = [
        f"ALTER TABLE {table} SET (autovacuum_enabled = off, toast.autovacuum_enabled = off)"
        for table in TABLES
    ]
    await backend.execute_in(name, *statements)
