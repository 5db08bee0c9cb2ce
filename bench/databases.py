"""Databases for benchmark runs: made, seeded once as a template, copied for each run, dropped.

Every run starts from an identical copy (a file copy on SQLite, `CREATE DATABASE ... TEMPLATE` on
PostgreSQL), so runs of the daemon and of the baselines see the same rows and the same indexes.
The schema comes from the project's own migrations. Large tables (a million finished or pending
executions) are generated in SQL from one prototype row made through the real API and the real
loop, with a recursive CTE on SQLite and `generate_series` on PostgreSQL: that takes seconds where
a million submissions through the API would take minutes, and the rows still have every column a
real execution has.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from executor.store import Store, Submission
from executor.store.migrate import upgrade
from executor.store.tables import events, executions

SQLITE = "SQLite"
POSTGRES = "PostgreSQL"

CHUNK = 10_000


class SqliteBackend:
    label = SQLITE

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.db"

    def url(self, name: str) -> str:
        return f"sqlite+aiosqlite:///{self.path(name)}"

    async def create(self, name: str) -> str:
        await self.drop(name)
        store = Store.from_url(self.url(name))
        try:
            await upgrade(store.engine)
        finally:
            await store.close()
        return name

    async def clone(self, template: str, name: str) -> str:
        checkpoint(self.path(template))
        await self.drop(name)
        shutil.copyfile(self.path(template), self.path(name))
        flush(self.path(name))
        return name

    async def drop(self, name: str) -> None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path(name)}{suffix}")

    async def close(self) -> None:
        pass


def flush(path: Path) -> None:
    """Write a fresh copy's pages to disk now, not in the first fsync of the run measured on it
    (a checkpoint), which took 115 ms for the copy of a million-row database."""
    with open(path, "rb+") as copy:
        os.fsync(copy.fileno())


def checkpoint(path: Path) -> None:
    """Fold the WAL into the database file, so that a copy of the file alone is the whole database."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


class PostgresBackend:
    label = POSTGRES

    def __init__(self, admin_url: str) -> None:
        self.admin_url = make_url(admin_url)
        self.prefix = f"bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.created: list[str] = []
        #: Templates holding generated tables: copied as files (see `clone`).
        self.large: set[str] = set()

    def _name(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def database(self, name: str) -> str:
        """The server's name for the benchmark database `name`."""
        return self._name(name)

    def url(self, name: str) -> str:
        return self.admin_url.set(database=self._name(name)).render_as_string(hide_password=False)

    def connect_kwargs(self, name: str | None = None) -> dict[str, Any]:
        """asyncpg.connect(**...) for a benchmark database (or the admin one)."""
        url = self.admin_url
        return {
            "host": url.host or "127.0.0.1",
            "port": url.port or 5432,
            "user": url.username,
            "password": url.password,
            "database": self._name(name) if name is not None else url.database,
        }

    def libpq_dsn(self, name: str) -> str:
        """A libpq connection string (psycopg, for procrastinate)."""
        url = self.admin_url.set(drivername="postgresql", database=self._name(name))
        return url.render_as_string(hide_password=False)

    async def admin(self, *statements: str) -> None:
        connection = await asyncpg.connect(**self.connect_kwargs())
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    async def create(self, name: str, *, migrate: bool = True) -> str:
        await self.drop(name)
        await self.admin(f'CREATE DATABASE "{self._name(name)}"')
        self.created.append(name)
        if migrate:
            store = Store.from_url(self.url(name))
            try:
                await upgrade(store.engine)
            finally:
                await store.close()
        return name

    async def clone(self, template: str, name: str) -> str:
        await self.drop(name)
        # A large template is copied as files (one checkpoint) rather than page by page through the
        # WAL, which is what PostgreSQL 15 does by default and is quicker for a small one.
        strategy = "FILE_COPY" if template in self.large else "WAL_LOG"
        await self.admin(
            f'CREATE DATABASE "{self._name(name)}" TEMPLATE "{self._name(template)}" STRATEGY {strategy}'
        )
        self.created.append(name)
        return name

    async def drop(self, name: str) -> None:
        await self.admin(f'DROP DATABASE IF EXISTS "{self._name(name)}" WITH (FORCE)')
        if name in self.created:
            self.created.remove(name)
        self.large.discard(name)

    async def close(self) -> None:
        for name in list(self.created):
            await self.drop(name)

    async def execute_in(self, name: str, *statements: str) -> None:
        """Run `statements` in the benchmark database `name`."""
        connection = await asyncpg.connect(**self.connect_kwargs(name))
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    async def vacuum_analyze(self, name: str) -> None:
        """What autovacuum would do after a bulk load, done now so it cannot land mid-measurement."""
        connection = await asyncpg.connect(**self.connect_kwargs(name))
        try:
            await connection.execute("VACUUM ANALYZE")
        finally:
            await connection.close()

    async def server_facts(self) -> dict[str, str]:
        connection = await asyncpg.connect(**self.connect_kwargs())
        try:
            facts = {"version": str(await connection.fetchval("SHOW server_version"))}
            for setting in ("shared_buffers", "synchronous_commit", "fsync", "max_connections"):
                facts[setting] = str(await connection.fetchval(f"SHOW {setting}"))
            return facts
        finally:
            await connection.close()


Backend = SqliteBackend | PostgresBackend


async def submit(url: str, submissions: Sequence[Submission]) -> list[str]:
    """Submit through the store's bulk API, in chunks of 10,000 (not timed)."""
    store = Store.from_url(url)
    ids: list[str] = []
    try:
        for start in range(0, len(submissions), CHUNK):
            ids += await store.submit_many(submissions[start : start + CHUNK], now=time.time())
    finally:
        await store.close()
    return ids


def echo_submissions(count: int) -> list[Submission]:
    return [Submission("echo", {"i": i}) for i in range(count)]


def three_round_submissions(count: int) -> list[Submission]:
    return [Submission("bench-three-rounds", {}) for _ in range(count)]


async def copy_rows(
    backend: Backend, name: str, prototype_id: str, count: int, *, with_events: bool, spread: float
) -> None:
    """Add `count` copies of the execution `prototype_id` (and, if asked, of its events), each with
    a fresh random id; `created_at` and `next_round_at` are spread over `spread` seconds before the
    prototype's so that the time indexes see distinct values, as they would in real use."""
    columns = [column.name for column in executions.columns]
    event_columns = [column.name for column in events.columns]
    if isinstance(backend, SqliteBackend):
        new_id = "lower(hex(randomblob(16)))"
        series = "s"
        prefix = "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :count) "
        source = "s, executions AS p WHERE p.id = :proto"
    else:
        new_id = "gen_random_uuid()::text"
        series = "s"
        prefix = ""
        source = "generate_series(1, $1::int) AS s(i), executions AS p WHERE p.id = $2"
    expressions = {
        "id": new_id,
        "created_at": f"p.created_at - {spread} + {series}.i * {spread} / {max(count, 1)}",
        "next_round_at": f"p.next_round_at - {spread} + {series}.i * {spread} / {max(count, 1)}",
    }
    selected = ", ".join(expressions.get(column, f"p.{column}") for column in columns)
    copy_executions = f"{prefix}INSERT INTO executions ({', '.join(columns)}) SELECT {selected} FROM {source}"
    event_selected = ", ".join(
        "x.id" if column == "execution_id" else f"e.{column}" for column in event_columns
    )
    if isinstance(backend, SqliteBackend):
        copy_events = (
            f"INSERT INTO events ({', '.join(event_columns)}) SELECT {event_selected} "
            "FROM executions AS x JOIN events AS e ON e.execution_id = :proto WHERE x.id <> :proto"
        )
        connection = sqlite3.connect(backend.path(name))
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            with connection:
                connection.execute(copy_executions, {"count": count, "proto": prototype_id})
                if with_events:
                    connection.execute(copy_events, {"proto": prototype_id})
        finally:
            connection.close()
        return
    copy_events = (
        f"INSERT INTO events ({', '.join(event_columns)}) SELECT {event_selected} "
        "FROM executions AS x JOIN events AS e ON e.execution_id = $1 WHERE x.id <> $1"
    )
    if count >= 100_000:
        backend.large.add(name)
    connection = await asyncpg.connect(**backend.connect_kwargs(name))
    try:
        async with connection.transaction():
            await connection.execute(copy_executions, count, prototype_id)
            if with_events:
                await connection.execute(copy_events, prototype_id)
    finally:
        await connection.close()
    await backend.vacuum_analyze(name)


async def count_rows(backend: Backend, name: str, where: str) -> int:
    if isinstance(backend, SqliteBackend):
        connection = sqlite3.connect(backend.path(name))
        try:
            return int(connection.execute(f"SELECT count(*) FROM executions WHERE {where}").fetchone()[0])
        finally:
            connection.close()
    pg = await asyncpg.connect(**backend.connect_kwargs(name))
    try:
        return int(await pg.fetchval(f"SELECT count(*) FROM executions WHERE {where}"))
    finally:
        await pg.close()


def finished_where(backend: Backend) -> str:
    """Executions that are done for good: SUCCESS (6) and finalized."""
    return "phase = 6 AND finalized = 1" if isinstance(backend, SqliteBackend) else "phase = 6 AND finalized"
