"""Where the daemon's round spends its time: pyinstrument over the in-process daemon.

    python -m bench.profile                       # 20,000 echo executions on SQLite
    python -m bench.profile --store postgresql --workload three --count 10000

The profile covers the timed part only (first claim to last commit) and is printed as text. It is
the tool for closing the gap to the raw-SQL limit; pyinstrument comes with the bench extra.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from pathlib import Path

from bench import daemon
from bench.cli import DEFAULT_POSTGRES
from bench.databases import (
    Backend,
    PostgresBackend,
    SqliteBackend,
    echo_submissions,
    submit,
    three_round_submissions,
)


async def profile(store: str, workload: str, count: int, batch_size: int, interval: float) -> str:
    from pyinstrument import Profiler

    workdir = Path(tempfile.mkdtemp(prefix="executor-profile-"))
    plugins_dir = daemon.plugins_directory()
    backend: Backend = SqliteBackend(workdir) if store == "sqlite" else PostgresBackend(DEFAULT_POSTGRES)
    try:
        await backend.create("profile")
        subs = echo_submissions(count) if workload == "echo" else three_round_submissions(count)
        await submit(backend.url("profile"), subs)
        profiler = Profiler(interval=interval, async_mode="disabled")
        profiler.start()
        result = await daemon.drive(backend.url("profile"), count, plugins_dir, batch_size)
        profiler.stop()
        rate = result.executions / result.seconds
        header = f"{count:,} {workload} executions on {backend.label}: {rate:,.0f} executions/s (profiled)\n"
        return header + profiler.output_text(unicode=False, color=False, show_all=False)
    finally:
        await backend.drop("profile")
        await backend.close()
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(plugins_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--workload", choices=("echo", "three"), default="echo")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--interval", type=float, default=0.001, help="sampling interval, seconds")
    args = parser.parse_args()
    print(asyncio.run(profile(args.store, args.workload, args.count, args.batch_size, args.interval)))


if __name__ == "__main__":
    main()
