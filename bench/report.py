"""The report as a terminal table and as BENCHMARKS.md: figures, targets, machine, versions, command."""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench.harness import FULL, Report, Sizes, fmt

PACKAGES = (
    "executor",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "pydantic",
    "anyio",
    "structlog",
    "pgqueuer",
    "procrastinate",
    "psycopg",
)


def machine_facts(repo: Path) -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = f"{line.split('=', 1)[1].strip(chr(34))}, Linux {platform.release()}"
    except OSError:
        pass
    import sqlite3

    return {
        "CPU": f"{cpu}, {os.cpu_count()} cores",
        "memory": memory,
        "OS": os_name,
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "SQLite library": sqlite3.sqlite_version,
        "executor commit": _git(repo, "rev-parse", "--short", "HEAD")
        + (" (with uncommitted changes)" if _git(repo, "status", "--porcelain") else ""),
    }


def package_versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    from bench import peers

    for name in peers.NODE_PEERS:
        found[name] = peers.version(name)
    found["Node.js"] = peers.node_version() or "not found"
    return found


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _git(repo: Path, *args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def terminal_table(report: Report) -> str:
    lines = []
    scenario = None
    for m in report.measurements:
        if m.scenario != scenario:
            scenario = m.scenario
            lines.append("")
            lines.append(scenario)
        spread = f"[{fmt(m.low, m.unit)} .. {fmt(m.high, m.unit)}]"
        median = fmt(m.median, m.unit)
        lines.append(f"  {m.store:<10} {m.subject:<62} {m.metric:<28} {median:>10} {spread:<22} {m.unit}")
    if report.ratios:
        lines += ["", "Ratios (median / median, same run)"]
        lines += [f"  {r.label:<110} {fmt(r.value, 'ratio'):>6}" for r in report.ratios]
    if report.targets:
        lines += ["", "Targets"]
        for t in report.targets:
            sign = ">=" if t.at_least else "<"
            verdict = "met" if t.met else "MISSED"
            unit = t.unit or "ratio"
            lines.append(
                f"  {t.label:<72} {fmt(t.figure, unit):>9} {sign} {fmt(t.threshold, unit):<6} {verdict}"
            )
    if report.skipped:
        lines += ["", "Skipped"] + [f"  {reason}" for reason in report.skipped]
    return "\n".join(lines).lstrip("\n")


def markdown(
    report: Report,
    *,
    sizes: Sizes,
    command: str,
    started: datetime,
    seconds: float,
    machine: dict[str, str],
    postgres: dict[str, str] | None,
    load_before: str,
    load_after: str,
) -> str:
    out: list[str] = []
    add = out.append
    add("# Benchmarks")
    add("")
    add(
        f"Rewritten by `make bench` on {started.astimezone(UTC):%Y-%m-%d %H:%M} UTC "
        f"(this time `{command}`, {seconds / 60:.1f} minutes). Each figure is the median of {sizes.runs} "
        "runs, with the min and max; each ratio divides two medians measured in this same run, "
        "with runs of the subjects interleaved. Absolute figures drift between machines; the "
        "ratios are the figures that matter."
    )
    out += _results(report)
    if report.skipped:
        add("")
        add("## Not run here")
        add("")
        out.extend(f"- {reason}" for reason in report.skipped)
    add("")
    add("## Sizes")
    add("")
    add("| size | this run | full size (`make bench`) |")
    add("|---|---:|---:|")
    for field in dataclasses.fields(Sizes):
        ours, full = getattr(sizes, field.name), getattr(FULL, field.name)
        mark = "" if ours == full else " (changed)"
        add(f"| {field.name} | {_size(ours)}{mark} | {_size(full)} |")
    add("")
    add("## Machine and versions")
    add("")
    for key, value in machine.items():
        add(f"- {key}: {value}")
    if postgres:
        settings = ", ".join(f"{k} {v}" for k, v in postgres.items() if k != "version")
        add(f"- PostgreSQL {postgres.get('version', '?')} on 127.0.0.1 ({settings})")
    add("- packages: " + ", ".join(f"{name} {ver}" for name, ver in package_versions().items()))
    add(f"- load average (1, 5, 15 min) before: {load_before}; after: {load_after}")
    add("")
    add("## Method")
    add("")
    out.extend(f"- {line}" for line in METHOD)
    out.extend(f"- {line}" for line in report.notes)
    add("")
    return "\n".join(out)


def _size(value: object) -> str:
    if isinstance(value, int | float):
        return f"{value:,}"
    return str(value) or "default"


def _results(report: Report) -> list[str]:
    """Targets, ratios and figures, as Markdown tables."""
    out: list[str] = []
    add = out.append
    add("")
    add("## Targets")
    add("")
    add("| target | figure | threshold | met |")
    add("|---|---:|---:|---|")
    for t in report.targets:
        unit = t.unit or "ratio"
        sign = ">=" if t.at_least else "<"
        suffix = f" {t.unit}" if t.unit and t.unit != "x" else ""
        add(
            f"| {t.label} | {fmt(t.figure, unit)}{suffix} | {sign} {fmt(t.threshold, unit)}{suffix} | "
            f"{'yes' if t.met else '**no**'} |"
        )
    add("")
    add("## Ratios")
    add("")
    add("| ratio (median / median) | value |")
    add("|---|---:|")
    for r in report.ratios:
        add(f"| {r.label} | {fmt(r.value, 'ratio')} |")
    add("")
    add("## Figures")
    scenario = None
    for m in report.measurements:
        if m.scenario != scenario:
            scenario = m.scenario
            add("")
            add(f"### {scenario}")
            add("")
            add("| store | subject | metric | median | min | max |")
            add("|---|---|---|---:|---:|---:|")
        unit = "" if m.unit == m.metric else f" {m.unit}"
        add(
            f"| {m.store} | {m.subject} | {m.metric}{unit} | {fmt(m.median, m.unit)} | "
            f"{fmt(m.low, m.unit)} | {fmt(m.high, m.unit)} |"
        )
    return out


METHOD = (
    "The daemon is the real loop (`Reconciler.run()`) over the real store, in the benchmark's "
    "process, with default settings (batch 256, max parallelism 256; see Sizes) except "
    "`EXECUTOR_LOG_LEVEL=warning`; plugins load from `EXECUTOR_PLUGINS_DIR` (the project's `plugins/` plus "
    "`bench/plugins/`), and the garbage collector is tuned as `executor run` tunes it once started "
    "(`executor.daemon.tune_gc`). Throughput runs from the start of the first round to the end of the last "
    "(its commit and the recording of `finalize`), every execution checked SUCCESS and finalized.",
    "Scenario 3, the raw-SQL limit, is measured inside scenarios 1 and 2 (`bench/raw.py`): a "
    "bare loop on the same driver and the same schema: the "
    "store's claim statement (partial index, lease, `RETURNING` the whole row), then one transaction "
    "with one batched UPDATE of phase, state and outputs fenced by the lease token and one batched "
    "INSERT of one event per execution (executemany on SQLite; on PostgreSQL one UPDATE ... FROM "
    "unnest and one INSERT ... SELECT FROM unnest, the statements' shape the store uses there). "
    "No plugin, no lifecycle, no SQLAlchemy, no separate "
    "finalize step.",
    "Three-round tasks use `bench/plugins/three_rounds.py`: round 1 writes plugin state, round 2 "
    "reads it and writes it again, round 3 succeeds; each round appends one event. "
    "Execution-rounds/s counts three per execution.",
    "History: finished executions (and two events each) are copies of one execution made through "
    "the real API and loop, inserted with a recursive CTE (SQLite) or `generate_series` "
    "(PostgreSQL), then VACUUM ANALYZE on PostgreSQL. Round latency is the median duration of the "
    "rounds that claimed a full batch.",
    "Memory: `python -m executor run` as a child process over the pending executions (copies of "
    "one submitted execution, made in SQL); peak RSS is the kernel's VmHWM of that process, read "
    "while it works, in decimal MB.",
    "Latency: `python -m executor run` as a child process, idle; the benchmark submits one "
    "`bench-stamp` execution at a time with the Python client from its own process, waits until "
    "it is done, then pauses 30-120 ms. Latency is the time `handle` recorded minus the execution's "
    "`created_at`. p50 and p99 are per run; the table shows their medians over the runs.",
    "Peers: each on a database of its own on the same server, jobs enqueued in bulk before the "
    "clock starts (their counts checked in SQL), one worker process draining the queue, checked "
    "drained in SQL afterwards (a run that leaves a job behind fails). pgqueuer and procrastinate "
    "run in the benchmark's process; Graphile Worker and pg-boss (npm, pinned in "
    "`bench/node/package.json`, the newest releases that support the machine's Node.js 20; `make "
    "bench` runs `npm ci` there) run as a Node.js child process per run (`bench/node/run.js`). The clock "
    "starts at the first job run (procrastinate: when its worker starts; set-up is not counted) and "
    "stops when the last completion is written: when the worker returns (pgqueuer, procrastinate), or "
    "when the rows the peer's completion statements deleted or updated, watched as they return, add "
    "up to every job (the Node.js peers). pgqueuer, Graphile Worker and pg-boss's tuned setting run "
    "as many jobs as the daemon runs executions in scenario 1; procrastinate runs "
    "`procrastinate_jobs` (a few hundred jobs/s with no batching: 50,000 jobs x 3 runs x 2 settings "
    "would take a quarter of an hour alone), and pg-boss at its defaults `pgboss_default_jobs` (one "
    "job per 2 s poll: 0.5 jobs/s at any count, a little above it with so few since its first fetch "
    "does not wait).",
    "Peers' settings. Defaults are each one's documented defaults. Best: pgqueuer at the daemon's "
    "batch (256 jobs per dequeue); procrastinate at concurrency 10; Graphile Worker as its "
    "performance page configures it (24 concurrent jobs, a pool of 25, `localQueue.size` 500, "
    "`completeJobBatchDelay` and `failJobBatchDelay` 0), and at 24 concurrent jobs without the local "
    "queue and batching, to separate the two; pg-boss 10, which has no team size any more (each "
    "`work()` call is one polling loop fetching `batchSize` jobs at most once per "
    "`pollingIntervalSeconds`, 0.5 s at the least), with 8 loops of the daemon's batch, 256, polling "
    "every 0.5 s: the fastest of 4, 8, 16 and 32 loops here (more loops contend for the same rows "
    "and slow down; a bigger batch buys any figure, since a loop's rate is its batch per interval).",
    "What each promises per job. The daemon: a round's outcomes commit in one transaction, so an "
    "acknowledgement is durable per round (up to 256 executions), never before its commit; a crash "
    "before the commit runs the round again once its leases expire (`EXECUTOR_LEASE_TTL`, 120 s). "
    "pgqueuer: completions are buffered and written in batches after the jobs ran (at the batch size "
    "or every 0.1 s); a crash loses the unwritten acknowledgements and the jobs are picked again once "
    "their heartbeat is stale (30 s by default). "
    "procrastinate: one transaction per job to fetch it and one to finish it; nothing is lost, a "
    "crash leaves its running jobs stalled until they are retried. Graphile Worker at its defaults: "
    "one statement per job fetches and locks it and one deletes it when done, a durable "
    "acknowledgement per job; with the local queue it locks up to 500 jobs ahead, and with batched "
    "completions it deletes them in batches after they ran; a crash (not a graceful shutdown, which "
    "hands back the local queue and flushes the batch) leaves those jobs locked until their lock "
    "expires after 4 hours, then runs them again. pg-boss: one statement per fetch marks `batchSize` "
    "jobs active and one per fetch marks them completed after the handler returned (it does not wait "
    "for that write before fetching again); a crash leaves the fetched jobs active until they expire "
    "(15 minutes by default) and are retried (2 retries by default).",
    "CPU per job: for every subject of scenario 7 and the daemon of scenarios 1 and 2 on PostgreSQL, "
    "the user and system time (`/proc/<pid>/stat`) of the worker process (the benchmark's own "
    "process for the daemon and the Python peers, the Node.js process for the others; all threads) "
    "plus that of the PostgreSQL backends connected to the run's database (found by their process "
    "titles; backends that connect mid-run are counted whole), between the two ends of the clock "
    "(`bench/cpu.py`, and `bench/node/run.js` for the Node.js peers). The server's shared processes "
    "(WAL writer, checkpointer, autovacuum) are counted for nobody. Per core used is jobs divided by "
    "those CPU seconds: throughput a machine of any size gets per core it spends, the figure to "
    "compare with other machines; cores used is those seconds over the clock's. Without the server's "
    "processes in /proc (a remote server), these figures are not reported.",
    "This machine is shared with other work (see the load averages): figures from a quiet machine "
    "will be higher, ratios should hold.",
    "Where the daemon's time goes: `python -m bench.profile [--store postgresql] [--workload three]` "
    "runs pyinstrument (bench extra) over the in-process daemon and prints the call tree.",
)
