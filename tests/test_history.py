"""History on real stores (SQLite and PostgreSQL): the label filter of every listing, pruning
past retention, requeueing a failed or aborted execution, the failures view.

Rows are finished the way the loop finishes them (claim, `commit_round` under the token, a
second commit for the clean-up), as in tests/test_store.py.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from executor.client import Client, SubmissionError
from executor.core import ErrorKind, ExecutionError, Phase
from executor.core.records import RecordUpdate
from executor.history.requeue import refusal, requeued
from executor.history.retention import prune
from executor.history.service import History, RetryOutcome
from executor.store import Store, Submission
from tests.test_store import TTL, moved

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0


async def finish(
    store: Store,
    ids: list[str],
    phase: Phase,
    at: float,
    *,
    finalize: bool = True,
    code: str | None = None,
    reason: str | None = None,
) -> None:
    """End each of `ids` in `phase` at `at`, as a round would (and clean it up, `finalize`)."""
    token = f"t{int(at * 1000) % 10**12}-{int(phase)}"
    claimed = await store.claim(owner="a", token=token, limit=1000, lease_ttl=TTL, now=at + 1e6, lease_now=at)
    records = [r for r in claimed if r.id in ids]
    assert sorted(r.id for r in records) == sorted(ids)
    await store.release_leases(token, [r.id for r in claimed if r.id not in ids])
    error = ExecutionError(code, f"failed with {code}", ErrorKind.USER) if code else None
    updates = [moved(r, phase, at, reason=reason or code, error=error) for r in records]
    await store.commit_round(token, updates, now=at)
    if finalize:
        await store.commit_round(
            token, [RecordUpdate(replace(u.record, finalized=True)) for u in updates], now=at
        )


async def submit(
    store: Store, count: int, *, labels: dict[str, str] | None = None, at: float = T0
) -> list[str]:
    return [await store.submit(Submission("echo", labels=labels or {}), now=at) for _ in range(count)]


# -- the label filter ----------------------------------------------------------------------------


async def test_list_filters_by_every_label_given(store: Store) -> None:
    client = Client(store)
    [nightly] = await submit(store, 1, labels={"schedule": "nightly", "team": "a"})
    [hourly] = await submit(store, 1, labels={"schedule": "hourly", "team": "a"})
    [odd] = await submit(store, 1, labels={'we"ird.key': "%_"})
    await submit(store, 1)

    async def ids(**labels: str) -> list[str]:
        return [r.id for r in await client.list_executions(labels=labels)]

    assert await ids(schedule="nightly") == [nightly]
    assert sorted(await ids(team="a")) == sorted([nightly, hourly])
    assert await ids(team="a", schedule="hourly") == [hourly]
    assert await ids(team="b") == []
    assert await ids(**{'we"ird.key': "%_"}) == [odd]
    with pytest.raises(SubmissionError, match="labels"):
        await client.list_executions(labels={"": "x"})


# -- pruning -------------------------------------------------------------------------------------


async def test_prune_deletes_only_finished_cleaned_up_rows_past_their_cutoff(store: Store) -> None:
    old_ok = await submit(store, 5)
    await finish(store, old_ok, Phase.SUCCESS, T0 + 10)
    old_failed = await submit(store, 3, at=T0 + 11)
    await finish(store, old_failed, Phase.PERMANENT_FAILURE, T0 + 20, code="Boom")
    unfinalized = await submit(store, 2, at=T0 + 21)
    await finish(store, unfinalized, Phase.SUCCESS, T0 + 30, finalize=False)
    recent_ok = await submit(store, 2, at=T0 + 31)
    await finish(store, recent_ok, Phase.SUCCESS, T0 + 1000)
    queued = await submit(store, 4, at=T0 + 2)  # old, never finished

    cutoffs = {Phase.SUCCESS: T0 + 500, Phase.PERMANENT_FAILURE: T0 + 500}
    dry = await prune(store, cutoffs, batch=2, dry_run=True)
    assert dry.deleted == {Phase.SUCCESS: 5, Phase.PERMANENT_FAILURE: 3}
    assert len(await store.list_executions(limit=100)) == 16  # a dry run deletes nothing

    report = await prune(store, cutoffs, batch=2, rest=False)
    assert report.deleted == {Phase.SUCCESS: 5, Phase.PERMANENT_FAILURE: 3} and not report.busy
    left = {r.id for r in await store.list_executions(limit=100)}
    assert left == set(unfinalized + recent_ok + queued)
    for gone in old_ok + old_failed:
        assert await store.events(gone) == []
    for kept in left:
        assert await store.events(kept)
    assert (await prune(store, cutoffs, batch=2)).total == 0


async def test_only_one_replica_prunes_at_a_time(store: Store) -> None:
    from executor.store.history import HistoryQueries

    first, second = HistoryQueries(store), HistoryQueries(store)
    async with first.prune_lease() as held:
        assert held
        async with second.prune_lease() as also:
            # PostgreSQL: the advisory lock is taken; SQLite: its write lock serialises batches.
            assert also is (store.dialect.name == "sqlite")
            if not also:
                assert (await prune(store, {Phase.SUCCESS: T0}, batch=10)).busy
    async with second.prune_lease() as held:
        assert held


# -- requeue -------------------------------------------------------------------------------------


async def test_retry_runs_a_failed_execution_again_as_a_new_attempt_keeping_its_history(store: Store) -> None:
    history = History(Client(store))
    [failed] = await submit(store, 1)
    await finish(store, [failed], Phase.PERMANENT_FAILURE, time.time(), code="Boom")
    before = await store.events(failed)

    result = await history.retry(failed, by="alice")
    assert result.outcome is RetryOutcome.REQUEUED, result.message
    record = result.record
    assert record is not None
    assert (record.phase, record.attempt, record.finalized, record.error) == (Phase.QUEUED, 2, False, None)
    assert record.max_attempts == 2 and record.finished_at is None
    events = await store.events(failed)
    assert events[: len(before)] == before
    assert events[-1].phase is Phase.QUEUED and events[-1].attempt == 2
    assert events[-1].reason == "Requeued by alice" and events[-1].info is not None
    assert events[-1].info["previous_error_code"] == "Boom"
    # It is claimable again.
    claimed = await store.claim(owner="b", token="t2", limit=10, lease_ttl=TTL, now=time.time() + 1)
    assert [r.id for r in claimed] == [failed]
    # Now running: a second retry is refused, with the reason.
    again = await history.retry(failed, by="alice")
    assert again.outcome is RetryOutcome.REFUSED and "still running" in again.message


async def test_retry_is_refused_for_running_succeeded_or_uncleaned_and_unknown(store: Store) -> None:
    history = History(Client(store))
    [queued, succeeded, uncleaned] = await submit(store, 3)
    await finish(store, [succeeded], Phase.SUCCESS, T0 + 5)
    await finish(store, [uncleaned], Phase.ABORTED, T0 + 6, finalize=False)
    for execution_id, words in (
        (queued, "still running (QUEUED)"),
        (succeeded, "it succeeded"),
        (uncleaned, "clean-up has not run"),
    ):
        result = await history.retry(execution_id, by="x")
        assert result.outcome is RetryOutcome.REFUSED and words in result.message
        assert (await store.get(execution_id)) == result.record  # unchanged
    assert (await history.retry("no-such-id", by="x")).outcome is RetryOutcome.NOT_FOUND


async def test_bulk_retry_with_filters_and_dry_run(store: Store) -> None:
    history = History(Client(store))
    team_a = await submit(store, 3, labels={"team": "a"})
    team_b = await submit(store, 2, labels={"team": "b"})
    await finish(store, team_a[:2] + team_b, Phase.PERMANENT_FAILURE, T0 + 5, code="Boom")
    await finish(store, team_a[2:], Phase.ABORTED, T0 + 6, reason="Aborted by user")

    selection = history.selection(labels={"team": "a"})
    dry = await history.retry_many(selection, by="x", dry_run=True)
    assert (dry.matched, dry.requeued, sorted(dry.ids)) == (3, 0, sorted(team_a))
    phases = {r.id: r.phase for r in await store.list_executions(limit=100)}
    assert all(phases[i] is not Phase.QUEUED for i in team_a)

    aborted = await history.retry_many(history.selection(phases=["aborted"], labels={"team": "a"}), by="x")
    assert (aborted.matched, aborted.requeued, aborted.ids) == (1, 1, team_a[2:])
    by_code = await history.retry_many(history.selection(error_code="Boom"), by="x")
    assert sorted(by_code.ids) == sorted(team_a[:2] + team_b)
    with pytest.raises(SubmissionError, match="only PERMANENT_FAILURE or ABORTED"):
        await history.retry_many(history.selection(phases=["SUCCESS"]), by="x")
    with pytest.raises(SubmissionError, match="unknown phase"):
        history.selection(phases=["FINISHED"])


def test_requeued_drops_a_deadline_that_has_passed() -> None:
    from executor.core.records import ExecutionRecord

    record = ExecutionRecord(
        "x", "echo", {}, Phase.ABORTED, 0, T0, T0, finalized=True, deadline_at=T0 + 5, event_seq=3
    )
    assert refusal(record) is None
    after, event = requeued(record, T0 + 10, "bob")
    assert after.deadline_at is None and event.seq == 4 and after.event_seq == 4
    kept, _ = requeued(record, T0 + 1, "bob")
    assert kept.deadline_at == T0 + 5


# -- failures ------------------------------------------------------------------------------------


async def test_failures_counts_per_code_and_filters_by_code_and_reason(store: Store) -> None:
    history = History(Client(store))
    boom = await submit(store, 3)
    await finish(store, boom, Phase.PERMANENT_FAILURE, T0 + 5, code="Boom")
    [bang] = await submit(store, 1, at=T0 + 6)
    await finish(store, [bang], Phase.PERMANENT_FAILURE, T0 + 7, code="Bang", reason="disk 100% full")
    [aborted] = await submit(store, 1, at=T0 + 8)
    await finish(store, [aborted], Phase.ABORTED, T0 + 9, reason="Aborted by user")
    [ok] = await submit(store, 1, at=T0 + 10)
    await finish(store, [ok], Phase.SUCCESS, T0 + 11)

    everything = await history.failures(history.selection())
    counts = [(c.phase, c.error_code, c.count) for c in everything.counts]
    assert counts == [
        (Phase.PERMANENT_FAILURE, "Boom", 3),
        (Phase.PERMANENT_FAILURE, "Bang", 1),
        (Phase.ABORTED, None, 1),
    ]
    assert {r.id for r in everything.executions} == {*boom, bang, aborted}
    by_code = await history.failures(history.selection(error_code="Bang"))
    assert [r.id for r in by_code.executions] == [bang]
    by_reason = await history.failures(history.selection(reason="100% full"))
    assert [r.id for r in by_reason.executions] == [bang]
    assert (await history.failures(history.selection(reason="100_ full"))).executions == []


def test_retention_settings_keep_unset_and_zero_phases_forever() -> None:
    from executor.history import retention_of
    from executor.settings import SettingsError, load_settings

    settings = load_settings(retain_success="7d", retain_failed="0", prune_batch=100)
    assert retention_of(settings) == {Phase.SUCCESS: 7 * 86400.0}
    assert retention_of(load_settings()) == {}
    with pytest.raises(SettingsError, match="EXECUTOR_PRUNE_BATCH"):
        load_settings(prune_batch=0)
