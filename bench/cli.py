"""`python -m bench`: run the scenarios, print the table, and (with --output) rewrite BENCHMARKS.md.

    python -m bench --output BENCHMARKS.md          # what `make bench` runs: everything, full size
    python -m bench --smoke                         # every scenario once, tiny (seconds)
    python -m bench --only one-round,latency        # some scenarios
    python -m bench --size one_round=20000 --runs 5 # other sizes (BENCHMARKS.md marks them)

PostgreSQL: --postgres-url (an admin URL; the benchmark creates and drops its own databases), else
BENCH_POSTGRES_URL or EXECUTOR_TEST_POSTGRES_URL, else postgres@127.0.0.1:5432/test when it answers;
--no-postgres runs SQLite alone.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench import report as reporting
from bench.catalog import ON_REQUEST, SCENARIOS
from bench.daemon import REPO_ROOT, plugins_directory
from bench.databases import PostgresBackend, SqliteBackend
from bench.harness import FULL, SMOKE, Progress, Report, Sizes
from bench.scenarios import Context

DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so that SIGTERM, like Ctrl-C, still drops the benchmark's databases


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    sizes = SMOKE if args.smoke else FULL
    if args.runs is not None:
        sizes = sizes.scaled(runs=args.runs)
    for item in args.size:
        key, _, value = item.partition("=")
        kinds = {f.name: f.type for f in dataclasses.fields(Sizes)}
        if key not in kinds or not value:
            print(
                f"bench: --size {item!r}: expected NAME=VALUE, NAME one of {', '.join(kinds)}",
                file=sys.stderr,
            )
            return 2
        sizes = sizes.scaled(**{key: float(value) if kinds[key] in ("float", float) else int(value)})
    chosen = list(SCENARIOS) if not args.only else [name.strip() for name in args.only.split(",")]
    unknown = [name for name in chosen if name not in SCENARIOS and name not in ON_REQUEST]
    if unknown:
        print(
            f"bench: unknown scenario {', '.join(unknown)}; known: {', '.join([*SCENARIOS, *ON_REQUEST])}",
            file=sys.stderr,
        )
        return 2
    postgres_url = None if args.no_postgres else _postgres_url(args.postgres_url)
    command = "python -m bench " + " ".join(
        shlex.quote(a) for a in _without_notes(list(argv) if argv is not None else sys.argv[1:])
    )
    report = asyncio.run(
        run(sizes, chosen, postgres_url, args.output, command.strip(), quiet=args.quiet, notes=args.note)
    )
    print(reporting.terminal_table(report))
    return 0


async def run(
    sizes: Sizes,
    chosen: Sequence[str],
    postgres_url: str | None,
    output: Path | None,
    command: str,
    *,
    quiet: bool = False,
    workdir: Path | None = None,
    notes: Sequence[str] = (),
) -> Report:
    started_at, started = datetime.now(UTC), time.perf_counter()
    load_before = reporting.load_average()
    own_workdir = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="executor-bench-"))
    plugins_dir = plugins_directory()
    postgres = PostgresBackend(postgres_url) if postgres_url else None
    ctx = Context(
        sizes=sizes,
        sqlite=SqliteBackend(workdir / "sqlite"),
        postgres=postgres,
        plugins_dir=plugins_dir,
        workdir=workdir,
        progress=Progress(quiet),
    )
    ctx.report.notes.extend(notes)
    if postgres is None:
        ctx.report.skipped.append("PostgreSQL scenarios: no PostgreSQL server (see --postgres-url)")
    facts = None
    try:
        if postgres is not None:
            facts = await postgres.server_facts()
        for name in chosen:
            ctx.progress(f"scenario {name}")
            await {**SCENARIOS, **ON_REQUEST}[name](ctx)
    finally:
        if postgres is not None:
            await postgres.close()
        shutil.rmtree(plugins_dir, ignore_errors=True)
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if output is not None:
        text = reporting.markdown(
            ctx.report,
            sizes=sizes,
            command=command,
            started=started_at,
            seconds=time.perf_counter() - started,
            machine=reporting.machine_facts(REPO_ROOT),
            postgres=facts,
            load_before=load_before,
            load_after=reporting.load_average(),
        )
        await asyncio.to_thread(output.write_text, text)
        ctx.progress(f"wrote {output}")
    return ctx.report


def _without_notes(args: list[str]) -> list[str]:
    """The command line as the report shows it: notes appear in its Method section instead."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--note":
            skip = True
        elif not arg.startswith("--note="):
            kept.append(arg)
    return kept


def _postgres_url(explicit: str | None) -> str | None:
    url = explicit or os.environ.get("BENCH_POSTGRES_URL") or os.environ.get("EXECUTOR_TEST_POSTGRES_URL")
    if url:
        return url
    try:
        socket.create_connection(("127.0.0.1", 5432), 1).close()
    except OSError:
        return None
    return DEFAULT_POSTGRES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="every scenario once at a tiny size")
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help=f"comma-separated: {', '.join(SCENARIOS)} (and, only when named, {', '.join(ON_REQUEST)})",
    )
    parser.add_argument("--output", type=Path, metavar="PATH", help="write the report there (BENCHMARKS.md)")
    parser.add_argument("--postgres-url", metavar="URL", help="admin URL of the PostgreSQL to use")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--runs", type=int, help="runs per figure (default 3; smoke 1)")
    parser.add_argument("--size", action="append", default=[], metavar="NAME=VALUE", help="override one size")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument(
        "--note", action="append", default=[], help="a line for the Method section of the report"
    )
    return parser
