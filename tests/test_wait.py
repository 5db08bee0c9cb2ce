"""Waiting for an answer: `Client.wait`, over the store's one watch per process (store/waits.py).

In process, on both stores: a wait is answered when a real loop's round finishes the execution,
at once when it is already final, with `ExecutionNotFoundError` for an unknown id and
`WaitTimeoutError` (naming the phase it was left in) when time runs out; many waiters of one
process share one listener and a handful of reads. The real daemon process, the CLI's exit codes
and the 1,000 waiters are in tests/test_wait_process.py; the API's long-poll in
tests/test_wait_http.py.
"""

from __future__ import annotations

import functools
import time

import anyio
import pytest
from http_support import load, poll

from executor.app.parts import client_for
from executor.client import Client, ExecutionNotFoundError, SubmissionError, WaitTimeoutError
from executor.core import Phase
from executor.core.records import ExecutionRecord
from executor.runtime import Reconciler
from executor.settings import load_settings
from executor.store import Store, Submission

pytestmark = pytest.mark.anyio


async def _parts(store: Store, database_url: str) -> tuple[Client, Reconciler]:
    settings = load_settings(database_url=database_url, poll_interval="200ms")
    plugins = await load(settings)
    return client_for(settings, store, plugins.resolver), Reconciler(store, plugins, settings)


async def waiters(store: Store, count: int) -> None:
    """Until `count` waiters wait (with a deadline)."""

    async def waiting() -> int:
        return store.finish_watch.waiting

    await poll(waiting, lambda found: found >= count)


async def test_a_wait_is_answered_by_the_round_that_finishes_the_execution(
    store: Store, database_url: str
) -> None:
    client, reconciler = await _parts(store, database_url)
    ok = await client.submit("echo", {"answer": 42})
    failing = await client.submit("core-sleep", {"duration": "not a duration"})
    answers: dict[str, ExecutionRecord] = {}

    async def wait(execution_id: str) -> None:
        answers[execution_id] = await client.wait(execution_id, timeout="30s")

    async with anyio.create_task_group() as group:
        group.start_soon(wait, ok)
        group.start_soon(wait, failing)
        group.start_soon(wait, ok)  # two waiters of one id: both answered
        await waiters(store, 3)
        assert not answers  # nothing has run yet: nobody was answered
        await reconciler.run_round()
        committed = time.monotonic()
    # Answered by the commit's wake-up, not by the safety net's read every 5 s.
    assert time.monotonic() - committed < store.finish_watch.recheck
    assert answers[ok].phase is Phase.SUCCESS
    assert answers[ok].outputs == {"answer": 42}
    assert answers[failing].phase is Phase.PERMANENT_FAILURE
    assert answers[failing].error is not None and answers[failing].error.code == "InvalidInput"
    assert store.finish_watch.waiting == 0


async def test_a_final_execution_answers_at_once_and_an_unknown_id_is_not_found(
    store: Store, database_url: str
) -> None:
    client, reconciler = await _parts(store, database_url)
    done = await client.submit("echo", {"x": 1})
    await reconciler.run_round()
    started = time.monotonic()
    record = await client.wait(done)
    assert record.phase is Phase.SUCCESS and record.outputs == {"x": 1}
    with pytest.raises(ExecutionNotFoundError, match="no execution with id nope"):
        await client.wait("nope", timeout=5)
    with pytest.raises(ExecutionNotFoundError):
        await client.wait("")  # no execution can have it: not asked of the database
    assert time.monotonic() - started < 5  # neither waited for a timeout


async def test_a_wait_that_runs_out_of_time_says_where_the_execution_stands(
    store: Store, database_url: str
) -> None:
    client, _ = await _parts(store, database_url)
    queued = await client.submit("echo")
    with pytest.raises(
        WaitTimeoutError, match=rf"execution {queued} did not finish within 0.2s \(still QUEUED\)"
    ) as caught:
        await client.wait(queued, timeout="200ms")
    assert caught.value.record is not None and caught.value.record.phase is Phase.QUEUED
    assert isinstance(caught.value, TimeoutError)
    assert store.finish_watch.waiting == 0


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("soon", "timeout: "),
        (0, "timeout must be a positive duration, got 0s"),
        (-1, "timeout must be a positive duration"),
        (True, "timeout must be a positive duration"),
        (1e12, "timeout must be at most 100 years"),
    ],
)
async def test_a_bad_timeout_is_refused_in_the_submission_words(
    store: Store, database_url: str, given: object, message: str
) -> None:
    client, _ = await _parts(store, database_url)
    execution_id = await client.submit("echo")
    with pytest.raises(SubmissionError, match=message) as caught:
        await client.wait(execution_id, timeout=given)  # type: ignore[arg-type]
    assert caught.value.field == "timeout"


async def test_many_waiters_share_one_watch_and_a_handful_of_reads(store: Store, database_url: str) -> None:
    client, reconciler = await _parts(store, database_url)
    ids = await client.submit_many([Submission("echo", {"n": n}) for n in range(200)])
    answers: dict[str, Phase] = {}

    async def wait(execution_id: str) -> None:
        answers[execution_id] = (await client.wait(execution_id, timeout=60)).phase

    async with anyio.create_task_group() as group:
        for execution_id in ids:
            group.start_soon(wait, execution_id)
        await waiters(store, len(ids))
        reads_before = store.finish_watch.reads
        while len(answers) < len(ids):
            await reconciler.run_round()
            await anyio.sleep(0.01)
    assert set(answers.values()) == {Phase.SUCCESS}
    # One read per wake-up (and one more for the new ids' existence), whatever the waiters' number.
    assert store.finish_watch.reads - reads_before < 40, store.finish_watch.reads


async def test_closing_the_store_ends_a_wait_with_a_clear_error(database_url: str) -> None:
    from executor.store import StoreUnavailable
    from executor.store.migrate import upgrade

    store = Store.from_url(database_url)
    await upgrade(store.engine)
    client, _ = await _parts(store, database_url)
    queued = await client.submit("echo")
    failure: list[BaseException] = []

    async def wait() -> None:
        try:
            await client.wait(queued, timeout=30)
        except StoreUnavailable as err:
            failure.append(err)

    async with anyio.create_task_group() as group:
        group.start_soon(wait)
        await waiters(store, 1)
        await store.close()
    assert failure and "closed" in str(failure[0])


async def test_the_commit_that_finishes_executions_announces_each_once(postgres_url: str) -> None:
    """On PostgreSQL the round's commit notifies `executor_finished` with the ids it moved into a
    final phase, in its own transaction (nothing else: not the unfinished, not a later commit)."""
    import asyncpg
    from sqlalchemy.engine import make_url

    store = Store.from_url(postgres_url)
    url = make_url(postgres_url)
    listener = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, database=url.database
    )
    received: list[str] = []
    await listener.add_listener("executor_finished", lambda *args: received.append(args[3]))
    try:
        client, reconciler = await _parts(store, postgres_url)
        finishing = await client.submit_many([Submission("echo", {"n": n}) for n in range(300)])
        sleeping = await client.submit("core-sleep", {"duration": "1h"})
        failing = await client.submit("core-sleep", {"duration": "not a duration"})
        await reconciler.run_round()
        await reconciler.run_round()

        async def announced() -> list[str]:
            return [i for payload in received for i in payload.split(",")]

        found = await poll(announced, lambda ids: len(ids) >= len(finishing) + 1)
        assert sorted(found) == sorted([*finishing, failing])  # each once; not the one still sleeping
        assert sleeping not in found
        assert all(len(payload.encode()) < 8000 for payload in received) and len(received) >= 2
    finally:
        await listener.close()
        await store.close()


async def test_a_watch_stops_without_waiters_and_starts_again_for_the_next(
    store: Store, database_url: str
) -> None:
    from executor.store.waits import FinishWatch

    store._finish_watch = FinishWatch(store, linger=0.05)
    client, reconciler = await _parts(store, database_url)
    first = await client.submit("echo", {"n": 1})
    await reconciler.run_round()
    assert (await client.wait(first, timeout=10)).outputs == {"n": 1}
    task = store.finish_watch._task
    assert task is not None

    async def stopped() -> bool:
        return task.done()

    await poll(stopped, bool)  # its listener's connection closed
    second = await client.submit("echo", {"n": 2})
    async with anyio.create_task_group() as group:
        group.start_soon(functools.partial(client.wait, second, timeout=10))
        await waiters(store, 1)
        await reconciler.run_round()
    assert store.finish_watch.waiting == 0
