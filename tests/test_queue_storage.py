"""The storage parameters migration 0006 sets on PostgreSQL for a high-churn queue (issue 21), and
that it is a no-op on SQLite. Nothing here needs autovacuum to be on: the parameters are read back
from the catalog, never waited for."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import text

from executor.store import Store
from executor.store.migrate import MIGRATIONS_DIR, current_revision, head_revision, upgrade
from tests.test_migrations import downgrade

pytestmark = pytest.mark.anyio


def migration() -> ModuleType:
    [path] = Path(MIGRATIONS_DIR, "versions").glob("*_queue_storage.py")
    spec = importlib.util.spec_from_file_location("queue_storage", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def storage(store: Store) -> dict[str, dict[str, str]]:
    """Each queue table's storage parameters, as PostgreSQL's catalog holds them."""
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT relname, reloptions FROM pg_class WHERE relname IN ('executions', 'events')")
        )
        return {name: dict(o.split("=", 1) for o in options or []) for name, options in rows}


async def test_postgresql_tables_get_the_queue_parameters_and_lose_them_on_downgrade(
    postgres_url: str,
) -> None:
    store = Store.from_url(postgres_url)
    try:
        await upgrade(store.engine)
        expected = migration().STORAGE
        found = await storage(store)
        assert found == expected
        assert float(found["executions"]["autovacuum_analyze_scale_factor"]) < 0.1  # PostgreSQL's default
        assert int(found["executions"]["fillfactor"]) < 100

        await downgrade(store, migration().down_revision)
        assert await storage(store) == {"executions": {}, "events": {}}
        await upgrade(store.engine)
        assert await storage(store) == expected
        assert await current_revision(store.engine) == head_revision()
    finally:
        await store.close()


async def test_sqlite_migrates_through_it_unchanged(sqlite_url: str) -> None:
    store = Store.from_url(sqlite_url)
    try:
        await upgrade(store.engine)
        await downgrade(store, migration().down_revision)
        await upgrade(store.engine)
        assert await current_revision(store.engine) == head_revision()
    finally:
        await store.close()
