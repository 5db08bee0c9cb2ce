"""Runs the Alembic migrations against a store, from the CLI or when the daemon starts.

Every CLI command checks the schema before it reads, so the check that it is current must be cheap:
the head is read from the migration files' `revision`/`down_revision` lines and the current revision
from `alembic_version` with one query, and Alembic itself (about a fifth of a command's start-up) is
imported only to migrate, or when a migration file does not read as one plain chain.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect, text
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


if TYPE_CHECKING:
    from alembic.config import Config

_ASSIGNED = re.compile(r"^(?P<name>revision|down_revision)\s*(?::[^=]*)?=\s*(?P<value>.+?)\s*$", re.MULTILINE)


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str | None:
    head = _scanned_head()
    if head is not None:
        return head
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def _scanned_head() -> str | None:
    """The head of the migration files read as text, or None when Alembic must be asked.

    Only a plain chain is trusted: every file names its revision and its one parent as string
    literals (or None for the first), and exactly one revision is no file's parent. Anything else
    (a merge, a branch, a computed value) falls back to Alembic, which is always right."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        if path.name.startswith("_"):
            continue
        found = {m["name"]: m["value"] for m in _ASSIGNED.finditer(path.read_text(encoding="utf-8"))}
        written_parent = found.get("down_revision")
        revision, parent = _literal(found.get("revision")), _literal(written_parent)
        if not isinstance(revision, str) or parent is False or written_parent is None:
            return None
        revisions.add(revision)
        if isinstance(parent, str):
            parents.add(parent)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


def _literal(value: str | None) -> str | bool | None:
    """A quoted string's text; None for `None`; False for anything else."""
    if value is None or value == "None":
        return None
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" and value[0] not in value[1:-1]:
        return value[1:-1]
    return False


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    def _upgrade(connection: Any) -> None:
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})"))
        from alembic import command

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
        # What Alembic's MigrationContext.get_current_revision reads, without importing Alembic.
        if not inspect(connection).has_table("alembic_version"):
            return None
        rows = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        if len(rows) > 1:  # several heads: Alembic's own answer (an error naming them)
            from alembic.runtime.migration import MigrationContext

            return MigrationContext.configure(connection).get_current_revision()
        return str(rows[0]) if rows else None

    with guarded:
        async with engine.connect() as connection:
            return await connection.run_sync(_current)
