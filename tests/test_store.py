"""The store against real databases: every test runs on a SQLite file and on PostgreSQL.

Times are explicit (`T0` and offsets from it), never the wall clock, so lease expiry and due times
are exact: claims pin the lease clock (`lease_now`), which is otherwise the database's. Rounds are
written the way the loop writes them: a claimed record, changed with
`dataclasses.replace`, its events, and `commit_round` under the claim's token.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import select

from executor.core import ErrorKind, ExecutionError, Phase
from executor.core.records import EventRecord, ExecutionRecord, RecordUpdate
from executor.store import AbortResult, CommitResult, Store, StoreRefused, Submission
from executor.store.tables import executions

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0
TTL = 30.0


async def claim(store: Store, token: str, at: float, limit: int = 100, owner: str = "replica-a") -> list[str]:
    return [
        r.id
        for r in await store.claim(owner=owner, token=token, limit=limit, lease_ttl=TTL, now=at, lease_now=at)
    ]


async def claim_one(store: Store, token: str, at: float) -> ExecutionRecord:
    [record] = await store.claim(
        owner="replica-a", token=token, limit=100, lease_ttl=TTL, now=at, lease_now=at
    )
    return record


async def must_get(store: Store, execution_id: str) -> ExecutionRecord:
    record = await store.get(execution_id)
    assert record is not None
    return record


def moved(
    record: ExecutionRecord,
    phase: Phase,
    now: float,
    *,
    reason: str | None = None,
    version: int = 0,
    next_round_at: float | None = None,
    **changes: object,
) -> RecordUpdate:
    """The record after a round that moved it to `phase`, with that move's event."""
    seq = record.event_seq + 1
    new = replace(
        record,
        phase=phase,
        phase_version=version,
        reason=reason,
        event_seq=seq,
        rounds=record.rounds + 1,
        updated_at=now,
        next_round_at=now if next_round_at is None else next_round_at,
        finished_at=now if phase.is_final else None,
        **changes,  # type: ignore[arg-type]
    )
    event = EventRecord(record.id, seq, new.attempt, phase, version, now, reason=reason)
    return RecordUpdate(new, (event,))


async def raw_row(store: Store, execution_id: str) -> dict[str, object]:
    async with store.engine.connect() as conn:
        row = (await conn.execute(select(executions).where(executions.c.id == execution_id))).one()
    return dict(row._mapping)


# -- submission --------------------------------------------------------------------------------


async def test_submit_stores_a_queued_row_and_its_submitted_event(store: Store) -> None:
    submission = Submission(
        "echo", {"a": [1, 2], "b": "x"}, labels={"team": "data"}, priority=7, max_attempts=3
    )
    execution_id = await store.submit(submission, now=T0)

    record = await must_get(store, execution_id)
    assert record.task_type == "echo"
    assert record.inputs == {"a": [1, 2], "b": "x"}
    assert record.labels == {"team": "data"}
    assert (record.priority, record.max_attempts) == (7, 3)
    assert record.phase is Phase.QUEUED
    assert (record.phase_version, record.reason, record.attempt) == (0, "Submitted", 1)
    assert (record.event_seq, record.rounds, record.system_failures) == (1, 0, 0)
    assert (record.created_at, record.updated_at, record.next_round_at) == (T0, T0, T0)
    assert record.outputs is None and record.plugin_state is None and record.plugin_state_version == 0
    assert not record.finalized and not record.abort_requested
    assert (record.lease_owner, record.lease_token, record.lease_expires_at) == (None, None, None)

    assert await store.events(execution_id) == [
        EventRecord(execution_id, 1, 1, Phase.QUEUED, 0, T0, reason="Submitted")
    ]


async def test_submit_many_stores_each_with_one_event(store: Store) -> None:
    ids = await store.submit_many([Submission("echo", {"i": i}) for i in range(5)], now=T0)
    assert len(set(ids)) == 5
    for i, execution_id in enumerate(ids):
        record = await must_get(store, execution_id)
        assert record.inputs == {"i": i}
        assert [(e.seq, e.phase, e.reason) for e in await store.events(execution_id)] == [
            (1, Phase.QUEUED, "Submitted")
        ]


async def test_submit_many_stores_nothing_when_one_submission_is_invalid(store: Store) -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        await store.submit_many(
            [Submission("echo", {"ok": 1}), Submission("echo", {"x": float("nan")})], now=T0
        )
    assert await store.list_executions() == []


async def test_not_before_delays_the_first_round_but_never_before_now(store: Store) -> None:
    later = await store.submit(Submission("echo", not_before=T0 + 60), now=T0)
    earlier = await store.submit(Submission("echo", not_before=T0 - 60), now=T0)
    assert (await must_get(store, later)).next_round_at == T0 + 60
    assert (await must_get(store, earlier)).next_round_at == T0
    assert await claim(store, "t1", T0 + 59) == [earlier]
    assert await claim(store, "t2", T0 + 60) == [later]


# -- claims ------------------------------------------------------------------------------------


async def test_claim_takes_only_due_rows(store: Store) -> None:
    due = await store.submit(Submission("echo"), now=T0)
    await store.submit(Submission("echo", not_before=T0 + 100), now=T0)
    assert await claim(store, "t0", T0 - 1) == []
    assert await claim(store, "t1", T0) == [due]  # due exactly at next_round_at
    # Once that lease ran out it is claimable again, the other one still is not.
    assert await claim(store, "t2", T0 + 99) == [due]


async def test_claim_honours_the_limit_and_takes_the_earliest_due_first(store: Store) -> None:
    offsets = [4, 1, 3, 0, 2]
    ids = {
        offset: await store.submit(Submission("echo", not_before=T0 + offset), now=T0) for offset in offsets
    }
    first = await claim(store, "t1", T0 + 10, limit=3)
    assert first == [ids[0], ids[1], ids[2]]
    second = await claim(store, "t2", T0 + 10, limit=3)
    assert second == [ids[3], ids[4]]
    assert await claim(store, "t3", T0 + 10, limit=3) == []


async def test_claim_stamps_the_lease(store: Store) -> None:
    execution_id = await store.submit(Submission("echo"), now=T0)
    [record] = await store.claim(
        owner="replica-b", token="tok-1", limit=10, lease_ttl=TTL, now=T0 + 1, lease_now=T0 + 1
    )
    assert (record.lease_owner, record.lease_token, record.lease_expires_at) == (
        "replica-b",
        "tok-1",
        T0 + 1 + TTL,
    )
    stored = await must_get(store, execution_id)
    assert (stored.lease_owner, stored.lease_token, stored.lease_expires_at) == (
        "replica-b",
        "tok-1",
        T0 + 1 + TTL,
    )
    # Claiming changes nothing but the lease.
    assert replace(stored, lease_owner=None, lease_token=None, lease_expires_at=None) == replace(
        record, lease_owner=None, lease_token=None, lease_expires_at=None
    )
    assert stored.phase is Phase.QUEUED and stored.event_seq == 1


async def test_a_leased_row_is_not_claimed_again_until_its_lease_expires(store: Store) -> None:
    execution_id = await store.submit(Submission("echo"), now=T0)
    assert await claim(store, "t1", T0) == [execution_id]
    assert await claim(store, "t2", T0 + 1) == []
    assert await claim(store, "t2", T0 + TTL) == []  # expires_at is not yet past
    assert await claim(store, "t3", T0 + TTL + 0.5) == [execution_id]
    assert (await must_get(store, execution_id)).lease_token == "t3"


async def test_finalized_rows_are_never_claimed(store: Store) -> None:
    execution_id = await store.submit(Submission("echo"), now=T0)
    record = await claim_one(store, "t1", T0)
    update = moved(record, Phase.SUCCESS, T0 + 1)
    await store.commit_round("t1", [update], now=T0 + 1)
    result = await store.commit_round(
        "t1", [RecordUpdate(replace(update.record, finalized=True))], now=T0 + 2
    )
    assert result.committed == {execution_id}
    assert await claim(store, "t2", T0 + 10_000) == []
    assert await store.next_due_at() is None


# -- committing a round ------------------------------------------------------------------------


async def test_commit_round_writes_the_round_and_releases_the_lease(store: Store) -> None:
    execution_id = await store.submit(Submission("echo"), now=T0)
    record = await claim_one(store, "t1", T0)
    update = moved(record, Phase.RUNNING, T0 + 1, reason="started", next_round_at=T0 + 5)

    result = await store.commit_round("t1", [update], now=T0 + 1)

    assert result.committed == {execution_id}
    assert result.lost == frozenset()
    stored = await must_get(store, execution_id)
    assert stored.phase is Phase.RUNNING
    assert (stored.reason, stored.event_seq, stored.rounds) == ("started", 2, 1)
    assert (stored.updated_at, stored.next_round_at) == (T0 + 1, T0 + 5)
    assert (stored.lease_owner, stored.lease_token, stored.lease_expires_at) == (None, None, None)
    assert [(e.seq, e.phase, e.reason) for e in await store.events(execution_id)] == [
        (1, Phase.QUEUED, "Submitted"),
        (2, Phase.RUNNING, "started"),
    ]
    # Released, but not due before the time the round asked for.
    assert await claim(store, "t2", T0 + 4) == []
    assert await claim(store, "t3", T0 + 5) == [execution_id]


async def test_a_round_whose_lease_was_taken_over_is_dropped(store: Store) -> None:
    execution_id = await store.submit(Submission("echo"), now=T0)
    stale = await claim_one(store, "old", T0)
    # The lease runs out while the round is under way, and another replica claims the row.
    assert await claim(store, "new", T0 + TTL + 1, owner="replica-b") == [execution_id]
    update = moved(stale, Phase.SUCCESS, T0 + TTL + 2, reason="too late", outputs={"x": 1})
    update = replace(update, state_changed=True, outputs_changed=True)
    update = replace(update, record=replace(update.record, plugin_state='{"s":1}', plugin_state_version=4))

    result = await store.commit_round("old", [update], now=T0 + TTL + 2)

    assert result.lost == {execution_id}
    assert result.committed == frozenset()
    stored = await must_get(store, execution_id)
    assert stored.phase is Phase.QUEUED
    assert (stored.reason, stored.event_seq, stored.rounds) == ("Submitted", 1, 0)
    assert stored.outputs is None and stored.plugin_state is None and stored.finished_at is None
    assert (stored.lease_owner, stored.lease_token) == ("replica-b", "new")
    assert [e.seq for e in await store.events(execution_id)] == [1]


async def test_a_commit_writes_the_rows_it_still_holds_and_drops_the_others(store: Store) -> None:
    kept_id = await store.submit(Submission("echo"), now=T0)
    lost_id = await store.submit(Submission("echo"), now=T0 + 1)
    [kept, lost] = await store.claim(
        owner="a", token="t1", limit=10, lease_ttl=TTL, now=T0 + 1, lease_now=T0 + 1
    )
    assert (kept.id, lost.id) == (kept_id, lost_id)
    # Another replica gets hold of `lost` meanwhile (here: after a release, as if it had expired).
    await store.release_leases("t1", [lost_id])
    assert await claim(store, "t2", T0 + 2) == [lost_id]

    now = T0 + 3
    result = await store.commit_round(
        "t1", [moved(kept, Phase.RUNNING, now), moved(lost, Phase.RUNNING, now)], now=now
    )

    assert result == CommitResult(frozenset({kept_id}), frozenset({lost_id}))
    assert (await must_get(store, kept_id)).phase is Phase.RUNNING
    assert (await must_get(store, lost_id)).phase is Phase.QUEUED
    assert [e.seq for e in await store.events(kept_id)] == [1, 2]
    assert [e.seq for e in await store.events(lost_id)] == [1]


async def test_a_round_commit_takes_late_outcomes_under_their_own_leases(store: Store) -> None:
    """A call of round 1 that outlived it is folded into round 2's commit: its row is fenced by
    round 1's token, and an ended one keeps its lease as round 2's (its clean-up commits under
    it); a folded row whose lease another replica took is dropped, the rest still written."""
    late_id = await store.submit(Submission("echo"), now=T0)
    lost_id = await store.submit(Submission("echo"), now=T0 + 1)
    [late, lost] = await store.claim(
        owner="a", token="r1", limit=10, lease_ttl=TTL, now=T0 + 1, lease_now=T0 + 1
    )
    fresh_id = await store.submit(Submission("echo"), now=T0 + 2)
    [fresh] = await store.claim(owner="a", token="r2", limit=10, lease_ttl=TTL, now=T0 + 2, lease_now=T0 + 2)
    assert fresh.id == fresh_id
    await store.release_leases("r1", [lost_id])  # another replica gets hold of `lost` meanwhile
    assert await claim(store, "other", T0 + 3, owner="replica-b") == [lost_id]

    now = T0 + 4
    updates = [
        moved(fresh, Phase.RUNNING, now),
        moved(late, Phase.SUCCESS, now),
        moved(lost, Phase.SUCCESS, now),
    ]
    result = await store.commit_round("r2", updates, now=now, held={late_id: "r1", lost_id: "r1"})

    assert result == CommitResult(frozenset({fresh_id, late_id}), frozenset({lost_id}))
    ended = await must_get(store, late_id)
    assert ended.phase is Phase.SUCCESS and ended.lease_token == "r2", "kept for its clean-up, as r2's"
    assert (await must_get(store, fresh_id)).lease_token is None
    assert (await must_get(store, lost_id)).lease_token == "other"
    assert [e.seq for e in await store.events(lost_id)] == [1]
    cleaned = await store.commit_round("r2", [RecordUpdate(replace(ended, finalized=True))], now=now + 1)
    assert cleaned.committed == {late_id}


async def test_state_and_outputs_are_written_only_when_the_round_changed_them(store: Store) -> None:
    execution_id = await store.submit(Submission("echo"), now=T0)

    # Round 1 writes both.
    record = await claim_one(store, "t1", T0)
    update = moved(record, Phase.RUNNING, T0 + 1, outputs={"o": 1}, plugin_state='{"n":1}')
    update = replace(update, record=replace(update.record, plugin_state_version=3))
    await store.commit_round("t1", [replace(update, state_changed=True, outputs_changed=True)], now=T0 + 1)
    stored = await must_get(store, execution_id)
    assert (stored.plugin_state, stored.plugin_state_version, stored.outputs) == ('{"n":1}', 3, {"o": 1})

    # Round 2 carries different values but says it changed neither: the columns keep round 1's.
    record = await claim_one(store, "t2", T0 + 2)
    update = moved(record, Phase.RUNNING, T0 + 2, version=1, outputs={"o": 2}, plugin_state='{"n":2}')
    update = replace(update, record=replace(update.record, plugin_state_version=9))
    await store.commit_round("t2", [update], now=T0 + 2)
    stored = await must_get(store, execution_id)
    assert stored.phase_version == 1  # the round itself was written
    assert (stored.plugin_state, stored.plugin_state_version, stored.outputs) == ('{"n":1}', 3, {"o": 1})

    # Round 3 changes only the state, to nothing (a reset): outputs stay.
    record = await claim_one(store, "t3", T0 + 3)
    update = moved(record, Phase.RUNNING, T0 + 3, version=2, outputs=None, plugin_state=None)
    update = replace(update, record=replace(update.record, plugin_state_version=0))
    await store.commit_round("t3", [replace(update, state_changed=True)], now=T0 + 3)
    stored = await must_get(store, execution_id)
    assert (stored.plugin_state, stored.plugin_state_version, stored.outputs) == (None, 0, {"o": 1})

    # Round 4 changes only the outputs.
    record = await claim_one(store, "t4", T0 + 4)
    update = moved(record, Phase.RUNNING, T0 + 4, version=3, outputs={"o": 4}, plugin_state='{"n":4}')
    await store.commit_round("t4", [replace(update, outputs_changed=True)], now=T0 + 4)
    stored = await must_get(store, execution_id)
    assert (stored.plugin_state, stored.plugin_state_version, stored.outputs) == (None, 0, {"o": 4})


async def test_one_commit_with_every_shape_of_change(store: Store) -> None:
    ids = await store.submit_many([Submission("echo") for _ in range(4)], now=T0)
    claimed = {
        r.id: r
        for r in await store.claim(owner="a", token="t", limit=10, lease_ttl=TTL, now=T0, lease_now=T0)
    }
    now = T0 + 1
    updates = []
    for index, (state, outputs) in enumerate([(False, False), (True, False), (False, True), (True, True)]):
        update = moved(claimed[ids[index]], Phase.RUNNING, now, reason=f"r{index}", outputs={"i": index})
        update = replace(
            update, record=replace(update.record, plugin_state=f'"{index}"', plugin_state_version=index)
        )
        updates.append(replace(update, state_changed=state, outputs_changed=outputs))

    result = await store.commit_round("t", updates, now=now)

    assert result.committed == set(ids)
    for index, execution_id in enumerate(ids):
        stored = await must_get(store, execution_id)
        assert stored.reason == f"r{index}"
        assert stored.plugin_state == (f'"{index}"' if index in (1, 3) else None)
        assert stored.plugin_state_version == (index if index in (1, 3) else 0)
        assert stored.outputs == ({"i": index} if index in (2, 3) else None)


async def test_errors_and_info_round_trip(store: Store) -> None:
    execution_id = await store.submit(Submission("echo"), now=T0)
    record = await claim_one(store, "t1", T0)
    error = ExecutionError("Boom", "it broke", ErrorKind.SYSTEM)
    info = {"occurred_at": "2024-01-01T00:00:00+00:00", "logs": [{"name": "l", "uri": "u"}]}
    update = moved(record, Phase.RUNNING, T0 + 1, reason="Boom", error=error, info=info)
    update = replace(update, events=(replace(update.events[0], error=error, info=info),))
    await store.commit_round("t1", [update], now=T0 + 1)

    stored = await must_get(store, execution_id)
    assert (stored.error, stored.info) == (error, info)
    last = (await store.events(execution_id))[-1]
    assert (last.error, last.info, last.reason) == (error, info, "Boom")


async def test_a_final_record_keeps_its_lease_until_finalized(store: Store) -> None:
    execution_id = await store.submit(Submission("echo"), now=T0)
    record = await claim_one(store, "t1", T0)
    update = moved(record, Phase.SUCCESS, T0 + 1, outputs={"done": True})

    await store.commit_round("t1", [replace(update, outputs_changed=True)], now=T0 + 1)

    stored = await must_get(store, execution_id)
    assert stored.phase is Phase.SUCCESS and stored.finished_at == T0 + 1 and not stored.finalized
    assert (stored.lease_owner, stored.lease_token, stored.lease_expires_at) == ("replica-a", "t1", T0 + TTL)
    assert await claim(store, "t2", T0 + 2) == []  # nobody else runs finalize meanwhile

    result = await store.commit_round(
        "t1", [RecordUpdate(replace(update.record, finalized=True, updated_at=T0 + 2))], now=T0 + 2
    )

    assert result == CommitResult(frozenset({execution_id}), frozenset())
    stored = await must_get(store, execution_id)
    assert stored.finalized and stored.updated_at == T0 + 2
    assert (stored.lease_owner, stored.lease_token, stored.lease_expires_at) == (None, None, None)
    assert stored.outputs == {"done": True} and stored.phase is Phase.SUCCESS
    assert await claim(store, "t3", T0 + 10_000) == []


async def test_a_final_record_whose_lease_expired_is_claimed_again_for_finalize(store: Store) -> None:
    execution_id = await store.submit(Submission("echo"), now=T0)
    record = await claim_one(store, "t1", T0)
    await store.commit_round("t1", [moved(record, Phase.PERMANENT_FAILURE, T0 + 1)], now=T0 + 1)
    # The replica died before recording finalize: once the lease runs out, another one takes over.
    [again] = await store.claim(
        owner="b", token="t2", limit=10, lease_ttl=TTL, now=T0 + TTL + 1, lease_now=T0 + TTL + 1
    )
    assert again.id == execution_id and again.phase is Phase.PERMANENT_FAILURE and not again.finalized
    lost = await store.commit_round("t1", [RecordUpdate(replace(again, finalized=True))], now=T0 + 2)
    assert lost == CommitResult(frozenset(), frozenset({execution_id}))
    assert not (await must_get(store, execution_id)).finalized


async def test_a_failed_finalize_releases_the_lease_and_retries_later(store: Store) -> None:
    execution_id = await store.submit(Submission("echo"), now=T0)
    record = await claim_one(store, "t1", T0)
    update = moved(record, Phase.SUCCESS, T0 + 1)
    await store.commit_round("t1", [update], now=T0 + 1)

    retry = replace(
        update.record, finalize_failures=1, finalize_error="boom", next_round_at=T0 + 10, updated_at=T0 + 2
    )
    await store.commit_round("t1", [RecordUpdate(retry)], now=T0 + 2)

    stored = await must_get(store, execution_id)
    assert not stored.finalized and stored.next_round_at == T0 + 10
    # Finalize keeps a count of its own: the attempt's system-failure budget is untouched.
    assert (stored.finalize_failures, stored.finalize_error, stored.system_failures) == (1, "boom", 0)
    assert stored.lease_token is None
    assert await store.next_due_at() == T0 + 10
    assert await claim(store, "t2", T0 + 9) == []
    assert await claim(store, "t3", T0 + 10) == [execution_id]


async def test_release_leases_frees_only_the_given_rows_of_the_given_token(store: Store) -> None:
    a = await store.submit(Submission("echo"), now=T0)
    b = await store.submit(Submission("echo"), now=T0 + 1)
    assert await claim(store, "t1", T0 + 1) == [a, b]

    await store.release_leases("other-token", [a, b])
    assert await claim(store, "t2", T0 + 2) == []
    await store.release_leases("t1", [a])

    stored = await must_get(store, a)
    assert (stored.lease_owner, stored.lease_token, stored.lease_expires_at) == (None, None, None)
    assert stored.phase is Phase.QUEUED and stored.event_seq == 1  # no round written
    assert await claim(store, "t2", T0 + 2) == [a]
    assert (await must_get(store, b)).lease_token == "t1"


async def test_next_due_at(store: Store) -> None:
    assert await store.next_due_at() is None
    late = await store.submit(Submission("echo", not_before=T0 + 50), now=T0)
    assert await store.next_due_at() == T0 + 50
    await store.submit(Submission("echo", not_before=T0 + 20), now=T0)
    assert await store.next_due_at() == T0 + 20
    # Finished and finalized rows do not count.
    done = await store.submit(Submission("echo"), now=T0 - 5)
    record = await claim_one(store, "t1", T0)
    assert record.id == done
    update = moved(record, Phase.SUCCESS, T0 + 1)
    await store.commit_round("t1", [update], now=T0 + 1)
    await store.commit_round("t1", [RecordUpdate(replace(update.record, finalized=True))], now=T0 + 2)
    assert await store.next_due_at() == T0 + 20
    assert late in {r.id for r in await store.list_executions()}


async def test_next_due_at_waits_for_the_lease_of_a_row_being_worked_on(store: Store) -> None:
    """A due row leased by another replica is not due for us until its lease runs out: answering
    its next_round_at (in the past) would make an idle loop spin on empty claims meanwhile."""
    execution_id = await store.submit(Submission("echo"), now=T0)
    later = await store.submit(Submission("echo", not_before=T0 + 100), now=T0)
    assert await claim(store, "t1", T0, limit=1) == [execution_id]
    assert await store.next_due_at() == T0 + TTL
    await store.release_leases("t1", [execution_id])
    assert await store.next_due_at() == T0
    # A lease that expired long ago does not hold a row back.
    assert await claim(store, "t2", T0, limit=1) == [execution_id]
    async with store.engine.begin() as conn:
        await conn.execute(
            executions.update()
            .where(executions.c.id == execution_id)
            .values(next_round_at=T0 + 40, lease_expires_at=T0 + 10)
        )
    assert await store.next_due_at() == T0 + 40
    # A lease running out after a later row is due: the later row comes first.
    async with store.engine.begin() as conn:
        await conn.execute(
            executions.update()
            .where(executions.c.id == execution_id)
            .values(next_round_at=T0, lease_expires_at=T0 + 500)
        )
    assert await store.next_due_at() == T0 + 100
    assert (await must_get(store, later)).next_round_at == T0 + 100


# -- reading -----------------------------------------------------------------------------------


async def _finish(store: Store, execution_id: str, phase: Phase, at: float, *, finalize: bool) -> None:
    [record] = await store.claim(
        owner="a", token=f"tok-{execution_id[:8]}", limit=1, lease_ttl=TTL, now=at, lease_now=at
    )
    assert record.id == execution_id
    update = moved(record, phase, at + 0.5)
    await store.commit_round(f"tok-{execution_id[:8]}", [update], now=at + 0.5)
    if finalize:
        await store.commit_round(
            f"tok-{execution_id[:8]}", [RecordUpdate(replace(update.record, finalized=True))], now=T0 + 2
        )


async def test_list_executions_filters(store: Store) -> None:
    queued = await store.submit(Submission("echo"), now=T0)
    sleeping = await store.submit(Submission("core-sleep", not_before=T0 + 1000), now=T0 + 1)
    succeeded = await store.submit(Submission("echo"), now=T0 + 2)
    failed = await store.submit(Submission("core-sleep"), now=T0 + 3)
    # Finish two, one of them finalized; `queued` is due first, so move it out of the way.
    async with store.engine.begin() as conn:
        await conn.execute(
            executions.update().where(executions.c.id == queued).values(next_round_at=T0 + 2000)
        )
    await _finish(store, succeeded, Phase.SUCCESS, T0 + 10, finalize=True)
    await _finish(store, failed, Phase.PERMANENT_FAILURE, T0 + 20, finalize=False)

    async def listed(**kwargs: object) -> list[str]:
        return [r.id for r in await store.list_executions(**kwargs)]  # type: ignore[arg-type]

    assert await listed() == [failed, succeeded, sleeping, queued]
    assert await listed(limit=2) == [failed, succeeded]
    assert await listed(phases=[Phase.QUEUED]) == [sleeping, queued]
    assert await listed(phases=[Phase.SUCCESS, Phase.PERMANENT_FAILURE]) == [failed, succeeded]
    assert await listed(phases=[Phase.RUNNING]) == []
    assert await listed(task_type="core-sleep") == [failed, sleeping]
    assert await listed(task_type="core-sleep", phases=[Phase.QUEUED]) == [sleeping]
    assert await listed(task_type="nope") == []
    assert await listed(unfinalized=True) == [failed]


async def test_list_executions_pages_with_a_cursor_through_ties(store: Store) -> None:
    # Three share a creation time: the id breaks the tie, so no page skips or repeats one.
    expected = []
    for created in (T0, T0 + 1, T0 + 1, T0 + 1, T0 + 2):
        expected.append((created, await store.submit(Submission("echo"), now=created)))
    expected.sort(reverse=True)

    pages: list[list[str]] = []
    before: tuple[float, str] | None = None
    while True:
        page = await store.list_executions(limit=2, before=before)
        if not page:
            break
        pages.append([r.id for r in page])
        before = (page[-1].created_at, page[-1].id)

    assert [len(page) for page in pages] == [2, 2, 1]
    assert [execution_id for page in pages for execution_id in page] == [i for _, i in expected]


async def test_events_come_back_in_sequence_order(store: Store) -> None:
    execution_id = await store.submit(Submission("echo"), now=T0)
    now = T0
    reasons = []
    for round_number in range(1, 12):  # past 9, so a text sort of seq would show
        record = await claim_one(store, f"t{round_number}", now)
        now += 1
        reason = f"round {round_number}"
        reasons.append(reason)
        await store.commit_round(
            f"t{round_number}",
            [moved(record, Phase.RUNNING, now, reason=reason, version=round_number)],
            now=now,
        )
    found = await store.events(execution_id)
    assert [e.seq for e in found] == list(range(1, 13))
    assert [e.reason for e in found] == ["Submitted", *reasons]
    assert [e.phase_version for e in found] == list(range(12))
    assert [e.occurred_at for e in found] == [T0 + i for i in range(12)]


async def test_count_by_phase(store: Store) -> None:
    assert await store.count_by_phase() == {}
    ids = await store.submit_many([Submission("echo") for _ in range(3)], now=T0)
    [first, *_] = await store.claim(owner="a", token="t", limit=1, lease_ttl=TTL, now=T0, lease_now=T0)
    assert first.id in ids
    await store.commit_round("t", [moved(first, Phase.RUNNING, T0 + 1)], now=T0 + 1)
    assert await store.count_by_phase() == {Phase.QUEUED: 2, Phase.RUNNING: 1}


# -- abort -------------------------------------------------------------------------------------


async def test_request_abort_marks_the_execution_and_makes_it_due_now(store: Store) -> None:
    execution_id = await store.submit(Submission("core-sleep", not_before=T0 + 3600), now=T0)
    assert await claim(store, "t1", T0 + 5) == []

    assert await store.request_abort(execution_id, "user asked", now=T0 + 5) is AbortResult.REQUESTED

    stored = await must_get(store, execution_id)
    assert stored.abort_requested and stored.abort_reason == "user asked"
    row = await raw_row(store, execution_id)
    assert row["abort_requested"] is True and row["finalized"] is False
    assert (stored.next_round_at, stored.updated_at) == (T0 + 5, T0 + 5)
    assert stored.phase is Phase.QUEUED and stored.event_seq == 1
    [claimed] = await store.claim(
        owner="a", token="t2", limit=10, lease_ttl=TTL, now=T0 + 5, lease_now=T0 + 5
    )
    assert claimed.id == execution_id and claimed.abort_requested


async def test_request_abort_of_a_finished_execution(store: Store) -> None:
    for phase in (Phase.SUCCESS, Phase.PERMANENT_FAILURE, Phase.ABORTED):
        execution_id = await store.submit(Submission("echo"), now=T0)
        # Not yet finalized: the phase alone says it is over.
        await _finish(store, execution_id, phase, T0, finalize=False)
        before = await must_get(store, execution_id)
        assert await store.request_abort(execution_id, "late", now=T0 + 9) is AbortResult.ALREADY_FINISHED
        after = await must_get(store, execution_id)
        assert after == before and not after.abort_requested


async def test_an_abort_requested_during_a_round_survives_its_commit(store: Store) -> None:
    execution_id = await store.submit(Submission("core-sleep"), now=T0)
    record = await claim_one(store, "t1", T0)
    assert await store.request_abort(execution_id, "stop", now=T0 + 1) is AbortResult.REQUESTED
    # The round, unaware of the request, asks to be run again in an hour.
    update = moved(record, Phase.RUNNING, T0 + 2, next_round_at=T0 + 3600)

    result = await store.commit_round("t1", [update], now=T0 + 2)

    assert result.committed == {execution_id}
    stored = await must_get(store, execution_id)
    assert stored.phase is Phase.RUNNING
    assert stored.abort_requested and stored.abort_reason == "stop"
    assert stored.next_round_at == T0 + 2  # due now, not in an hour
    assert await claim(store, "t2", T0 + 2) == [execution_id]


# -- events ------------------------------------------------------------------------------------


async def test_a_duplicate_event_fails_the_whole_commit(store: Store) -> None:
    execution_id = await store.submit(Submission("echo"), now=T0)
    record = await claim_one(store, "t1", T0)
    update = moved(record, Phase.RUNNING, T0 + 1, reason="again")
    # An event numbered like the existing "Submitted" one.
    duplicate = replace(update, events=(replace(update.events[0], seq=1),))

    with pytest.raises(StoreRefused):
        await store.commit_round("t1", [duplicate], now=T0 + 1)

    # Nothing of the round is visible: the row is as claimed, the events as submitted.
    stored = await must_get(store, execution_id)
    assert stored.phase is Phase.QUEUED and stored.event_seq == 1 and stored.lease_token == "t1"
    assert [(e.seq, e.reason) for e in await store.events(execution_id)] == [(1, "Submitted")]
    # The proper round still commits.
    assert (await store.commit_round("t1", [update], now=T0 + 1)).committed == {execution_id}
    assert [e.seq for e in await store.events(execution_id)] == [1, 2]


# -- edges -------------------------------------------------------------------------------------


async def test_empty_batches_and_unknown_ids(store: Store) -> None:
    unknown = "00000000-0000-0000-0000-000000000000"
    assert await store.submit_many([], now=T0) == []
    assert await store.commit_round("t", [], now=T0) == CommitResult(frozenset(), frozenset())
    await store.release_leases("t", [])
    assert await store.get(unknown) is None
    assert await store.events(unknown) == []
    assert await store.request_abort(unknown, "why", now=T0) is AbortResult.NOT_FOUND
    assert await store.list_executions() == []


def test_execution_ids_are_uuid7_in_submission_order() -> None:
    """Time-ordered ids keep the primary keys' B-trees writing near their end (see new_execution_id)."""
    import time
    import uuid as uuid_module

    from executor.store.submissions import new_execution_id

    ids = [new_execution_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    parsed = [uuid_module.UUID(value) for value in ids]
    assert all(u.version == 7 and u.variant == uuid_module.RFC_4122 for u in parsed)
    stamps = [u.int >> 80 for u in parsed]
    assert stamps == sorted(stamps)
    assert abs(stamps[-1] - time.time_ns() // 1_000_000) < 60_000
