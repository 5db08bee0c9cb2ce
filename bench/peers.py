"""The peers, on the same PostgreSQL in the same run, with no-op jobs: pgqueuer and procrastinate
(Python, in this process) and Graphile Worker and pg-boss (Node.js, a child process each run).

All are bench-only: the Python ones an extra (`pip install -e .[bench]`), the Node.js ones
`bench/node/package.json` (`npm ci` in `bench/node`); `make bench` installs both. `available()`
says why a peer cannot run here instead of failing the whole benchmark. Each run gets a database
of its own; the jobs are enqueued in bulk before the clock starts, and the worker runs until the
queue is drained. The clock starts when the first job runs (pgqueuer, the Node.js peers) or when
the worker starts (procrastinate), and stops once every completion is written: when the worker
returns (the Python peers) or when the completion statements the peer sent add up to every job
(the Node.js peers, `bench/node/run.js`). Each run also reports the CPU the worker process and its
database's backends used over the clock (`bench/cpu.py`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.cpu import TICKS, CpuUse, CpuWindow
from bench.databases import PostgresBackend

PGQUEUER = "pgqueuer"
PROCRASTINATE = "procrastinate"
GRAPHILE_WORKER = "graphile-worker"
PG_BOSS = "pg-boss"
PYTHON_PEERS = (PGQUEUER, PROCRASTINATE)
NODE_PEERS = (GRAPHILE_WORKER, PG_BOSS)

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE_RUNNER = NODE_DIR / "run.js"
#: The oldest Node.js the pinned versions support (their `engines`); newer majors of both need 22.
NODE_MAJOR = 20
#: A Node.js run that takes longer than this has hung (the slowest, 50,000 jobs one at a time, takes
#: a minute or two here).
NODE_TIMEOUT = 1800.0


def available(peer: str) -> str | None:
    """None when `peer` can run, else why not."""
    if peer in NODE_PEERS:
        return _node_available(peer)
    if importlib.util.find_spec(peer) is None:
        return f"{peer} is not installed (bench-only extra: `pip install -e .[bench]`, done by `make bench`)"
    return None


def version(peer: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    if peer in NODE_PEERS:
        try:
            return str(json.loads((NODE_DIR / "node_modules" / peer / "package.json").read_text())["version"])
        except (OSError, ValueError, KeyError):
            return "not installed"
    try:
        return package_version(peer)
    except PackageNotFoundError:
        return "not installed"


def node_binary() -> str | None:
    """The machine's Node.js: BENCH_NODE, else `node` on the PATH."""
    return os.environ.get("BENCH_NODE") or shutil.which("node")


def node_version() -> str | None:
    binary = node_binary()
    if binary is None:
        return None
    try:
        return subprocess.run(
            [binary, "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _node_available(peer: str) -> str | None:
    found = node_version()
    if found is None:
        return f"{peer}: no Node.js here (`node` on the PATH, or BENCH_NODE)"
    major = re.match(r"v(\d+)", found)
    if major is None or int(major.group(1)) < NODE_MAJOR:
        return f"{peer}: needs Node.js {NODE_MAJOR} or newer, found {found}"
    if not (NODE_DIR / "node_modules" / peer / "package.json").is_file():
        return f"{peer} is not installed (`npm ci` in bench/node, done by `make bench`)"
    return None


@dataclass(frozen=True, slots=True)
class PeerRun:
    jobs: int
    seconds: float
    #: CPU over the clock: the worker process and its database's backends.
    cpu: CpuUse | None = None


async def pgqueuer_run(backend: PostgresBackend, name: str, jobs: int, batch_size: int) -> PeerRun:
    """pgqueuer's QueueManager in drain mode, one consumer, `batch_size` jobs per dequeue."""
    from pgqueuer import QueueManager
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.models import Job
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    logging.getLogger("pgqueuer").setLevel(logging.WARNING)
    await backend.create(name, migrate=False)
    setup = await asyncpg.connect(**backend.connect_kwargs(name))
    try:
        queries = Queries(AsyncpgDriver(setup))
        await queries.install()
        for start in range(0, jobs, 10_000):
            count = min(10_000, jobs - start)
            await queries.enqueue(["noop"] * count, [None] * count, [0] * count)
    finally:
        await setup.close()

    connection = await asyncpg.connect(**backend.connect_kwargs(name))
    first: list[float] = []
    ran = 0
    cpu = CpuWindow(backend.database(name))
    try:
        manager = QueueManager(Queries(AsyncpgDriver(connection)))

        @manager.entrypoint("noop")
        async def noop(job: Job) -> None:
            nonlocal ran
            if not first:
                first.append(time.perf_counter())
                cpu.start()
            ran += 1

        await manager.run(batch_size=batch_size, mode=QueueExecutionMode.drain)
        ended = time.perf_counter()
        cpu.mark()
        used = cpu.finish()
    finally:
        await connection.close()
    if ran < jobs:
        raise RuntimeError(f"pgqueuer ran {ran} of {jobs} jobs")
    return PeerRun(jobs, ended - first[0], used)


async def procrastinate_run(backend: PostgresBackend, name: str, jobs: int, concurrency: int) -> PeerRun:
    """procrastinate's worker (`wait=False`: it returns once the queue is empty), LISTEN/NOTIFY on."""
    import procrastinate

    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    await backend.create(name, migrate=False)
    ran = 0
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo=backend.libpq_dsn(name), min_size=1, max_size=max(4, concurrency + 2)
        )
    )

    @app.task(name="noop")
    async def noop() -> None:
        nonlocal ran
        ran += 1

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        arguments: list[dict[str, Any]] = [{} for _ in range(jobs)]
        for start in range(0, jobs, 5_000):
            await noop.batch_defer_async(*arguments[start : start + 5_000])
        cpu = CpuWindow(backend.database(name))
        cpu.start()
        started = time.perf_counter()
        await app.run_worker_async(
            concurrency=concurrency, wait=False, install_signal_handlers=False, listen_notify=True
        )
        ended = time.perf_counter()
        cpu.mark()
        used = cpu.finish()
    if ran < jobs:
        raise RuntimeError(f"procrastinate ran {ran} of {jobs} jobs")
    return PeerRun(jobs, ended - started, used)


async def node_run(
    backend: PostgresBackend, name: str, peer: str, jobs: int, settings: dict[str, Any]
) -> PeerRun:
    """One run of a Node.js peer (`bench/node/run.js`) on a fresh database; `settings` as it takes them."""
    binary = node_binary()
    if binary is None:
        raise RuntimeError("no Node.js")
    await backend.create(name, migrate=False)
    config = {
        "peer": peer,
        "connectionString": backend.libpq_dsn(name),
        "database": backend.database(name),
        "jobs": jobs,
        "clockTicks": TICKS,
        "settings": settings,
    }
    process = await asyncio.create_subprocess_exec(
        binary,
        str(NODE_RUNNER),
        json.dumps(config),
        cwd=NODE_DIR,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), NODE_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"{peer} did not finish {jobs} jobs in {NODE_TIMEOUT:.0f}s") from None
    if process.returncode != 0:
        raise RuntimeError(f"{peer} failed ({process.returncode}): {err.decode(errors='replace')[-2000:]}")
    outcome = json.loads(out.decode().strip().splitlines()[-1])
    if outcome["jobs"] != jobs or outcome["ran"] < jobs:
        raise RuntimeError(f"{peer} ran {outcome['ran']} of {jobs} jobs")
    cpu = outcome["cpu"]
    return PeerRun(
        jobs, float(outcome["seconds"]), CpuUse(cpu["worker"], cpu["backends"], cpu["backendCount"])
    )
