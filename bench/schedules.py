"""Schedules on PostgreSQL: 10,000 one-minute schedules all due in the same second.

    EXECUTOR_TEST_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test \\
        python -m bench.schedules [--schedules 10000] [--replicas 3]

Prints the slot-to-submission lag (the key's `fired_at` minus its slot, on the database's clock)
and, before the slots come, the cost of a scheduler round with nothing due and the plan of its
due query (which must be an index scan, never a scan of the schedules table).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid

import anyio
from sqlalchemy import insert, text

from executor.app.parts import client_for
from executor.plugin.loader import PACKAGED_BUILTINS, collect
from executor.plugin.registry import PluginRegistry
from executor.schedules import Scheduler, ScheduleSpec
from executor.settings import Settings
from executor.store import Store
from executor.store.migrate import upgrade
from executor.store.schedule_tables import schedule_slots, schedules

ADMIN = os.environ.get("EXECUTOR_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


async def fresh_database(name: str) -> str:
    admin = Store.from_url(ADMIN)
    try:
        async with admin.engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.close()
    return ADMIN.rsplit("/", 1)[0] + "/" + name


async def main(count: int, replicas: int) -> None:
    url = await fresh_database("bench_schedules")
    store = Store.from_url(url)
    await upgrade(store.engine)
    now = await store.database_now()
    due_at = float(int(now) + 8)  # every schedule's first slot, the same second
    rows = []
    for n in range(count):
        spec = ScheduleSpec(name=f"s{n:05d}", task_type="echo", every=60.0, start=due_at, inputs={"n": n})
        rows.append(
            {
                "id": str(uuid.uuid4()), "name": spec.name, "spec": json.dumps(spec.model_dump(mode="json")),
                "source": "api", "paused": False, "next_slot_at": due_at, "last_slot_at": None,
                "last_execution_id": None, "created_at": now, "updated_at": now,
            }
        )  # fmt: skip
    async with store.engine.begin() as conn:
        await conn.execute(insert(schedules), rows)
        await conn.execute(text("ANALYZE schedules"))
        plan = (
            (
                await conn.execute(
                    text(
                        "EXPLAIN SELECT * FROM schedules WHERE next_slot_at <= :now "
                        "ORDER BY next_slot_at LIMIT 500 FOR UPDATE SKIP LOCKED"
                    ),
                    {"now": now},
                )
            )
            .scalars()
            .all()
        )
    print(f"{count} schedules, every 60 s, all due at the same second; {replicas} schedulers")
    print("due query plan:\n  " + "\n  ".join(plan))

    registry = PluginRegistry()
    collect(registry, PACKAGED_BUILTINS, use_entry_points=False)
    stores = [Store.from_url(url) for _ in range(replicas)]
    schedulers = [Scheduler(client_for(Settings(), s, registry.resolver({}))) for s in stores]
    idle = []
    for _ in range(50):
        started = time.perf_counter()
        await schedulers[0].round()
        idle.append(time.perf_counter() - started)
    print(f"idle round (nothing due): median {statistics.median(idle) * 1000:.2f} ms, 3 statements")

    async with anyio.create_task_group() as group:
        for scheduler in schedulers:
            group.start_soon(scheduler.run)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            await anyio.sleep(0.5)
            async with store.engine.connect() as conn:
                made = (await conn.execute(text("SELECT count(*) FROM schedule_slots"))).scalar_one()
            if made >= count:
                break
        group.cancel_scope.cancel()
    async with store.engine.connect() as conn:
        lags = sorted(
            r[0]
            for r in (await conn.execute(text(f"SELECT fired_at - slot_at FROM {schedule_slots.name}"))).all()
        )
        executions = (await conn.execute(text("SELECT count(*) FROM executions"))).scalar_one()
    quantile = statistics.quantiles(lags, n=100)
    print(
        f"slots fired: {len(lags)} (executions {executions}); lag p50 {quantile[49]:.3f} s, "
        f"p99 {quantile[98]:.3f} s, max {lags[-1]:.3f} s"
    )
    print("fired per scheduler:", [s.fired for s in schedulers])
    for s in [store, *stores]:
        await s.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--replicas", type=int, default=3)
    args = parser.parse_args()
    anyio.run(main, args.schedules, args.replicas)
