"""The claim reads the partial index of claimable rows, so finished executions never slow it.

These tests take the claim's SQL from the dialect modules themselves, so a change to it that turns
the claim into a scan of the whole table fails here, not in production a million rows later.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from types import ModuleType

import pytest
from sqlalchemy import Index, text
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex

from executor.store import Store, Submission, postgres, sqlite
from executor.store.migrate import upgrade
from executor.store.served import Served
from executor.store.tables import executions

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0
INDEX = "ix_executions_claimable"
#: What the store binds into the claim's inner SELECT (see Store.claim).
PARAMS: dict[str, object] = {"now": T0 + 10, "limit": 100, "dead_after": 15, "owner": "o", "host": "h"}


def inner_select(claim_sql: str) -> str:
    """The SELECT that picks the rows inside the claim's UPDATE ... WHERE id IN (...)."""
    match = re.fullmatch(
        r"UPDATE executions SET .* WHERE id (?:IN \(|= ANY\(ARRAY\()(SELECT .*?)\)\)? RETURNING .*", claim_sql
    )
    assert match, claim_sql
    return match.group(1)


def claim_index() -> Index:
    [index] = [ix for ix in executions.indexes if ix.name == INDEX]
    return index


async def _store(url: str) -> AsyncIterator[Store]:
    store = Store.from_url(url)
    await upgrade(store.engine)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def sqlite_store(sqlite_url: str) -> AsyncIterator[Store]:
    async for store in _store(sqlite_url):
        yield store


@pytest.fixture
async def postgres_store(postgres_url: str) -> AsyncIterator[Store]:
    async for store in _store(postgres_url):
        yield store


# -- the predicate is spelled literally, the same way in the claim, the tables and the database ------


@pytest.mark.parametrize(
    ("module", "dialect", "where"),
    [
        (sqlite, sqlite_dialect.dialect(), "finalized = 0"),
        (postgres, pg_dialect.dialect(), "NOT finalized"),  # type: ignore[no-untyped-call]
    ],
    ids=["sqlite", "postgres"],
)
def test_the_claim_repeats_the_index_predicate_literally(
    module: ModuleType, dialect: Dialect, where: str
) -> None:
    assert where == module.CLAIMABLE
    select_sql = inner_select(module.DIALECT.claim_sql)
    # A literal predicate, not a bound parameter: SQLite uses a partial index only for that.
    assert select_sql.startswith(f"SELECT id FROM executions WHERE {where} AND ")
    assert "finalized" not in select_sql.replace(where, "", 1)
    assert "phase" not in select_sql
    assert ":limit" in select_sql and ":now" in select_sql
    ddl = str(CreateIndex(claim_index()).compile(dialect=dialect))
    assert ddl.endswith(f"WHERE {where}"), ddl


async def database_index_ddl(store: Store) -> str:
    """The index as the migrations built it, in the database's own words."""
    if store.dialect is sqlite.DIALECT:
        query = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :n"
    else:
        query = "SELECT indexdef FROM pg_indexes WHERE indexname = :n"
    async with store.engine.connect() as conn:
        return str((await conn.execute(text(query), {"n": INDEX})).scalar_one())


# -- SQLite ---------------------------------------------------------------------------------------


async def _fill_sqlite(store: Store, finished: int) -> None:
    """`finished` finalized rows in one INSERT ... SELECT, a few pending ones, and fresh statistics."""
    async with store.engine.begin() as conn:
        await conn.execute(
            text(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count) "
                "INSERT INTO executions (id, task_type, inputs, labels, priority, phase, phase_version, "
                "plugin_state_version, attempt, max_attempts, system_failures, event_seq, rounds, "
                "created_at, updated_at, next_round_at, abort_requested, finalized) "
                "SELECT printf('done-%08d', i), 'echo', '{}', '{}', 0, 6, 0, 0, 1, 1, 0, 1, 1, "
                ":t0 - i, :t0 - i, :t0 - i, 0, 1 FROM n"
            ),
            {"count": finished, "t0": T0},
        )
    await store.submit_many([Submission("echo") for _ in range(5)], now=T0)
    async with store.engine.begin() as conn:
        await conn.execute(text("ANALYZE"))


async def sqlite_plan(store: Store, sql: str, params: dict[str, object]) -> list[str]:
    async with store.engine.connect() as conn:
        rows = (await conn.execute(text(f"EXPLAIN QUERY PLAN {sql}"), params)).all()
    return [row[3] for row in rows]


async def test_sqlite_claim_searches_the_partial_index(sqlite_store: Store) -> None:
    ddl = await database_index_ddl(sqlite_store)
    assert ddl.endswith(f"(next_round_at) WHERE {sqlite.CLAIMABLE}"), ddl

    await _fill_sqlite(sqlite_store, 5000)
    plan = await sqlite_plan(sqlite_store, inner_select(sqlite.DIALECT.claim_sql), PARAMS)
    assert any(INDEX in line for line in plan), plan
    assert not any(line.startswith("SCAN executions") and INDEX not in line for line in plan), plan
    assert not any("TEMP B-TREE" in line for line in plan), plan  # the index gives the order too

    # The whole claim statement: the UPDATE finds its rows by primary key, the SELECT by the index.
    update_plan = await sqlite_plan(
        sqlite_store, sqlite.DIALECT.claim_sql, {**PARAMS, "owner": "o", "token": "t", "lease_ttl": 30}
    )
    assert any(INDEX in line for line in update_plan), update_plan
    assert not any(line == "SCAN executions" for line in update_plan), update_plan

    # And the claim finds exactly the pending rows among the finished ones.
    claimed = await sqlite_store.claim(owner="o", token="t", limit=100, lease_ttl=30, now=T0 + 10)
    assert len(claimed) == 5


@pytest.mark.parametrize(
    ("predicate", "params"),
    [
        # What SQLAlchemy's `finalized.is_(False)` renders on SQLite.
        ("finalized IS 0", {}),
        ("NOT finalized", {}),
        # The runnable phases as bound parameters, as `phase.not_in([...])` sends them.
        ("phase NOT IN (:p0, :p1, :p2)", {"p0": 6, "p1": 8, "p2": 10}),
    ],
)
async def test_sqlite_scans_when_the_predicate_is_not_the_index_one(
    sqlite_store: Store, predicate: str, params: dict[str, object]
) -> None:
    """The control: equivalent-looking predicates give a full scan, so the test above can fail."""
    await _fill_sqlite(sqlite_store, 500)
    other = inner_select(sqlite.DIALECT.claim_sql).replace(sqlite.CLAIMABLE, predicate, 1)
    assert other != inner_select(sqlite.DIALECT.claim_sql)
    plan = await sqlite_plan(sqlite_store, other, {**PARAMS, **params})
    assert not any(INDEX in line for line in plan), plan
    assert "SCAN executions" in plan, plan


# -- PostgreSQL -----------------------------------------------------------------------------------


async def _insert_postgres_rows(store: Store, count: int, *, finished: bool) -> None:
    """`count` rows, due (or finished) one second apart before T0, their statistics gathered."""
    prefix, phase, rounds = ("done", 6, 1) if finished else ("pending", 3, 0)
    async with store.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO executions (id, task_type, inputs, labels, priority, phase, phase_version, "
                "plugin_state_version, attempt, max_attempts, system_failures, event_seq, rounds, "
                "created_at, updated_at, next_round_at, abort_requested, finalized) "
                "SELECT :prefix || '-' || lpad(i::text, 8, '0'), 'echo', '{}', '{}', 0, :phase, 0, 0, 1, 1, "
                "0, 1, :rounds, CAST(:t0 AS double precision) - i, CAST(:t0 AS double precision) - i, "
                "CAST(:t0 AS double precision) - i, false, :finished "
                "FROM generate_series(1, CAST(:count AS integer)) AS i"
            ),
            {
                "count": count,
                "t0": T0,
                "prefix": prefix,
                "phase": phase,
                "rounds": rounds,
                "finished": finished,
            },
        )
    async with store.engine.connect() as conn:
        await conn.execute(text("ANALYZE executions"))
        await conn.commit()


async def _fill_postgres(store: Store, finished: int) -> None:
    """`finished` rows done and five pending ones."""
    await _insert_postgres_rows(store, finished, finished=True)
    await store.submit_many([Submission("echo") for _ in range(5)], now=T0)
    async with store.engine.connect() as conn:
        await conn.execute(text("ANALYZE executions"))
        await conn.commit()


async def postgres_plan(store: Store, sql: str, params: dict[str, object]) -> str:
    async with store.engine.connect() as conn:
        rows = (await conn.execute(text(f"EXPLAIN {sql}"), params)).all()
        await conn.rollback()
    return "\n".join(row[0] for row in rows)


async def test_postgres_claim_uses_the_partial_index(postgres_store: Store) -> None:
    ddl = await database_index_ddl(postgres_store)
    assert ddl.endswith(f"(next_round_at) WHERE ({postgres.CLAIMABLE})"), ddl

    await _fill_postgres(postgres_store, 20_000)
    async with postgres_store.engine.connect() as conn:
        finished = (await conn.execute(text("SELECT count(*) FROM executions WHERE finalized"))).scalar_one()
    assert finished == 20_000

    plan = await postgres_plan(postgres_store, inner_select(postgres.DIALECT.claim_sql), PARAMS)
    assert INDEX in plan, plan
    assert "Seq Scan on executions" not in plan, plan
    assert "LockRows" in plan, plan  # FOR UPDATE SKIP LOCKED is part of what was planned

    update_plan = await postgres_plan(
        postgres_store, postgres.DIALECT.claim_sql, {**PARAMS, "owner": "o", "token": "t", "lease_ttl": 30}
    )
    assert INDEX in update_plan, update_plan
    assert "Seq Scan on executions" not in update_plan, update_plan

    claimed = await postgres_store.claim(owner="o", token="t", limit=100, lease_ttl=30, now=T0 + 10)
    assert len(claimed) == 5


async def test_postgres_claim_looks_picked_rows_up_by_key_however_many_are_pending(
    postgres_store: Store,
) -> None:
    """With every row pending, `id IN (SELECT ...)` was planned as a hash join against a scan of
    the whole table: each claim read every pending row. The claim must stay O(batch)."""
    await _insert_postgres_rows(postgres_store, 20_000, finished=False)

    update_plan = await postgres_plan(
        postgres_store, postgres.DIALECT.claim_sql, {**PARAMS, "owner": "o", "token": "t", "lease_ttl": 30}
    )
    assert "Seq Scan on executions" not in update_plan, update_plan
    assert "Hash" not in update_plan, update_plan

    claimed = await postgres_store.claim(owner="o", token="t", limit=100, lease_ttl=30, now=T0 + 10)
    assert [record.id for record in claimed] == [f"pending-{i:08d}" for i in range(20000, 19900, -1)]


async def test_postgres_commit_looks_each_row_up_by_key_whatever_the_token_statistics(
    postgres_store: Store,
) -> None:
    """Nearly every row's lease token is NULL, so `lease_token = $token` looked to the planner
    like a single row: it scanned the table for it and rescanned the arrays once per row (16-40
    ms for a 256-row commit). The commit must walk its arrays and find each row by key."""
    from executor import lifecycle
    from executor.core import PhaseInfo, do_transition
    from executor.store.columns import commit_rows

    await _insert_postgres_rows(postgres_store, 20_000, finished=False)
    claimed = await postgres_store.claim(owner="o", token="t", limit=256, lease_ttl=30, now=T0 + 10)
    handled = lifecycle.Handled(do_transition(PhaseInfo.running(0)))
    updates = [lifecycle.advance(record, handled, T0 + 11, lifecycle.Policy()) for record in claimed]
    ((shape, rows),) = commit_rows(updates, "t", T0 + 11).items()

    async with postgres_store.engine.connect() as conn:
        sql = postgres_store.sql.update_round_unnest(*shape)
        plan = "\n".join(
            row[0] for row in await conn.exec_driver_sql(f"EXPLAIN {sql}", tuple(zip(*rows, strict=True)))
        )
        await conn.rollback()
    assert "Seq Scan on executions" not in plan, plan
    assert "pk_executions" in plan, plan


# -- the claims of replicas serving named queues (EXECUTOR_QUEUES) ---------------------------------

QUEUE_INDEX = "ix_executions_claimable_queue"
GPU_ONLY = ("gpu",)
WITH_DEFAULT = ("gpu", "default")


def queue_params(queues: tuple[str, ...]) -> dict[str, object]:
    return {**PARAMS, **{f"queue_{number}": queue for number, queue in enumerate(queues)}}


async def _fill_queues(store: Store) -> None:
    """Pending work in the default queue, a little in `gpu`, some of it pinned to a host or paused."""
    await store.submit_many([Submission("echo") for _ in range(50)], now=T0)
    await store.submit_many([Submission("echo", queue="gpu") for _ in range(5)], now=T0)
    await store.submit_many([Submission("echo", queue="gpu", pin_to_host=True) for _ in range(2)], now=T0)
    await store.submit_many([Submission("held", queue="gpu") for _ in range(3)], now=T0)
    async with store.engine.begin() as conn:
        await conn.execute(text("INSERT INTO paused_task_types VALUES ('held', 0, NULL)"))
        await conn.execute(text("ANALYZE" if store.dialect is sqlite.DIALECT else "ANALYZE executions"))


@pytest.fixture
async def any_store(database_url: str) -> AsyncIterator[Store]:
    async for store in _store(database_url):
        yield store


async def test_a_queue_bound_claim_reads_the_queue_index_in_order(any_store: Store) -> None:
    store = any_store
    backend = "sqlite" if store.dialect is sqlite.DIALECT else "postgres"
    if backend == "sqlite":
        await _fill_sqlite(store, 5000)
    else:
        await _insert_postgres_rows(store, 20_000, finished=True)
    await _fill_queues(store)
    select_sql = inner_select(store.dialect.claim_for(GPU_ONLY, False))
    if backend == "sqlite":
        plan = "\n".join(await sqlite_plan(store, select_sql, queue_params(GPU_ONLY)))
        assert f"USING INDEX {QUEUE_INDEX} (queue=?" in plan, plan
        assert "TEMP B-TREE" not in plan, plan  # the index gives the order: O(batch)
    else:
        plan = await postgres_plan(store, select_sql, queue_params(GPU_ONLY))
        assert QUEUE_INDEX in plan and "Seq Scan on executions" not in plan, plan
        assert "Sort" not in plan, plan
        assert "hashed SubPlan" in plan, plan  # the paused task types: read once, not per row

    # A replica serving the default queue too walks the claim's usual index.
    select_sql = inner_select(store.dialect.claim_for(WITH_DEFAULT, False))
    if backend == "sqlite":
        plan = "\n".join(await sqlite_plan(store, select_sql, queue_params(WITH_DEFAULT)))
        assert "ix_executions_claimable_priority" in plan and "TEMP B-TREE" not in plan, plan
    else:
        plan = await postgres_plan(store, select_sql, queue_params(WITH_DEFAULT))
        assert "ix_executions_claimable" in plan and "Seq Scan on executions" not in plan, plan

    # And the claims take exactly what they may: not the default queue, not the paused type, not
    # a pin of another host; the unpinned host pins what asks for it.
    gpu = Served(GPU_ONLY, "h1")
    claimed = await store.claim(owner="o", token="t", limit=100, lease_ttl=30, now=T0 + 10, served=gpu)
    assert sorted((r.queue, r.task_type, r.pinned_host or "-") for r in claimed) == sorted(
        [("gpu", "echo", "-")] * 5 + [("gpu", "echo", "h1")] * 2
    )
    await store.release_leases("t", [r.id for r in claimed])
    elsewhere = Served(GPU_ONLY, "h2")
    again = await store.claim(owner="o", token="u", limit=100, lease_ttl=30, now=T0 + 10, served=elsewhere)
    assert len(again) == 5 and all(r.pinned_host is None for r in again)
    everything = await store.claim(owner="o", token="v", limit=100, lease_ttl=30, now=T0 + 10)
    assert {r.queue for r in everything} == {"default"} and len(everything) >= 50
