"""Throughput with 1, 2 and 4 replica processes on PostgreSQL, and orphan pickup after SIGKILL.

    .venv/bin/python bench/replicas.py [--postgres-url URL] [--executions N]

Each measurement gets a fresh database. Throughput: N executions submitted at once (one-round
`echo`, or three-round `fence` with no pause between rounds), timed from submission until the
last is finalized. Orphan pickup: a replica is SIGKILLed in the middle of a round it would hold
for a minute; the time until another replica has claimed all of its executions is what a dead
replica costs (bounded by EXECUTOR_LEASE_TTL, here 5 s). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from executor.store import Store, Submission  # noqa: E402

FENCE = ROOT / "tests" / "replica_plugins" / "fence.py"
ECHO = ROOT / "plugins" / "echo.py"


def plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def admin(url: str, statement: str) -> None:
    conn = await asyncpg.connect(plain(url))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def until(url: str, sql: str, done: Any, interval: float = 0.02) -> None:
    """Poll `sql` until `done(value)`: the figures are seconds, so a few ms of polling is noise."""
    while not done(await scalar(url, sql)):  # noqa: ASYNC110 - another process changes it
        await asyncio.sleep(interval)


async def scalar(url: str, sql: str) -> Any:
    conn = await asyncpg.connect(plain(url))
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


class Run:
    def __init__(self, base_url: str, workdir: Path, **env: str) -> None:
        self.name = f"executor_bench_{uuid.uuid4().hex[:10]}"
        self.base_url = base_url
        self.url = make_url(base_url).set(database=self.name).render_as_string(hide_password=False)
        self.workdir = workdir
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    async def __aenter__(self) -> Run:
        await admin(self.base_url, f'CREATE DATABASE "{self.name}"')
        from executor.store.migrate import upgrade

        store = Store.from_url(self.url)
        await upgrade(store.engine)
        await store.close()
        return self

    async def __aexit__(self, *_: object) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            proc.wait()
        await admin(self.base_url, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    async def start(self, replica_id: str) -> None:
        log = self.workdir / f"{self.name}-{replica_id}.log"
        env = {
            **os.environ,
            "EXECUTOR_DATABASE_URL": self.url,
            "EXECUTOR_PLUGINS_DIR": str(self.workdir / "plugins"),
            "EXECUTOR_PLUGIN_ENTRY_POINTS": "false",
            "EXECUTOR_REPLICA_ID": replica_id,
            "EXECUTOR_LOG_FORMAT": "json",
            "EXECUTOR_LOG_LEVEL": "warning",
            "EXECUTOR_HTTP_ADDR": "",
            "EXECUTOR_MIGRATE_ON_START": "false",
            "FENCE_LOG_DIR": str(self.workdir / "fence"),
            **self.env,
        }
        with log.open("ab") as out:
            self.procs[replica_id] = subprocess.Popen(  # noqa: ASYNC220 - a quick fork, not a wait
                [sys.executable, "-m", "executor", "run"], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        # Started: its heartbeat row is there.
        await until(self.url, f"SELECT count(*) FROM replicas WHERE id = '{replica_id}'", bool)

    async def submit(self, items: list[tuple[str, dict[str, Any]]]) -> list[str]:
        store = Store.from_url(self.url)
        try:
            return await store.submit_many([Submission(t, i) for t, i in items], now=time.time())
        finally:
            await store.close()

    async def wait_finalized(self, count: int) -> None:
        await until(self.url, "SELECT count(*) FROM executions WHERE finalized", lambda n: n >= count)


async def throughput(base_url: str, workdir: Path, replicas: int, kind: str, n: int) -> float:
    item = ("echo", {"x": 1}) if kind == "one-round" else ("fence", {"rounds": 3, "interval": 0})
    async with Run(base_url, workdir, EXECUTOR_POLL_INTERVAL="200ms") as run:
        for i in range(replicas):
            await run.start(f"b{i}")
        started = time.perf_counter()
        await run.submit([item] * n)
        await run.wait_finalized(n)
        return n / (time.perf_counter() - started)


async def orphan_pickup(base_url: str, workdir: Path, n: int = 50) -> float:
    async with Run(base_url, workdir, EXECUTOR_LEASE_TTL="5s", EXECUTOR_HANDLE_TIMEOUT="4s") as run:
        await run.start("victim")
        ids = await run.submit([("fence", {"rounds": 2, "hold": "3s", "hold_on": "victim"})] * n)
        in_list = ",".join(f"'{i}'" for i in ids)
        await until(run.url, "SELECT count(*) FROM executions WHERE lease_owner = 'victim'", lambda c: c >= n)
        await run.start("survivor")
        run.procs["victim"].send_signal(signal.SIGKILL)
        killed = time.perf_counter()
        run.procs["victim"].wait()
        taken = (
            f"SELECT count(*) FROM executions WHERE id IN ({in_list}) "
            "AND (lease_owner = 'survivor' OR finalized)"
        )
        await until(run.url, taken, lambda c: c >= n, interval=0.01)
        return time.perf_counter() - killed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--executions", type=int, default=2000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="executor-bench-replicas-"))
    (workdir / "plugins").mkdir()
    (workdir / "fence").mkdir()
    shutil.copy(ECHO, workdir / "plugins" / "echo.py")
    shutil.copy(FENCE, workdir / "plugins" / "fence.py")
    try:
        rows = []
        for kind in ("one-round", "three-round"):
            rates = [
                await throughput(args.postgres_url, workdir, r, kind, args.executions) for r in (1, 2, 4)
            ]
            rows.append((kind, rates))
        pickup = await orphan_pickup(args.postgres_url, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"PostgreSQL, {os.cpu_count()} cores, {args.executions} executions per run, executions/s:\n")
    print("| task | 1 replica | 2 replicas | 4 replicas |")
    print("|---|---|---|---|")
    for kind, rates in rows:
        print(f"| {kind} | " + " | ".join(f"{rate:,.0f}" for rate in rates) + " |")
    print(
        f"\nOrphans of a SIGKILLed replica all claimed by another after {pickup:.2f} s "
        "(EXECUTOR_LEASE_TTL=5s)"
    )
    print(json.dumps({"throughput": dict(rows), "orphan_pickup_seconds": round(pickup, 3)}))


if __name__ == "__main__":
    asyncio.run(main())
