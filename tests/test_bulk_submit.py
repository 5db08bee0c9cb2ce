"""Many submissions at once, on both stores: bulk submission through the client (all or nothing,
idempotency per row, more keys than one statement may carry) and the group commit of single
submissions that arrive together (one transaction for many callers, each answered with its own
row's outcome). The three doors' agreement on batches is in tests/test_doors.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from executor.bulk import BulkSubmissionError
from executor.client import Client
from executor.store import Store, Submission
from executor.store.migrate import upgrade
from executor.store.submissions import KEYS_PER_LOOKUP

pytestmark = pytest.mark.anyio


async def test_submit_many_stores_rows_of_every_option_in_one_call(store: Store) -> None:
    client = Client(store)
    later = datetime.now(UTC) + timedelta(hours=1)
    ids = await client.submit_many(
        [
            {"inputs": {"n": 1}},
            {"task_type": "other", "labels": {"team": "a"}, "priority": 5, "timeout": "5s"},
            {"not_before": later.isoformat(), "deadline": 60, "max_attempts": 3},
            Submission("echo", {"n": 4}, backoff_base=1.0, backoff_max=2.0),
        ],
        task_type="echo",
    )
    records = [await store.get(execution_id) for execution_id in ids]
    assert [r.task_type if r else None for r in records] == ["echo", "other", "echo", "echo"]
    first, second, third, fourth = (r for r in records if r is not None)
    assert first.inputs == {"n": 1}
    assert (second.labels, second.priority, second.timeout) == ({"team": "a"}, 5, 5.0)
    assert third.not_before == pytest.approx(later.timestamp()) and third.max_attempts == 3
    assert third.deadline_at == pytest.approx(third.created_at + 60)
    assert (fourth.inputs, fourth.backoff_base, fourth.backoff_max) == ({"n": 4}, 1.0, 2.0)


async def test_a_bad_row_refuses_the_batch_naming_every_bad_row(store: Store) -> None:
    client = Client(store)
    rows = [{"inputs": {"i": i}} for i in range(30)]
    rows[3] = {"inputs": [1]}
    rows[17] = {"priority": "high"}
    rows[20] = {"not_before": "tomorrow"}
    with pytest.raises(BulkSubmissionError) as refused:
        await client.submit_many(rows, task_type="echo")
    assert [(p.row, p.field) for p in refused.value.problems] == [
        (4, "inputs"),
        (18, "priority"),
        (21, "not_before"),
    ]
    assert str(refused.value).startswith(
        "3 of 30 rows refused, nothing stored: row 4: inputs must be a JSON object, not list; "
        "row 18: priority must be an int, not str; row 21: not_before must be an ISO 8601 time"
    )
    assert await store.list_executions() == []


async def test_idempotency_keys_hold_per_row_beyond_one_statements_parameters(store: Store) -> None:
    """More keys than one lookup carries (SQLite takes at most 32,766 parameters a statement)."""
    client = Client(store)
    count = KEYS_PER_LOOKUP * 2 + 7
    rows = [{"idempotency_key": f"key-{i}", "inputs": {"i": i}} for i in range(count)]
    first = await client.submit_many(rows, task_type="echo")
    assert len(set(first)) == count
    again = await client.submit_many([*rows[::-1], {"idempotency_key": "new"}], task_type="echo")
    assert again[:count] == first[::-1]
    assert again[count] not in first
    assert len(await store.list_executions(limit=count + 10)) == count + 1


async def test_single_submissions_arriving_together_are_each_stored_once(store: Store) -> None:
    client = Client(store)
    ids = await asyncio.gather(*(client.submit("echo", {"i": i}) for i in range(60)))
    keyed = await asyncio.gather(*(client.submit("echo", idempotency_key="same") for _ in range(10)))
    assert len(set(ids)) == 60 and len(set(keyed)) == 1
    for i, execution_id in enumerate(ids):
        record = await store.get(execution_id)
        assert record is not None and record.inputs == {"i": i}
    assert len(await store.list_executions(limit=100)) == 61


async def test_a_failing_submission_fails_alone_in_its_group(store: Store) -> None:
    """One row the store cannot encode shares a group with good ones: only its caller gets the
    error, the others their rows."""
    outcomes = await asyncio.gather(
        *(store.submit(Submission("echo", {"i": i}), now=1_000.0) for i in range(10)),
        store.submit(Submission("echo", {"x": float("nan")}), now=1_000.0),
        *(store.submit(Submission("echo", {"i": i}), now=1_000.0) for i in range(10, 20)),
        return_exceptions=True,
    )
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failed) == 1 and isinstance(failed[0], ValueError)
    assert outcomes[10] is failed[0]
    stored = [o for o in outcomes if isinstance(o, str)]
    assert len(set(stored)) == 20
    assert sorted(r.inputs["i"] for r in await store.list_executions(limit=50)) == list(range(20))


async def test_a_cancelled_caller_leaves_its_group_to_commit(store: Store) -> None:
    others = [
        asyncio.ensure_future(store.submit(Submission("echo", {"i": i}), now=1_000.0)) for i in range(5)
    ]
    quitter = asyncio.ensure_future(store.submit(Submission("echo", {"quit": True}), now=1_000.0))
    await asyncio.sleep(0)  # one step: each call has joined the group, which is not written yet
    quitter.cancel()
    ids = await asyncio.gather(*others)
    assert quitter.cancelled()
    assert len(set(ids)) == 5
    assert sorted(r.inputs.get("i", -1) for r in await store.list_executions(limit=10)) == list(range(5))


async def test_submissions_arriving_together_share_transactions_on_postgres(postgres_url: str) -> None:
    """The rows' `xmin` names the transaction that wrote them: 50 callers, a handful of commits."""
    store = Store.from_url(postgres_url)
    await upgrade(store.engine)
    try:
        ids = await asyncio.gather(
            *(store.submit(Submission("echo", {"i": i}), now=1_000.0) for i in range(50))
        )
        async with store.engine.connect() as conn:
            writers = (
                await conn.execute(
                    text("SELECT count(DISTINCT xmin::text) FROM executions WHERE id = ANY(:ids)"),
                    {"ids": list(ids)},
                )
            ).scalar_one()
        assert 1 <= writers <= 5, writers
    finally:
        await store.close()
