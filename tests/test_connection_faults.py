"""Connections that die (issue 21), on a real PostgreSQL, one store in the test's own database.

A session ended by the server (`pg_terminate_backend`) must never be used again: the pool
discards it, and the next call connects afresh without the caller noticing. A submission whose
connection dies is retried without ever being stored twice, and when its retries run out the
error says whether it was stored. The daemon process under a minute of such kills is
`test_connection_faults_process.py`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.util import await_

from executor.store import Store, StoreUnavailable, Submission, SubmissionFailed, submissions
from executor.store.guard import session_over

pytestmark = pytest.mark.anyio

VICTIM = "executor-test-victim"


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[Store]:
    store = Store.from_url(postgres_url, application_name=VICTIM)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def admin(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(_dsn(postgres_url))
    try:
        yield conn
    finally:
        await conn.close()


async def _terminate_victims(admin: asyncpg.Connection) -> int:
    """End every session of the store under test, waiting until each has exited."""
    killed: int = await admin.fetchval(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
        "WHERE application_name = $1 AND datname = current_database()",
        VICTIM,
    )
    return killed


async def _stored(admin: asyncpg.Connection) -> list[tuple[str, int]]:
    """Every execution and its number of events."""
    rows = await admin.fetch(
        "SELECT e.id, (SELECT count(*) FROM events v WHERE v.execution_id = e.id) AS n "
        "FROM executions e ORDER BY e.id"
    )
    return [(row["id"], row["n"]) for row in rows]


def _kill_before_commit(store: Store, admin: asyncpg.Connection, times: int) -> Callable[[], int]:
    """Terminate the session of each of the next `times` commits just before COMMIT is sent: the
    statements ran, the commit is under way, and the connection dies. Returns how many it killed."""
    killed = 0

    def before_commit(conn: Any) -> None:
        nonlocal killed
        if killed >= times:
            return
        killed += 1
        pid = conn.connection.driver_connection.get_server_pid()
        assert await_(admin.fetchval("SELECT pg_terminate_backend($1, 5000)", pid))

    event.listen(store.engine.sync_engine, "commit", before_commit)
    return lambda: killed


async def test_the_application_name_tells_the_stores_connections_apart(
    store: Store, admin: asyncpg.Connection
) -> None:
    await store.ping()
    names = await admin.fetch(
        "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
    )
    assert VICTIM in {row["application_name"] for row in names}


async def test_a_connection_whose_session_was_ended_is_never_handed_out_again(
    store: Store, admin: asyncpg.Connection
) -> None:
    """Before: the pool's pre-ping found asyncpg still consuming the FATAL error and raised
    `InternalClientError: cannot switch to state ...; another operation (2) is in progress` to the
    caller, leaving the connection in the pool. Now each call after a kill just works."""
    pids = set()
    for _ in range(10):
        await store.submit(Submission("echo"), now=time.time())
        pids.update(
            row["pid"]
            for row in await admin.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1", VICTIM
            )
        )
        assert await _terminate_victims(admin) >= 1
    await store.submit(Submission("echo"), now=time.time())
    assert len(pids) >= 10  # a fresh session after every kill
    assert len(await _stored(admin)) == 11


def _track_broken_reuse(store: Store) -> list[object]:
    """Every time the pool hands out a connection that an error already showed dead (its session
    ended, asyncpg's protocol lost), appended to the returned list."""
    broken: list[object] = []
    reused: list[object] = []

    @event.listens_for(store.engine.sync_engine, "handle_error")
    def seen(context: Any) -> None:
        if context.connection is not None and session_over(context.original_exception):
            broken.append(context.connection.connection.dbapi_connection)

    @event.listens_for(store.engine.sync_engine.pool, "checkout")
    def handed_out(dbapi_connection: object, *_: object) -> None:
        if any(dbapi_connection is dead for dead in broken):
            reused.append(dbapi_connection)

    return reused


async def test_under_kills_no_driver_error_escapes_and_no_dead_connection_is_reused(
    store: Store, admin: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads, lease releases and submissions (here not retried) while the store's sessions are
    killed every 50 ms: each failure is the store's `StoreUnavailable` (a raw asyncpg
    `InterfaceError` escaped from a new connection's set-up before), and says the connection was
    lost, asyncpg's "cannot switch to state ..." included (before, that one was "the database
    failed", its connection left in the pool); the pool never hands out a connection an error
    showed dead, and once the kills stop every call succeeds."""
    monkeypatch.setattr(submissions, "SUBMIT_ATTEMPTS", 1)
    reused = _track_broken_reuse(store)
    failures: list[str] = []
    calls = 0

    async def call_until(stop: anyio.Event, kind: int) -> None:
        nonlocal calls
        while not stop.is_set():
            calls += 1
            try:
                if kind == 0:
                    await store.get("no-such-id")
                elif kind == 1:
                    await store.release_leases("token", ["no-such-id"])
                else:
                    await store.submit(Submission("echo"), now=time.time())
            except StoreUnavailable as err:
                failures.append(str(err))

    stop = anyio.Event()
    async with anyio.create_task_group() as group:
        for worker in range(8):
            group.start_soon(call_until, stop, worker % 3)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                VICTIM,
            )
            await anyio.sleep(0.01)
        stop.set()
    assert calls > 100
    assert failures, "no kill landed mid-call: the test proved nothing"
    assert [f for f in failures if not f.startswith("the connection to the database was lost: ")] == []
    assert reused == []
    for _ in range(20):
        assert await store.get("no-such-id") is None


async def test_a_session_ended_mid_transaction_is_discarded_and_reported_as_lost(
    store: Store, admin: asyncpg.Connection
) -> None:
    """Outside a submission (here a lease release, which is not retried), the error is the store's
    own and says the connection was lost; the next call gets a fresh connection."""
    _kill_before_commit(store, admin, times=1)
    with pytest.raises(StoreUnavailable, match="the connection to the database was lost"):
        await store.release_leases("token", ["some-id"])
    await store.release_leases("token", ["some-id"])  # the dead connection is gone from the pool


async def test_a_submission_whose_connection_dies_at_commit_is_retried_and_stored_once(
    store: Store, admin: asyncpg.Connection
) -> None:
    killed = _kill_before_commit(store, admin, times=2)
    ids = await store.submit_many(
        [Submission("echo"), Submission("echo", idempotency_key="k")], now=time.time()
    )
    assert killed() == 2
    assert await _stored(admin) == sorted((i, 1) for i in ids)


async def test_a_retry_after_a_commit_of_unknown_outcome_finds_it_stored(
    store: Store, admin: asyncpg.Connection
) -> None:
    """The connection died after the database committed (the caller could not know): the retry
    looks for the ids drawn before the first attempt, finds them, and stores nothing again."""
    batch = [Submission("echo"), Submission("echo")]
    ids = await store.submit_many(batch, now=time.time())
    # What the retry of that same call does, its ids drawn before the first attempt.
    again = await store._submit_once(batch, ids, [time.time()] * len(batch), True, submissions._Attempt())
    assert again == ids
    assert await _stored(admin) == sorted((i, 1) for i in ids)


async def test_when_retries_run_out_at_commit_the_error_says_it_may_be_stored(
    store: Store, admin: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(submissions, "FIRST_RETRY_PAUSE", 0.001)
    killed = _kill_before_commit(store, admin, times=submissions.SUBMIT_ATTEMPTS)
    with pytest.raises(SubmissionFailed) as failed:
        await store.submit(Submission("echo"), now=time.time())
    assert killed() == submissions.SUBMIT_ATTEMPTS
    assert failed.value.stored is None
    (execution_id,) = failed.value.execution_ids
    assert "whether it was stored is unknown" in str(failed.value)
    assert execution_id in str(failed.value)
    # How the message says to find out: looked up, it is not there (the kills came before COMMIT).
    assert await store.get(execution_id) is None


async def test_when_the_database_is_away_the_error_says_nothing_was_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(submissions, "FIRST_RETRY_PAUSE", 0.001)
    store = Store.from_url("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")
    try:
        with pytest.raises(SubmissionFailed, match="nothing was stored; submitting again is safe") as failed:
            await store.submit(Submission("echo"), now=time.time())
    finally:
        await store.close()
    assert failed.value.stored is False
    assert isinstance(failed.value, StoreUnavailable)  # callers that retry outages retry it


def test_which_errors_end_a_connection() -> None:
    over = [
        asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        ConnectionResetError("reset by peer"),
    ]
    usable = [
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.SerializationError("could not serialize access"),
        ValueError("not the database's"),
    ]
    assert [session_over(err) for err in over] == [True] * len(over)
    assert [session_over(err) for err in usable] == [False] * len(usable)


async def test_the_api_answers_a_failed_submission_with_whether_it_was_stored(
    store: Store, admin: asyncpg.Connection, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.http_support import serve_app

    monkeypatch.setattr(submissions, "FIRST_RETRY_PAUSE", 0.001)
    served = await serve_app(store, postgres_url)
    _kill_before_commit(store, admin, times=submissions.SUBMIT_ATTEMPTS)
    response = await served.http.post("/api/v1/executions", json={"task_type": "echo", "inputs": {}})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "store_unavailable"
    assert "whether it was stored is unknown" in error["message"]
    (verdict,) = error["details"]
    assert verdict["stored"] is None
    (execution_id,) = verdict["execution_ids"]
    assert execution_id in error["message"]
    # As the message says: looked up, it is not there (the kills came before COMMIT).
    assert (await served.http.get(f"/api/v1/executions/{execution_id}")).status_code == 404
