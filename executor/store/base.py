"""What every part of the store shares: the engine, its dialect, its statements, and the driver
underneath SQLAlchemy for the round's statements on SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import TextClause

from executor.store import postgres, sqlite
from executor.store.dialect import Dialect
from executor.store.errors import StoreError
from executor.store.statements import Statements, statements_for


def dialect_for(url: str) -> Dialect:
    if url.startswith("sqlite"):
        return sqlite.DIALECT
    if url.startswith("postgresql"):
        return postgres.DIALECT
    raise StoreError(f"unsupported database URL {url!r}: use sqlite+aiosqlite:// or postgresql+asyncpg://")


def create_engine(url: str, *, application_name: str | None = None) -> AsyncEngine:
    """The engine for `url`; on PostgreSQL its connections call themselves `application_name`."""
    dialect = dialect_for(url)
    if dialect is sqlite.DIALECT:
        sqlite.prepare_url(url)
        engine = create_async_engine(url, **dialect.engine_options)
        sqlite.configure(engine)
        return engine
    engine = create_async_engine(url, **postgres.engine_options(application_name))
    postgres.configure(engine)
    return engine


def url_without_password(url: str) -> str:
    """A database URL fit to show: its password as ***."""
    return make_url(url).render_as_string(hide_password=True)


class StoreBase:
    """The connections and statements the store's parts (submissions, rounds, reads) share."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = dialect_for(engine.url.render_as_string(hide_password=False))
        self.sql: Statements = statements_for(self.dialect)
        # Write transactions take SQLite's write lock at BEGIN (see sqlite.py); PostgreSQL ignores it.
        self._writer = engine.execution_options(**{sqlite.BEGIN_OPTION: "IMMEDIATE"})
        # PostgreSQL runs a statement alone as a transaction of its own: the claim needs no
        # BEGIN and COMMIT around it, two round trips of three.
        self._single_statement = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._claim = DriverSql(text(self.dialect.claim_sql), engine)
        self._claim_pinned = DriverSql(text(self.dialect.claim_sql_pinned), engine)
        self._claims: dict[tuple[tuple[str, ...], bool], DriverSql] = {}

    def claim_statement(self, queues: tuple[str, ...] | None, pinned: bool) -> DriverSql:
        """The claim of a replica serving `queues` (None: all), compiled once per shape."""
        if queues is None:
            return self._claim_pinned if pinned else self._claim
        found = self._claims.get((queues, pinned))
        if found is None:
            found = DriverSql(text(self.dialect.claim_for(queues, pinned)), self.engine)
            self._claims[(queues, pinned)] = found
        return found

    @property
    def overlaps_writes(self) -> bool:
        """Whether one round's commit may run while the next round claims: PostgreSQL's row locks
        let them; SQLite's one write lock would make the claim wait behind the commit."""
        return self.dialect is postgres.DIALECT


class DriverSql:
    """A `text()` statement compiled once to the driver's own SQL and positional parameters.

    The claim returns whole rows for a batch; executed through SQLAlchemy, each row went through
    its result processing. The SQL is the dialect's, unchanged (tests read it from there).
    """

    __slots__ = ("names", "sql")

    def __init__(self, statement: TextClause, engine: AsyncEngine) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        self.sql = compiled.string
        self.names = tuple(compiled.positiontup or ())

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(values[name] for name in self.names)


class Aiosqlite:
    """The aiosqlite connection under a SQLAlchemy one, for a round's statements on SQLite.

    Each call to aiosqlite is a hop to its thread and back: through SQLAlchemy a statement took
    four (cursor, execute, fetch, close), straight to aiosqlite one, about 14 hops fewer a round.
    sqlite3's errors are raised as SQLAlchemy's, as every other statement of the store raises them
    (and the store's edge translates them all alike, see `guard.py`).
    """

    __slots__ = ("_driver",)

    def __init__(self, driver: Any) -> None:
        self._driver = driver

    @classmethod
    async def of(cls, conn: AsyncConnection) -> Aiosqlite:
        return cls((await conn.get_raw_connection()).driver_connection)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run `sql` once per row; the number of rows it changed."""
        try:
            return int((await self._driver.executemany(sql, rows)).rowcount)
        except sqlite3.Error as err:
            raise DBAPIError.instance(sql, None, err, sqlite3.Error) from err

    async def fetchall(self, sql: str, parameters: Sequence[Any]) -> Sequence[Any]:
        try:
            rows: Sequence[Any] = await self._driver.execute_fetchall(sql, parameters)
            return rows
        except sqlite3.Error as err:
            raise DBAPIError.instance(sql, parameters, err, sqlite3.Error) from err
