"""Plans that cannot rot: the round's statements keep their index on a table that grew from empty
with no ANALYZE, however long the connection that runs them lives.

asyncpg prepares each statement once per connection and PostgreSQL, after five runs, may switch
it to a generic plan costed with the statistics of that moment: costed on an empty table, the
claim and the commit scan the whole table ever after. The first test shows that this is what a
forced generic plan does to these statements (so the second one can fail); the second runs the
store's own operations as a daemon does, on the store's own connections, and reads the plans
PostgreSQL really executed (`auto_explain`, sent back to the connection as notices).

Autovacuum is switched off on the tables, so the tests do not depend on whether it would have
analyzed them meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url

from executor import lifecycle
from executor.core import PhaseInfo, do_transition
from executor.store import Store, Submission
from executor.store.base import DriverSql
from executor.store.migrate import upgrade
from executor.store.served import Served

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0
ROWS = 100_000
#: A replica with EXECUTOR_QUEUES=gpu on host h.
QUEUE_BOUND = Served(("gpu",), "h")


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _no_autovacuum(url: str) -> None:
    conn = await asyncpg.connect(_dsn(url))
    try:
        for table in ("executions", "events"):
            await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
    finally:
        await conn.close()


async def _grow(url: str) -> None:
    """100,000 executions, one in ten still pending and due, the rest finished; no ANALYZE."""
    conn = await asyncpg.connect(_dsn(url))
    try:
        await conn.execute(
            "INSERT INTO executions (id, task_type, inputs, labels, priority, phase, phase_version, "
            "plugin_state_version, attempt, max_attempts, system_failures, event_seq, rounds, "
            "created_at, updated_at, next_round_at, abort_requested, finalized) "
            "SELECT 'grown-' || lpad(i::text, 8, '0'), 'echo', '{}', '{}', 0, "
            "CASE WHEN i % 10 = 0 THEN 3 ELSE 6 END, 0, 0, 1, 1, 0, 1, 1, $1 - i, $1 - i, $1 - i, false, "
            "i % 10 <> 0 FROM generate_series(1, $2::integer) AS i",
            T0,
            ROWS,
        )
        analyzed = await conn.fetchval(
            "SELECT coalesce(analyze_count + autoanalyze_count, 0) FROM pg_stat_user_tables "
            "WHERE relname = 'executions'"
        )
        assert analyzed == 0  # the planner has never seen statistics of this table
    finally:
        await conn.close()


def _per_round_statements(store: Store) -> dict[str, str]:
    """The SQL of every statement a round runs on PostgreSQL, as the driver receives it."""
    sql = store.sql
    statements = {
        "claim": store._claim.sql,
        "claim_gpu": store.claim_statement(QUEUE_BOUND.queues, False).sql,
    }
    for shape in [(False, False), (True, False), (False, True), (True, True)]:
        statements[f"commit{shape}"] = sql.update_round_unnest(*shape)
    statements["renew_leases"] = sql.renew_leases
    statements["release_leases"] = sql.release_leases
    for name in ("next_free_due", "next_held_expiry", "next_held_expiry_before"):
        statements[name] = DriverSql(getattr(sql, name), store.engine).sql
        statements[f"{name}_gpu"] = DriverSql(getattr(sql.due(QUEUE_BOUND.queues), name), store.engine).sql
    return statements


async def test_a_generic_plan_costed_on_the_empty_table_scans_it(postgres_url: str) -> None:
    """The control: what a long-lived connection left to PostgreSQL's plan cache would run."""
    store = Store.from_url(postgres_url)
    await upgrade(store.engine)
    statements = _per_round_statements(store)
    await store.close()
    await _no_autovacuum(postgres_url)
    conn = await asyncpg.connect(_dsn(postgres_url))
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        calls = {}
        for number, (name, statement) in enumerate(statements.items()):
            await conn.execute(f"PREPARE s{number} AS {statement}")
            count = await conn.fetchval(
                "SELECT cardinality(parameter_types) FROM pg_prepared_statements WHERE name = $1",
                f"s{number}",
            )
            # A generic plan does not depend on the values: NULLs will do.
            calls[name] = f"EXPLAIN EXECUTE s{number}" + (f"({', '.join(['NULL'] * count)})" if count else "")
            await conn.fetch(calls[name])  # planned, and cached, on the empty table
        await _grow(postgres_url)
        plans = {name: "\n".join(row[0] for row in await conn.fetch(call)) for name, call in calls.items()}
    finally:
        await conn.close()
    scanning = {name for name, plan in plans.items() if "Seq Scan on executions" in plan}
    # The statements of every round: had the store left the plan cache alone, they would scan.
    assert {"claim", "commit(False, False)", "renew_leases"} <= scanning, plans


@pytest.fixture
def explained_store(postgres_url: str) -> Iterator[tuple[Store, list[str]]]:
    """The store as a daemon makes it, with every plan its connections execute collected."""
    store = Store.from_url(postgres_url)
    plans: list[str] = []

    @event.listens_for(store.engine.sync_engine, "connect")
    def _explain(dbapi_connection: Any, _record: Any) -> None:
        driver = dbapi_connection.driver_connection
        driver.add_log_listener(lambda _conn, message: plans.append(message.message))
        dbapi_connection.run_async(
            lambda conn: conn.execute(
                "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; "
                "SET auto_explain.log_level = notice"
            )
        )

    yield store, plans


async def _a_round(store: Store, token: str, now: float) -> int:
    """What a daemon's round and idle wait run: claim, commit, renew, release, due_in."""
    claimed = await store.claim(owner="o", token=token, limit=10, lease_ttl=30, now=now)
    handled = lifecycle.Handled(do_transition(PhaseInfo.running(0)))
    updates = [lifecycle.advance(record, handled, now, lifecycle.Policy()) for record in claimed[:5]]
    await store.commit_round(token, updates, now=now)
    await store.renew_leases({token: [record.id for record in claimed[5:]]}, lease_ttl=30)
    await store.release_leases(token, [record.id for record in claimed[5:]])
    await store.due_in(now)
    # A replica serving only a named queue: its own claim and idle wait (the table holds none of it).
    assert (
        await store.claim(owner="o", token=token, limit=10, lease_ttl=30, now=now, served=QUEUE_BOUND) == []
    )
    await store.due_in(now, QUEUE_BOUND)
    return len(claimed)


async def test_the_store_plans_the_round_on_the_table_as_it_is(
    explained_store: tuple[Store, list[str]], postgres_url: str
) -> None:
    store, plans = explained_store
    await upgrade(store.engine)
    await _no_autovacuum(postgres_url)
    async with store.engine.connect() as conn:
        assert (await conn.execute(text("SHOW plan_cache_mode"))).scalar_one() == "force_custom_plan"

    # Ten rounds on a nearly empty table: more than the five runs after which PostgreSQL would
    # settle on a generic plan for each statement of each pooled connection.
    await store.submit_many([Submission("echo") for _ in range(20)], now=T0)
    for number in range(10):
        await _a_round(store, f"before-{number}", T0 + number)
    assert plans, "auto_explain sent no plans back: the test would prove nothing"

    await _grow(postgres_url)
    plans.clear()
    for number in range(10):
        assert await _a_round(store, f"after-{number}", T0 + 100 + number) == 10
    await store.close()

    executions_plans = [plan for plan in plans if "executions" in plan]
    claims = [plan for plan in executions_plans if "lease_owner = " in plan and "LockRows" in plan]
    commits = [plan for plan in executions_plans if "unnest" in plan and "Update on executions" in plan]
    assert len(claims) == 20 and len(commits) == 10, plans
    scans = [plan for plan in executions_plans if "Seq Scan on executions" in plan]
    assert not scans, scans[0]
    assert all("ix_executions_claimable" in plan for plan in claims), claims[0]
    assert all("pk_executions" in plan for plan in commits), commits[0]
