"""Shared fixtures: a real store on a SQLite file in a temp dir, and on PostgreSQL.

PostgreSQL tests read EXECUTOR_TEST_POSTGRES_URL (`make test` sets it when the server answers).
Each test gets a database of its own, copied from a template migrated once per session, so tests
never see each other's rows and cost one CREATE DATABASE each. In CI the variable must be set:
a CI run that silently skipped PostgreSQL would prove nothing.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.engine import make_url

from executor.store import Store
from executor.store.migrate import upgrade

if TYPE_CHECKING:
    from tests.test_daemon_process import Daemon
    from tests.webapi_support import JobServer

POSTGRES_URL = os.environ.get("EXECUTOR_TEST_POSTGRES_URL")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _pg_admin(statements: list[str]) -> None:
    import asyncpg

    url = make_url(POSTGRES_URL or "")

    async def go() -> None:
        conn = await asyncpg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            database=url.database,
        )
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(go())


def postgres_database_url(name: str) -> str:
    return make_url(POSTGRES_URL or "").set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A database migrated to head, used as the template of every test's database."""
    if not POSTGRES_URL:
        if os.environ.get("CI"):
            pytest.fail("EXECUTOR_TEST_POSTGRES_URL is not set in CI: PostgreSQL tests must run")
        pytest.skip("EXECUTOR_TEST_POSTGRES_URL is not set")
    name = f"executor_tpl_{uuid.uuid4().hex[:12]}"
    _pg_admin([f'CREATE DATABASE "{name}"'])

    async def migrate() -> None:
        store = Store.from_url(postgres_database_url(name))
        try:
            await upgrade(store.engine)
        finally:
            await store.close()

    asyncio.run(migrate())
    yield name
    _pg_admin([f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'])


@pytest.fixture
def postgres_url(postgres_template: str) -> Iterator[str]:
    name = f"executor_t_{uuid.uuid4().hex[:16]}"
    _pg_admin([f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}" STRATEGY FILE_COPY'])
    yield postgres_database_url(name)
    _pg_admin([f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'])


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/executor.db"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Every store test runs on both dialects."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return str(request.getfixturevalue("sqlite_url"))


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = Store.from_url(database_url)
    await upgrade(store.engine)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def server() -> Iterator[JobServer]:
    """A local HTTP job service for the remote-service plugin tests (see tests/webapi_support.py)."""
    from tests.webapi_support import JobServer

    job_server = JobServer().start()
    try:
        yield job_server
    finally:
        job_server.stop()


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Daemon]]:
    """Starts real `executor run` processes (see `tests/test_daemon_process.Daemon`); any still
    running when the test ends is killed."""
    from tests.test_daemon_process import Daemon

    started: list[Daemon] = []

    def start(env: dict[str, str]) -> Daemon:
        daemon = Daemon(env, tmp_path, tmp_path / f"daemon-{len(started) + 1}.log")
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()
