"""Scenario 10: many schedules due in the same second, fired by several scheduler processes.

Issue 13's benchmark: 10,000 one-minute schedules on PostgreSQL, all with their first slot in the
same second, and `schedule_replicas` scheduler processes racing for them as replicas would (each
its own interpreter, so they share the machine's cores, not one event loop). Reported per run:

- the slot-to-submission lag (the key's `fired_at`, the replica's clock when its round began,
  minus the slot), p50 and p99, against the target p99 < 1 s;
- the cost of a scheduler round when nothing is due, and the plan of its due query, which must
  use the next-slot index (no query scans the schedules).

Runs on PostgreSQL only: SQLite serializes every writer, so replicas racing there measure its lock.

    python -m bench --only schedules
    python -m bench.schedules --worker URL     # one scheduler process (what the scenario starts)
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
import uuid

import anyio
from sqlalchemy import insert, text

from bench.databases import PostgresBackend
from bench.scenarios import Context
from executor.app.parts import client_for
from executor.plugin.loader import PACKAGED_BUILTINS, collect
from executor.plugin.registry import PluginRegistry
from executor.schedules import Scheduler, ScheduleSpec
from executor.settings import Settings
from executor.store import Store
from executor.store.schedule_tables import schedule_slots, schedules

S10 = "10. Schedules: all due in one second"
DAEMON = "daemon schedulers"
#: How far ahead of the database's clock the slot is set once every worker is ready: more than a
#: worker's longest idle sleep (1 s), so each one wakes for the slot itself, not up to 1 s late.
LEAD_SECONDS = 2.5
#: How long a run may take before it counts as failed (every slot must fire well before).
RUN_DEADLINE = 120.0
#: The tasks reading the workers' output, kept referenced until they end.
_DRAINS: set[asyncio.Task[bytes]] = set()
DUE_QUERY = (
    "SELECT * FROM schedules WHERE next_slot_at <= :now "
    "ORDER BY next_slot_at LIMIT 500 FOR UPDATE SKIP LOCKED"
)


def _scheduler(url: str) -> tuple[Store, Scheduler]:
    registry = PluginRegistry()
    collect(registry, PACKAGED_BUILTINS, use_entry_points=False)
    store = Store.from_url(url)
    return store, Scheduler(client_for(Settings(), store, registry.resolver({})))


async def worker(url: str) -> None:
    """One scheduler, as a replica runs it, until its parent closes stdin."""
    store, scheduler = _scheduler(url)
    try:
        await store.database_now()  # connected before it says so
        print("ready", flush=True)
        async with anyio.create_task_group() as group:
            group.start_soon(scheduler.run)
            await anyio.to_thread.run_sync(sys.stdin.read)
            group.cancel_scope.cancel()
    finally:
        await store.close()


async def schedules_scenario(ctx: Context) -> None:
    backend = ctx.postgres
    if backend is None:
        ctx.report.notes.append(f"{S10}: skipped, no PostgreSQL.")
        return
    sizes = ctx.sizes
    scenario = f"{S10}, {sizes.schedules:,} schedules, {sizes.schedule_replicas} scheduler processes"
    store = backend.label
    for number in range(1, sizes.runs + 1):
        lags, idle_ms, plan = await _run(backend, sizes.schedules, sizes.schedule_replicas)
        quantiles = statistics.quantiles(lags, n=100) if len(lags) > 1 else lags * 99
        for metric, value in (("lag p50", quantiles[49]), ("lag p99", quantiles[98])):
            ctx.report.measurement(
                scenario, store, DAEMON, metric, "s", higher_is_better=False
            ).values.append(value)
        ctx.report.measurement(
            scenario, store, DAEMON, "idle round", "ms", higher_is_better=False
        ).values.append(idle_ms)
        ctx.progress(f"{store}: schedules, run {number}/{sizes.runs} done")
    scans = "Seq Scan on schedules" in plan
    ctx.report.notes.append(
        f"{S10}: the due query's plan on {sizes.schedules:,} schedules: "
        + ("a SEQUENTIAL SCAN (target missed)" if scans else "an index scan (no query scans the schedules)")
        + f": `{plan.splitlines()[0].strip() if plan else ''}` ..."
    )
    p99 = ctx.report.measurement(scenario, store, DAEMON, "lag p99", "s", higher_is_better=False)
    ctx.report.target(f"S10 {store}: slot lag p99 < 1 s", p99.median, 1.0, at_least=False, unit="s")


async def _run(backend: PostgresBackend, count: int, replicas: int) -> tuple[list[float], float, str]:
    """One run on a fresh database: the lags of every slot, an idle round's median ms, the plan."""
    name = "schedules_run"
    await backend.create(name)
    url = backend.url(name)
    store, scheduler = _scheduler(url)
    workers: list[asyncio.subprocess.Process] = []
    try:
        now = await store.database_now()
        far = now + 3600.0  # not due until the workers are up; then moved to one shared second
        rows = []
        for n in range(count):
            spec = ScheduleSpec(name=f"s{n:05d}", task_type="echo", every=60.0, start=far, inputs={"n": n})
            row = {
                "id": str(uuid.uuid4()),
                "name": spec.name,
                "spec": json.dumps(spec.model_dump(mode="json")),
            }
            row.update(
                source="api", paused=False, next_slot_at=far, last_slot_at=None, last_execution_id=None
            )
            rows.append({**row, "created_at": now, "updated_at": now})
        async with store.engine.begin() as conn:
            await conn.execute(insert(schedules), rows)
            await conn.execute(text("ANALYZE schedules"))
            plan = "\n".join((await conn.execute(text("EXPLAIN " + DUE_QUERY), {"now": now})).scalars().all())
        idle = []
        for _ in range(50):
            started = time.perf_counter()
            await scheduler.round()
            idle.append((time.perf_counter() - started) * 1000)
        for _ in range(replicas):
            workers.append(await _start_worker(url))
        due = float(int(await store.database_now() + LEAD_SECONDS + 1))  # the workers took a while
        async with store.engine.begin() as conn:
            await conn.execute(text("UPDATE schedules SET next_slot_at = :due"), {"due": due})
        deadline = time.monotonic() + RUN_DEADLINE
        async with store.engine.connect() as conn:
            while (await conn.execute(text("SELECT count(*) FROM schedule_slots"))).scalar_one() < count:
                await conn.commit()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{S10}: not every slot fired within {RUN_DEADLINE:g} s")
                await anyio.sleep(0.2)
            found = await conn.execute(text(f"SELECT fired_at - slot_at FROM {schedule_slots.name}"))
            lags = sorted(float(r[0]) for r in found)
        return lags, statistics.median(idle), plan
    finally:
        for process in workers:
            if process.stdin is not None:
                process.stdin.close()
        for process in workers:
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        await store.close()
        await backend.drop(name)


async def _start_worker(url: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.schedules",
        "--worker",
        url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    if line.strip() != b"ready":
        raise RuntimeError(f"{S10}: a scheduler process did not start (said {line!r})")
    # Its log lines go on coming: read (and dropped) so that a full pipe never stalls it.
    _DRAINS.add(asyncio.get_running_loop().create_task(process.stdout.read()))
    return process


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        anyio.run(worker, sys.argv[2])
    else:
        sys.exit("usage: python -m bench --only schedules   (this module's --worker URL is its own)")
