"""Runs the Alembic migrations against a store, from the CLI or when the daemon starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from executor.store.guard import guarded
from executor.store.sqlite import BEGIN_OPTION

_PACKAGE = Path(__file__).resolve().parent.parent
#: A wheel carries the migrations inside the package; a source checkout has them at the top.
MIGRATIONS_DIR = next(
    (
        path
        for path in (_PACKAGE / "_migrations", _PACKAGE.parent / "migrations")
        if (path / "env.py").is_file()
    ),
    _PACKAGE.parent / "migrations",
)

#: Serialises concurrent migrations from replicas starting at once (PostgreSQL advisory lock key).
_MIGRATION_LOCK_KEY = 0x6578_6563  # "exec"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    def _upgrade(connection: Any) -> None:
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})"))
        config = _config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    # One transaction for the whole upgrade, begun before Alembic reads the current revision. On
    # SQLite it must take the write lock at BEGIN (IMMEDIATE): replicas starting together would
    # otherwise each read "no revision" and then fail with "database is locked" when one of them
    # writes (see sqlite.py); on PostgreSQL the advisory lock above serialises them.
    with guarded:
        async with engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"}).connect() as connection:
            await connection.begin()
            await connection.run_sync(_upgrade)
            await connection.commit()


async def current_revision(engine: AsyncEngine) -> str | None:
    def _current(connection: Any) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    with guarded:
        async with engine.connect() as connection:
            return await connection.run_sync(_current)
