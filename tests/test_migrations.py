"""The migrations build exactly the schema `executor.store.tables` describes, on both dialects.

Every test starts from an empty database (a new SQLite file, a new PostgreSQL database), not from
the migrated template the other store tests copy: what is checked here is the migration itself.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from anyio.streams.buffered import BufferedByteReceiveStream
from sqlalchemy import Column, Integer, MetaData, inspect
from sqlalchemy.engine import make_url

from executor.store import Store, Submission
from executor.store.migrate import MIGRATIONS_DIR, current_revision, head_revision, upgrade
from executor.store.tables import metadata

pytestmark = pytest.mark.anyio

TABLES = {
    "executions",
    "events",
    "replicas",
    "resource_quotas",
    "resource_allocations",
    "schedules",
    "paused_task_types",
    "schedule_slots",
}


def _pg_admin(statement: str) -> None:
    import asyncpg

    url = make_url(os.environ["EXECUTOR_TEST_POSTGRES_URL"])

    async def run() -> None:
        conn = await asyncpg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            database=url.database,
        )
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A database with nothing in it, not even Alembic's version table."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/fresh.db"
        return
    request.getfixturevalue("postgres_template")  # skips, or fails in CI, like every PostgreSQL test
    name = f"executor_m_{uuid.uuid4().hex[:16]}"
    _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY FILE_COPY')
    try:
        yield (
            make_url(os.environ["EXECUTOR_TEST_POSTGRES_URL"])
            .set(database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def empty_store(empty_url: str) -> AsyncIterator[Store]:
    store = Store.from_url(empty_url)
    try:
        yield store
    finally:
        await store.close()


async def downgrade(store: Store, revision: str) -> None:
    def _downgrade(connection: Any) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with store.engine.connect() as connection:
        await connection.run_sync(_downgrade)
        await connection.commit()


async def schema_diff(store: Store, target: MetaData = metadata) -> list[Any]:
    def _diff(connection: Any) -> list[Any]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, target))

    async with store.engine.connect() as connection:
        return await connection.run_sync(_diff)


async def table_names(store: Store) -> set[str]:
    async with store.engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


def _unparenthesised(predicate: object) -> str | None:
    if predicate is None:
        return None
    text = str(predicate)
    return text[1:-1] if text.startswith("(") and text.endswith(")") else text


async def index_predicates(store: Store) -> dict[str, str | None]:
    """Each index's WHERE, as the database has it (Alembic's comparison does not look at these)."""
    key = f"{store.engine.dialect.name}_where"

    def _reflect(connection: Any) -> dict[str, str | None]:
        inspector = inspect(connection)
        return {
            index["name"]: _unparenthesised(index.get("dialect_options", {}).get(key))
            for table in metadata.tables
            for index in inspector.get_indexes(table)
            if index["name"] is not None
        }

    async with store.engine.connect() as connection:
        return await connection.run_sync(_reflect)


def declared_predicates(dialect: str) -> dict[str, str | None]:
    return {
        str(index.name): _unparenthesised(index.dialect_kwargs.get(f"{dialect}_where"))
        for table in metadata.tables.values()
        for index in table.indexes
    }


async def test_migrations_agree_with_the_table_definitions(empty_store: Store) -> None:
    assert await current_revision(empty_store.engine) is None
    assert await table_names(empty_store) == set()

    await upgrade(empty_store.engine)

    assert await schema_diff(empty_store) == []
    assert await current_revision(empty_store.engine) == head_revision()
    assert head_revision() is not None
    assert await table_names(empty_store) == TABLES | {"alembic_version"}
    dialect = empty_store.engine.dialect.name
    assert await index_predicates(empty_store) == declared_predicates(dialect)
    assert declared_predicates(dialect)["ix_executions_claimable"] in ("finalized = 0", "NOT finalized")

    # The control: a table definition the migrations do not build is reported.
    changed = MetaData()
    for table in metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["executions"].append_column(Column("extra", Integer))
    diff = await schema_diff(empty_store, changed)
    assert [(d[0], d[3].name) for d in diff] == [("add_column", "extra")], diff


async def test_upgrade_twice_changes_nothing(empty_store: Store) -> None:
    await upgrade(empty_store.engine)
    ids = await empty_store.submit_many([Submission("echo", {"n": 1})], now=1.0)
    await upgrade(empty_store.engine)
    assert await current_revision(empty_store.engine) == head_revision()
    assert await schema_diff(empty_store) == []
    assert [r.id for r in await empty_store.list_executions()] == ids


#: One replica starting: connect, say it is ready, wait for the go, migrate.
_REPLICA = """
import asyncio, sys
from executor.store import Store
from executor.store.migrate import upgrade

async def main() -> None:
    store = Store.from_url(sys.argv[1])
    try:
        await store.ping()
        print("ready", flush=True)
        sys.stdin.readline()
        await upgrade(store.engine)
    finally:
        await store.close()

asyncio.run(main())
"""
REPLICAS = 3


async def test_replicas_starting_together_all_migrate(empty_url: str) -> None:
    """Every replica migrates on start; when they start at once, none may fail.

    Separate processes, as real replicas are (Alembic keeps global state, so two migrations in
    one process cannot interleave anyway), released at the same instant so that they race.
    """
    async with AsyncExitStack() as stack:
        processes = [
            await stack.enter_async_context(
                await anyio.open_process([sys.executable, "-c", _REPLICA, empty_url])
            )
            for _ in range(REPLICAS)
        ]
        with anyio.fail_after(60):
            for process in processes:
                assert process.stdout is not None
                ready = await BufferedByteReceiveStream(process.stdout).receive_until(b"\n", 100)
                assert ready == b"ready"
            for process in processes:
                assert process.stdin is not None
                await process.stdin.send(b"go\n")
            for process in processes:
                assert process.stderr is not None
                code = await process.wait()
                assert code == 0, b"".join([chunk async for chunk in process.stderr]).decode()

    store = Store.from_url(empty_url)
    try:
        assert await current_revision(store.engine) == head_revision()
        assert await schema_diff(store) == []
    finally:
        await store.close()


async def test_downgrade_to_base_and_upgrade_again(empty_store: Store) -> None:
    await upgrade(empty_store.engine)
    await empty_store.submit(Submission("echo"), now=1.0)

    await downgrade(empty_store, "base")

    assert await current_revision(empty_store.engine) is None
    assert await table_names(empty_store) & TABLES == set()

    await upgrade(empty_store.engine)

    assert await current_revision(empty_store.engine) == head_revision()
    assert await schema_diff(empty_store) == []
    assert await empty_store.list_executions() == []
    execution_id = await empty_store.submit(Submission("echo"), now=2.0)
    assert [r.id for r in await empty_store.claim(owner="o", token="t", limit=5, lease_ttl=5, now=2.0)] == [
        execution_id
    ]
