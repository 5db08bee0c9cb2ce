"""The peers, on the same PostgreSQL in the same run: pgqueuer and procrastinate with no-op jobs.

Both are bench-only extras (`pip install -e .[bench]`, which `make bench` does); `available()`
says why a peer cannot run here instead of failing the whole benchmark. Each run gets a database
of its own; the jobs are enqueued in bulk before the clock starts, and the worker runs until the
queue is drained. The clock starts when the first job runs (pgqueuer) or when the worker starts
(procrastinate), and stops when the worker returns, every completion written.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench.databases import PostgresBackend

PGQUEUER = "pgqueuer"
PROCRASTINATE = "procrastinate"


def available(peer: str) -> str | None:
    """None when `peer` can run, else why not."""
    if importlib.util.find_spec(peer) is None:
        return f"{peer} is not installed (bench-only extra: `pip install -e .[bench]`, done by `make bench`)"
    return None


def version(peer: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version(peer)
    except PackageNotFoundError:
        return "not installed"


@dataclass(frozen=True, slots=True)
class PeerRun:
    jobs: int
    seconds: float


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
    try:
        manager = QueueManager(Queries(AsyncpgDriver(connection)))

        @manager.entrypoint("noop")
        async def noop(job: Job) -> None:
            nonlocal ran
            if not first:
                first.append(time.perf_counter())
            ran += 1

        await manager.run(batch_size=batch_size, mode=QueueExecutionMode.drain)
        ended = time.perf_counter()
    finally:
        await connection.close()
    if ran < jobs:
        raise RuntimeError(f"pgqueuer ran {ran} of {jobs} jobs")
    return PeerRun(jobs, ended - first[0])


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
        started = time.perf_counter()
        await app.run_worker_async(
            concurrency=concurrency, wait=False, install_signal_handlers=False, listen_notify=True
        )
        ended = time.perf_counter()
    if ran < jobs:
        raise RuntimeError(f"procrastinate ran {ran} of {jobs} jobs")
    return PeerRun(jobs, ended - started)
