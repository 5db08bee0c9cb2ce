"""The state machine in `executor.lifecycle`: examples for each rule, then property tests that feed
random sequences of round outcomes to a freshly submitted record and check every step."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError, dataclass, fields, replace
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executor.core import (
    UNKNOWN_TRANSITION,
    ErrorKind,
    ExecutionError,
    Phase,
    PhaseInfo,
    TaskInfo,
    TaskLog,
    Transition,
    TransitionType,
    do_transition,
)
from executor.core.records import EventRecord, ExecutionRecord, RecordUpdate, StateChange
from executor.lifecycle import (
    AbortRequested,
    Cleanup,
    Expired,
    Handled,
    NoPlugin,
    Outcome,
    Policy,
    Rejected,
    SystemFault,
    advance,
    advance_and_clean_up,
    backoff_delay,
    cleaned_up,
    expired,
    policy_for,
    with_cleanup,
)

T0 = 1_700_000_000.0
POLICY = Policy(max_system_failures=3, backoff_base=2.0, backoff_max=60.0, default_requeue=5.0)
EPS = 1e-6


def submitted(execution_id: str = "exec-1", *, max_attempts: int = 1, now: float = T0) -> ExecutionRecord:
    """A record as `store.submit_many` writes it: QUEUED, reason Submitted, event 1 written."""
    return ExecutionRecord(
        id=execution_id,
        task_type="core-sleep",
        inputs={"duration": "1s"},
        phase=Phase.QUEUED,
        phase_version=0,
        created_at=now,
        next_round_at=now,
        max_attempts=max_attempts,
        reason="Submitted",
        event_seq=1,
    )


def handled(info: PhaseInfo, **kw: object) -> Handled:
    requeue_after = kw.pop("requeue_after", None)
    return Handled(do_transition(info, requeue_after=requeue_after), **kw)  # type: ignore[arg-type]


def event_key(event: EventRecord) -> tuple[object, ...]:
    return (event.attempt, event.phase, event.phase_version, event.reason, event.info)


def visible(record: ExecutionRecord) -> tuple[object, ...]:
    """What an event is written for when it changes."""
    return (record.phase, record.phase_version, record.reason, record.info)


# -- examples, one rule each ---------------------------------------------------------------------


def test_running_round_moves_phase_writes_event_and_requeues_as_asked() -> None:
    record = submitted()
    update = advance(record, handled(PhaseInfo.running(0), requeue_after=7.5), T0 + 1, POLICY)
    new = update.record
    assert new.phase is Phase.RUNNING
    assert new.reason is None
    assert new.next_round_at == T0 + 1 + 7.5
    assert new.rounds == 1
    assert new.attempt_started_at == T0 + 1
    assert new.finished_at is None
    assert [e.seq for e in update.events] == [2]
    [event] = update.events
    assert (event.phase, event.phase_version, event.attempt, event.occurred_at) == (
        Phase.RUNNING,
        0,
        1,
        T0 + 1,
    )
    assert new.event_seq == 2


def test_no_requeue_after_uses_the_default_requeue() -> None:
    update = advance(submitted(), handled(PhaseInfo.running(0)), T0, POLICY)
    assert update.record.next_round_at == T0 + POLICY.default_requeue


def test_same_phase_again_writes_no_event_but_a_new_version_or_info_does() -> None:
    first = advance(submitted(), handled(PhaseInfo.running(0)), T0, POLICY).record
    same = advance(first, handled(PhaseInfo.running(0)), T0 + 1, POLICY)
    assert same.events == ()
    assert same.record.event_seq == first.event_seq
    bumped = advance(same.record, handled(PhaseInfo.running(1)), T0 + 2, POLICY)
    assert [(e.phase, e.phase_version) for e in bumped.events] == [(Phase.RUNNING, 1)]
    info = TaskInfo(logs=(TaskLog("console", "https://example.invalid/log"),))
    with_info = advance(bumped.record, handled(PhaseInfo.running(1, info)), T0 + 3, POLICY)
    assert len(with_info.events) == 1
    assert with_info.events[0].info == info.to_dict()
    assert with_info.record.info == info.to_dict()
    reason = advance(with_info.record, handled(PhaseInfo.running(1, info, reason="x")), T0 + 4, POLICY)
    assert [e.reason for e in reason.events] == ["x"]


def test_state_put_is_persisted_even_when_phase_and_version_do_not_change() -> None:
    first = advance(submitted(), handled(PhaseInfo.running(0)), T0, POLICY).record
    update = advance(first, handled(PhaseInfo.running(0), state=StateChange('{"n": 2}', 4)), T0 + 1, POLICY)
    assert update.events == ()
    assert update.state_changed
    assert (update.record.plugin_state, update.record.plugin_state_version) == ('{"n": 2}', 4)
    reset = advance(update.record, handled(PhaseInfo.running(0), state=StateChange(None, 0)), T0 + 2, POLICY)
    assert reset.state_changed
    assert (reset.record.plugin_state, reset.record.plugin_state_version) == (None, 0)
    untouched = advance(reset.record, handled(PhaseInfo.running(0)), T0 + 3, POLICY)
    assert not untouched.state_changed
    assert not untouched.outputs_changed


def test_outputs_are_recorded_with_the_round() -> None:
    update = advance(submitted(), handled(PhaseInfo.success(), outputs={"a": 1}), T0, POLICY)
    assert update.outputs_changed
    assert update.record.outputs == {"a": 1}
    assert update.record.phase is Phase.SUCCESS


def test_the_outputs_json_the_writer_made_goes_with_the_outputs_and_never_without_them() -> None:
    written = handled(PhaseInfo.success(), outputs={"a": 1}, outputs_json='{"a":1}')
    assert advance(submitted(), written, T0, POLICY).outputs_json == '{"a":1}'
    update, cleaned = advance_and_clean_up(submitted(), written, T0, POLICY, Cleanup(True, True))
    assert cleaned and update.record.outputs == {"a": 1} and update.outputs_json == '{"a":1}'

    failed = handled(PhaseInfo.retryable_failure("Flaky", "again"), outputs={"a": 1}, outputs_json='{"a":1}')
    retried, cleaned = advance_and_clean_up(
        submitted(max_attempts=2), failed, T0, POLICY, Cleanup(True, True)
    )
    # The clean-up started the next attempt, which has no outputs: nothing may store the old ones.
    assert cleaned and retried.record.outputs is None and retried.outputs_changed
    assert retried.outputs_json is None
    assert advance(submitted(), SystemFault("HandleRaised", "boom"), T0, POLICY).outputs_json is None


@pytest.mark.parametrize(
    ("info", "phase"),
    [
        (PhaseInfo.success(), Phase.SUCCESS),
        (PhaseInfo.failure("InvalidInput", "bad"), Phase.PERMANENT_FAILURE),
        (PhaseInfo.system_failure("Broken", "bad"), Phase.PERMANENT_FAILURE),
        (PhaseInfo.aborted("stop"), Phase.ABORTED),
    ],
)
def test_final_phase_from_plugin_finishes_and_is_due_for_finalize(info: PhaseInfo, phase: Phase) -> None:
    update = advance(submitted(max_attempts=5), handled(info, requeue_after=100), T0 + 3, POLICY)
    new = update.record
    assert new.phase is phase
    assert new.phase.is_final
    assert new.reason == info.reason
    assert new.error == info.error
    assert new.finished_at == T0 + 3
    assert new.next_round_at == T0 + 3  # finalize is owed right away, whatever requeue_after said
    assert not new.finalized
    assert new.attempt == 1  # a permanent failure never spends another attempt


def test_unknown_transition_keeps_everything_and_requeues_after_default() -> None:
    running = advance(submitted(), handled(PhaseInfo.running(2, reason="r")), T0, POLICY).record
    update = advance(running, Handled(UNKNOWN_TRANSITION), T0 + 10, POLICY)
    new = update.record
    assert update.events == ()
    assert visible(new) == visible(running)
    assert new.error == running.error
    assert new.next_round_at == T0 + 10 + POLICY.default_requeue
    assert new.rounds == running.rounds + 1
    asked = advance(
        running, Handled(replace(UNKNOWN_TRANSITION, requeue_after=timedelta(seconds=42))), T0, POLICY
    )
    assert asked.record.next_round_at == T0 + 42


def test_user_retryable_failure_ends_the_attempt_and_owes_its_cleanup_first() -> None:
    record = advance(
        submitted(max_attempts=3),
        handled(PhaseInfo.running(3), state=StateChange('{"x": 1}', 2), outputs={"partial": 1}),
        T0,
        POLICY,
    ).record
    record = replace(record, system_failures=1)
    info = TaskInfo(custom_info={"job": "j-1"})
    update = advance(
        record,
        handled(PhaseInfo.retryable_failure("Flaky", "try again", info), requeue_after=0),
        T0 + 5,
        POLICY,
    )
    ended = update.record
    # The failed attempt stays, with its state, until `abort` then `finalize` have run for it.
    assert (ended.attempt, ended.phase, ended.reason) == (1, Phase.RETRYABLE_FAILURE, "Flaky")
    assert ended.abort_owed and not ended.finalized
    assert ended.next_round_at == T0 + 5  # the clean-up is due at once
    assert ended.finished_at is None
    assert (ended.plugin_state, ended.plugin_state_version) == ('{"x": 1}', 2)
    [event] = update.events
    assert (event.attempt, event.phase, event.reason) == (1, Phase.RETRYABLE_FAILURE, "Flaky")
    assert event.error == ExecutionError("Flaky", "try again", ErrorKind.USER)
    assert event.info == info.to_dict()  # the TaskInfo of the failure reaches its event

    # The clean-up starts the next attempt: clean state and outputs, QUEUED, after a backoff.
    restarted = cleaned_up(ended, Cleanup(aborted=True, finalized=True), T0 + 6, POLICY)
    new = restarted.record
    assert (new.attempt, new.phase, new.phase_version) == (2, Phase.QUEUED, 0)
    assert new.reason == "Retrying after Flaky"
    assert (new.plugin_state, new.plugin_state_version, new.outputs) == (None, 0, None)
    assert restarted.state_changed and restarted.outputs_changed
    assert (new.system_failures, new.finalize_failures, new.abort_owed, new.finalized) == (0, 0, False, False)
    assert new.attempt_started_at is None
    delay = new.next_round_at - (T0 + 6)
    assert POLICY.backoff_base - EPS <= delay <= POLICY.backoff_max + EPS
    [queued] = restarted.events
    assert (queued.attempt, queued.phase, queued.seq) == (2, Phase.QUEUED, ended.event_seq + 1)
    # The next attempt's first round stamps a new attempt start.
    again = advance(new, handled(PhaseInfo.running(0)), T0 + 100, POLICY)
    assert again.record.attempt_started_at == T0 + 100


def test_a_cleanup_that_fails_is_retried_and_the_next_attempt_waits_for_it() -> None:
    ended = advance(
        submitted(max_attempts=2), handled(PhaseInfo.retryable_failure("Flaky", "x")), T0, POLICY
    ).record
    abort_failed = cleaned_up(ended, Cleanup(False, False, "abort raised E: no"), T0 + 1, POLICY).record
    assert (abort_failed.attempt, abort_failed.phase) == (1, Phase.RETRYABLE_FAILURE)
    assert abort_failed.abort_owed and abort_failed.finalize_failures == 1
    assert abort_failed.finalize_error == "abort raised E: no"
    assert abort_failed.system_failures == 0  # finalize has a budget of its own
    assert abort_failed.next_round_at - (T0 + 1) >= POLICY.backoff_base - EPS
    finalize_failed = cleaned_up(abort_failed, Cleanup(True, False, "finalize raised"), T0 + 9, POLICY).record
    assert not finalize_failed.abort_owed  # abort ran; only finalize is retried
    assert finalize_failed.finalize_failures == 2
    done = cleaned_up(finalize_failed, Cleanup(True, True), T0 + 20, POLICY).record
    assert (done.attempt, done.phase, done.finalize_failures, done.finalize_error) == (
        2,
        Phase.QUEUED,
        0,
        None,
    )


def test_user_retryable_failure_without_attempts_left_is_max_retries_exceeded() -> None:
    record = submitted(max_attempts=2)
    first = advance(record, handled(PhaseInfo.retryable_failure("Flaky", "one")), T0, POLICY).record
    second = cleaned_up(first, Cleanup(True, True), T0, POLICY).record
    assert second.attempt == 2
    update = advance(second, handled(PhaseInfo.retryable_failure("Flakier", "two")), T0 + 1, POLICY)
    new = update.record
    assert new.attempt == 2
    assert new.phase is Phase.PERMANENT_FAILURE
    assert new.reason == "MaxRetriesExceeded"
    assert new.error is not None
    assert new.error.code == "MaxRetriesExceeded"
    assert "Flakier" in new.error.message and "two" in new.error.message
    assert new.finished_at == T0 + 1
    assert new.abort_owed and not new.finalized


def test_retryable_failure_without_error_is_retried_as_a_user_failure() -> None:
    bare = PhaseInfo(Phase.RETRYABLE_FAILURE, reason="Odd")
    update = advance(submitted(max_attempts=2), handled(bare), T0, POLICY)
    assert update.record.phase is Phase.RETRYABLE_FAILURE
    assert update.events[0].error is not None
    assert update.events[0].error.kind is ErrorKind.UNKNOWN
    assert cleaned_up(update.record, Cleanup(True, True), T0, POLICY).record.attempt == 2


def test_timeout_is_a_retryable_user_failure_and_the_deadline_a_permanent_one() -> None:
    record = replace(submitted(max_attempts=2), timeout=10.0, deadline_at=T0 + 100)
    assert expired(record, T0 + 1000 - 1e-9) is not None  # the deadline, even before a first round
    running = advance(record, handled(PhaseInfo.running(0), requeue_after=3600), T0 + 1, POLICY).record
    # The next round comes no later than the timeout, whatever the plugin asked for.
    assert running.next_round_at == T0 + 11
    assert expired(running, T0 + 10.9) is None
    lapsed = expired(running, T0 + 11)
    assert lapsed is not None and lapsed.code == "TimeoutExpired"
    timed_out = advance(running, lapsed, T0 + 11, POLICY).record
    assert (timed_out.phase, timed_out.reason, timed_out.abort_owed) == (
        Phase.RETRYABLE_FAILURE,
        "TimeoutExpired",
        True,
    )
    assert timed_out.error is not None and timed_out.error.kind is ErrorKind.USER
    second = cleaned_up(timed_out, Cleanup(True, True), T0 + 12, POLICY).record
    assert second.attempt == 2 and second.next_round_at <= T0 + 100
    late = expired(second, T0 + 100)
    assert late is not None and late.code == "DeadlineExceeded"
    # Attempt 2 never started: nothing to abort, but finalize is still owed.
    final = advance(second, late, T0 + 100, POLICY).record
    assert (final.phase, final.reason, final.abort_owed, final.finalized) == (
        Phase.PERMANENT_FAILURE,
        "DeadlineExceeded",
        False,
        False,
    )


def test_a_submission_backoff_overrides_the_policy() -> None:
    record = replace(submitted(max_attempts=2), backoff_base=500.0, backoff_max=600.0)
    ended = advance(record, handled(PhaseInfo.retryable_failure("Flaky", "x")), T0, POLICY).record
    new = cleaned_up(ended, Cleanup(True, True), T0, POLICY).record
    assert 500.0 <= new.next_round_at - T0 <= 600.0


def test_cleanup_on_failure_asks_for_abort_and_a_plain_failure_does_not() -> None:
    plain = advance(submitted(), handled(PhaseInfo.failure("Bad", "x")), T0, POLICY).record
    assert not plain.abort_owed
    cleanup = advance(
        submitted(), handled(PhaseInfo.failure("Bad", "x", cleanup_on_failure=True)), T0, POLICY
    ).record
    assert cleanup.abort_owed
    assert not advance(submitted(), handled(PhaseInfo.success()), T0, POLICY).record.abort_owed


def test_an_abort_requested_during_the_cleanup_of_a_retry_ends_aborted() -> None:
    ended = advance(
        submitted(max_attempts=3), handled(PhaseInfo.retryable_failure("Flaky", "x")), T0, POLICY
    ).record
    asked = replace(ended, abort_requested=True, abort_reason="stop")
    update = cleaned_up(asked, Cleanup(True, True), T0 + 1, POLICY)
    assert (update.record.phase, update.record.reason, update.record.finalized) == (
        Phase.ABORTED,
        "stop",
        True,
    )
    assert update.record.attempt == 1
    assert [e.phase for e in update.events] == [Phase.ABORTED]


def test_system_retryable_failure_spends_system_budget_not_attempts() -> None:
    record = advance(submitted(max_attempts=5), handled(PhaseInfo.running(1)), T0, POLICY).record
    update = advance(record, handled(PhaseInfo.system_retryable_failure("Blip", "net")), T0 + 1, POLICY)
    new = update.record
    assert new.attempt == 1
    assert new.system_failures == 1
    assert (new.phase, new.phase_version, new.reason) == (Phase.RUNNING, 1, "Blip")
    delay = new.next_round_at - (T0 + 1)
    assert POLICY.backoff_base - EPS <= delay <= POLICY.backoff_max + EPS


def test_system_faults_reaching_the_cap_fail_permanently_and_running_does_not_reset() -> None:
    policy = replace(POLICY, max_system_failures=3)
    record = advance(submitted(max_attempts=5), handled(PhaseInfo.running(0)), T0, policy).record
    record = advance(record, SystemFault("HandleRaised", "boom 1"), T0 + 1, policy).record
    assert record.system_failures == 1
    assert record.phase is Phase.RUNNING
    # An unrelated successful round does not reset the count.
    record = advance(record, handled(PhaseInfo.running(0)), T0 + 2, policy).record
    assert record.system_failures == 1
    assert record.reason is None
    record = advance(record, SystemFault("HandleTimeout", "slow"), T0 + 3, policy).record
    assert record.system_failures == 2
    assert record.phase is Phase.RUNNING
    update = advance(record, SystemFault("HandleRaised", "boom 3"), T0 + 4, policy)
    final = update.record
    assert final.system_failures == 3
    assert final.phase is Phase.PERMANENT_FAILURE
    assert final.reason == "MaxSystemFailuresExceeded"
    assert final.error is not None and final.error.kind is ErrorKind.SYSTEM
    assert "HandleRaised" in final.error.message and "boom 3" in final.error.message
    assert final.attempt == 1  # system faults never spend the user's attempts


def test_repeated_identical_system_fault_writes_one_event() -> None:
    record = advance(submitted(), SystemFault("HandleRaised", "boom"), T0, POLICY)
    assert len(record.events) == 1
    again = advance(record.record, SystemFault("HandleRaised", "boom again"), T0 + 1, POLICY)
    assert again.events == ()
    assert again.record.error == ExecutionError("HandleRaised", "boom again", ErrorKind.SYSTEM)


def test_unknown_task_type_names_the_known_types() -> None:
    update = advance(submitted(), NoPlugin("nope", ("core-sleep", "echo")), T0, POLICY)
    new = update.record
    assert new.phase is Phase.PERMANENT_FAILURE
    assert new.reason == "UnknownTaskType"
    assert new.error is not None
    assert "'nope'" in new.error.message
    assert "core-sleep" in new.error.message and "echo" in new.error.message
    none_known = advance(submitted(), NoPlugin("nope", ()), T0, POLICY).record
    assert none_known.error is not None and "none" in none_known.error.message


def test_rejected_fails_permanently_with_its_code() -> None:
    update = advance(submitted(max_attempts=3), Rejected("PluginStateTooLarge", "too big"), T0, POLICY)
    new = update.record
    assert (new.phase, new.reason) == (Phase.PERMANENT_FAILURE, "PluginStateTooLarge")
    assert new.error == ExecutionError("PluginStateTooLarge", "too big", ErrorKind.SYSTEM)
    assert new.attempt == 1


def test_too_many_phase_versions() -> None:
    policy = replace(POLICY, max_phase_versions=10)
    ok = advance(submitted(), handled(PhaseInfo.running(10)), T0, policy).record
    assert (ok.phase, ok.phase_version) == (Phase.RUNNING, 10)
    update = advance(ok, handled(PhaseInfo.running(11), state=StateChange("{}", 1)), T0 + 1, policy)
    new = update.record
    assert (new.phase, new.reason) == (Phase.PERMANENT_FAILURE, "TooManyPhaseVersions")
    assert new.error is not None and "11" in new.error.message and "10" in new.error.message
    assert update.state_changed


def test_abort_ends_aborted_and_owes_abort_only_when_the_attempt_had_started() -> None:
    never_ran = advance(submitted(), AbortRequested("user asked"), T0, POLICY).record
    assert (never_ran.phase, never_ran.abort_owed) == (Phase.ABORTED, False)
    running = advance(submitted(), handled(PhaseInfo.running(0)), T0, POLICY).record
    clean = advance(running, AbortRequested("user asked"), T0 + 1, POLICY).record
    assert (clean.phase, clean.reason, clean.error) == (Phase.ABORTED, "user asked", None)
    assert clean.finished_at == T0 + 1
    assert clean.abort_owed


def test_finalized_marks_done_or_backs_off() -> None:
    done = advance(submitted(), handled(PhaseInfo.success()), T0, POLICY).record
    ok = cleaned_up(done, Cleanup(aborted=True, finalized=True), T0 + 1, POLICY).record
    assert ok.finalized
    assert replace(ok, updated_at=done.updated_at, finalized=False) == done
    retry = cleaned_up(
        done, Cleanup(aborted=True, finalized=False, error="finalize failed"), T0 + 1, POLICY
    ).record
    assert not retry.finalized
    assert retry.phase is Phase.SUCCESS
    assert retry.finalize_failures == done.finalize_failures + 1
    assert retry.system_failures == done.system_failures
    delay = retry.next_round_at - (T0 + 1)
    assert POLICY.backoff_base - EPS <= delay <= POLICY.backoff_max + EPS


def test_barrier_and_ephemeral_transitions_behave_the_same() -> None:
    for kind in TransitionType:
        update = advance(submitted(), Handled(Transition(kind, PhaseInfo.running(0))), T0, POLICY)
        assert update.record.phase is Phase.RUNNING


def test_the_records_made_are_plain_frozen_execution_records() -> None:
    """The lifecycle makes its records without their constructor (see `lifecycle._built`): each
    must still be an ExecutionRecord like any other, frozen, equal to one built field by field."""
    record = submitted(max_attempts=2)
    failed = advance(record, handled(PhaseInfo.retryable_failure("Flaky", "again")), T0, POLICY).record
    updates = [
        advance(record, handled(PhaseInfo.running(0)), T0, POLICY),
        advance_and_clean_up(record, handled(PhaseInfo.success()), T0, POLICY, Cleanup(True, True))[0],
        cleaned_up(failed, Cleanup(True, True), T0 + 1, POLICY),
    ]
    for update in updates:
        made = update.record
        assert type(made) is ExecutionRecord
        rebuilt = ExecutionRecord(*(getattr(made, field.name) for field in fields(ExecutionRecord)))
        assert made == rebuilt
        assert repr(made) == repr(rebuilt)
        with pytest.raises(FrozenInstanceError):
            made.phase = Phase.QUEUED  # type: ignore[misc]


@given(
    execution_id=st.text(min_size=1, max_size=20),
    failures=st.integers(min_value=-5, max_value=100_000),
    base=st.floats(min_value=0, max_value=1000),
    spread=st.floats(min_value=0, max_value=100_000),
)
@settings(max_examples=300, deadline=None)
def test_backoff_is_within_base_and_max(execution_id: str, failures: int, base: float, spread: float) -> None:
    policy = Policy(backoff_base=base, backoff_max=base + spread)
    delay = backoff_delay(execution_id, failures, policy)
    assert policy.backoff_base <= delay <= policy.backoff_max
    assert delay == backoff_delay(execution_id, failures, policy)


def test_backoff_grows_and_jitter_depends_on_id() -> None:
    policy = Policy(backoff_base=1.0, backoff_max=1e9)
    delays = [backoff_delay("a", n, policy) for n in range(1, 12)]
    assert delays == sorted(delays)
    assert delays[-1] > 100 * delays[0]
    assert len({backoff_delay(f"id-{i}", 3, policy) for i in range(20)}) > 1


# -- properties over random sequences of rounds --------------------------------------------------

INFOS = [
    None,
    TaskInfo(custom_info={"k": 1}),
    TaskInfo(logs=(TaskLog("console", "https://example.invalid"),)),
]
REASONS = [None, "a", "b"]
CODES = ["HandleRaised", "HandleTimeout", "Flaky"]
ONGOING_PHASES = [p for p in Phase if p is not Phase.UNDEFINED and not p.is_terminal]
COMMON_PHASES = [Phase.RUNNING, Phase.QUEUED, Phase.INITIALIZING]


@st.composite
def phase_infos(draw: st.DrawFn) -> PhaseInfo:
    """Mostly ongoing phases that often repeat (so unchanged rounds occur), sometimes an ending."""
    info = draw(st.sampled_from(INFOS))
    code = draw(st.sampled_from(CODES))
    message = draw(st.sampled_from(["m1", "m2"]))
    choice = draw(st.integers(0, 99))
    if choice < 65:
        phase = draw(st.sampled_from(COMMON_PHASES) | st.sampled_from(ONGOING_PHASES))
        version = draw(st.integers(0, 7)) if draw(st.integers(0, 19)) == 0 else draw(st.integers(0, 1))
        return PhaseInfo(phase, version=version, reason=draw(st.sampled_from(REASONS)), info=info)
    if choice < 77:
        return PhaseInfo.retryable_failure(code, message, info)
    if choice < 87:
        return PhaseInfo.system_retryable_failure(code, message, info)
    if choice < 90:
        return PhaseInfo(Phase.RETRYABLE_FAILURE, reason=draw(st.sampled_from(REASONS)))
    if choice < 93:
        return PhaseInfo.success(info)
    if choice < 95:
        return PhaseInfo.aborted(draw(st.sampled_from(REASONS)), info)
    if choice < 98:
        return PhaseInfo.failure(code, message, info)
    return PhaseInfo.system_failure(code, message, info)


@st.composite
def handled_outcomes(draw: st.DrawFn) -> Handled:
    if draw(st.integers(0, 9)) == 0:
        transition = UNKNOWN_TRANSITION
    else:
        requeue = draw(st.none() | st.floats(min_value=-10, max_value=10_000))
        transition = do_transition(
            draw(phase_infos()),
            requeue_after=requeue,
            type=draw(st.sampled_from(TransitionType)),
        )
    state = draw(
        st.none()
        | st.builds(StateChange, st.just(json.dumps({"n": 1})), st.integers(0, 3))
        | st.just(StateChange(None, 0))
    )
    outputs = draw(st.none() | st.builds(lambda n: {"n": n}, st.integers()))
    return Handled(transition, state, outputs)


rare_outcomes = st.one_of(
    st.builds(Rejected, st.sampled_from(["InvalidTransition", "PluginStateTooLarge"]), st.text(max_size=5)),
    st.builds(
        NoPlugin, st.sampled_from(["x", "y"]), st.lists(st.sampled_from(["echo", "core-sleep"])).map(tuple)
    ),
    st.builds(AbortRequested, st.sampled_from(["Aborted", "user"])),
)
outcomes = st.one_of(
    handled_outcomes(),
    handled_outcomes(),
    handled_outcomes(),
    st.builds(SystemFault, st.sampled_from(CODES), st.sampled_from(["boom", "slow"])),
    st.integers(0, 29).flatmap(lambda n: rare_outcomes if n == 0 else handled_outcomes()),
)
policies = st.builds(
    lambda failures, base, spread, requeue, versions: Policy(
        max_system_failures=failures,
        backoff_base=base,
        backoff_max=base + spread,
        default_requeue=requeue,
        max_phase_versions=versions,
    ),
    st.integers(1, 5),
    st.floats(min_value=0, max_value=100),
    st.floats(min_value=0, max_value=1000),
    st.floats(min_value=0, max_value=100),
    st.integers(1, 6),
)
clock_jumps = st.floats(min_value=-5, max_value=1e6)


@dataclass(frozen=True)
class AbortRequest:
    """Someone runs `executor abort` between rounds (what `store.request_abort` writes)."""

    reason: str


@dataclass(frozen=True)
class CleanupRun:
    """The loop runs the clean-up of an ended attempt; `abort_ok`/`finalize_ok`: did they succeed."""

    abort_ok: bool
    finalize_ok: bool


# One step of the world: what happens next, and how much time passed before it.
steps_strategy = st.lists(
    st.tuples(
        st.one_of(
            outcomes,
            outcomes,
            st.builds(AbortRequest, st.sampled_from(["user", "ops"])),
        ),
        clock_jumps | st.floats(min_value=0, max_value=30),
        st.builds(CleanupRun, st.booleans(), st.booleans() | st.just(True)),
    ),
    max_size=40,
)
limits = st.tuples(
    st.none() | st.floats(min_value=0.5, max_value=1e5),  # timeout
    st.none() | st.floats(min_value=1, max_value=1e6),  # deadline, from submission
    st.none() | st.floats(min_value=0, max_value=50),  # backoff base override
)


def _limits_of(record: ExecutionRecord) -> list[float]:
    ends = [record.deadline_at]
    if record.timeout is not None and record.attempt_started_at is not None:
        ends.append(record.attempt_started_at + record.timeout)
    return [end for end in ends if end is not None]


def _assert_backoff(record: ExecutionRecord, now: float, policy: Policy) -> None:
    """At least the base (and at most the maximum) after a failure, unless the round was brought
    forward to a timeout or the deadline, where the attempt is ended rather than handled again."""
    policy = policy_for(record, policy)
    delay = record.next_round_at - now
    if any(abs(record.next_round_at - end) < 1e-6 for end in _limits_of(record)):
        assert delay <= policy.backoff_max + 1e-3
        return
    assert policy.backoff_base - 1e-3 <= delay <= policy.backoff_max + 1e-3, delay


def _check_step(
    prev: ExecutionRecord, outcome: Outcome, now: float, policy: Policy, update: RecordUpdate
) -> None:
    """Everything one call to `advance` must do, outcome by outcome."""
    new = update.record
    # Always.
    assert new.id == prev.id and new.task_type == prev.task_type and new.inputs == prev.inputs
    assert new.rounds == prev.rounds + 1
    assert new.updated_at == now
    assert new.attempt == prev.attempt, "only a completed clean-up starts another attempt"
    assert 1 <= new.attempt <= new.max_attempts == prev.max_attempts
    assert 0 <= new.system_failures <= policy.max_system_failures
    assert new.phase is not Phase.UNDEFINED
    assert not new.finalized
    assert new.attempt_started_at == (prev.attempt_started_at or now)
    # Events: numbered on from the record's count, stamped now, the last one matching the record;
    # one exactly when what events record changed.
    assert [e.seq for e in update.events] == list(range(prev.event_seq + 1, new.event_seq + 1))
    assert all(e.execution_id == prev.id and e.occurred_at == now for e in update.events)
    assert len(update.events) == (1 if visible(new) != visible(prev) else 0)
    if update.events:
        last = update.events[-1]
        assert (last.attempt, last.phase, last.phase_version, last.reason, last.info, last.error) == (
            new.attempt,
            new.phase,
            new.phase_version,
            new.reason,
            new.info,
            new.error,
        )
    if new.phase.is_terminal:
        assert new.next_round_at == now, "an ended attempt's clean-up is due at once"
        assert new.finished_at == (now if new.phase.is_final else None)
        assert new.finalize_failures == 0
    else:
        assert new.finished_at is None
        assert not new.abort_owed
    # Plugin state and outputs.
    if isinstance(outcome, Handled) and outcome.state is not None:
        assert (new.plugin_state, new.plugin_state_version) == (outcome.state.data, outcome.state.version)
        assert update.state_changed
    else:
        assert (new.plugin_state, new.plugin_state_version) == (prev.plugin_state, prev.plugin_state_version)
        assert not update.state_changed
    if isinstance(outcome, Handled) and outcome.outputs is not None:
        assert new.outputs == outcome.outputs and update.outputs_changed
    else:
        assert new.outputs == prev.outputs and not update.outputs_changed

    match outcome:
        case SystemFault(code, message):
            _check_system_fault(prev, code, message, now, policy, update)
        case Rejected(code, message):
            assert (new.phase, new.reason) == (Phase.PERMANENT_FAILURE, code)
            assert new.error == ExecutionError(code, message, ErrorKind.SYSTEM)
            assert new.abort_owed
        case NoPlugin(task_type, known):
            assert (new.phase, new.reason) == (Phase.PERMANENT_FAILURE, "UnknownTaskType")
            assert new.error is not None and repr(task_type) in new.error.message
            assert all(k in new.error.message for k in known)
            assert not new.abort_owed  # no plugin to call
        case AbortRequested(reason):
            assert (new.phase, new.reason) == (Phase.ABORTED, reason)
            assert new.error is None
            assert new.abort_owed == (prev.attempt_started_at is not None)
        case Expired(code):
            if code == "DeadlineExceeded":
                assert (new.phase, new.reason) == (Phase.PERMANENT_FAILURE, code)
            elif prev.attempt < prev.max_attempts:
                assert (new.phase, new.reason) == (Phase.RETRYABLE_FAILURE, code)
            else:
                assert (new.phase, new.reason) == (Phase.PERMANENT_FAILURE, "MaxRetriesExceeded")
            assert new.abort_owed == (prev.attempt_started_at is not None)
        case Handled(transition):
            _check_handled(prev, transition, now, policy, update)


def _check_system_fault(
    prev: ExecutionRecord, code: str, message: str, now: float, policy: Policy, update: RecordUpdate
) -> None:
    new = update.record
    if prev.system_failures + 1 >= policy.max_system_failures:
        assert new.system_failures == policy.max_system_failures
        assert (new.phase, new.reason) == (Phase.PERMANENT_FAILURE, "MaxSystemFailuresExceeded")
        assert new.error is not None and code in new.error.message and message in new.error.message
        assert new.abort_owed
    else:
        assert new.system_failures == prev.system_failures + 1
        assert (new.phase, new.phase_version, new.reason) == (prev.phase, prev.phase_version, code)
        assert new.error is not None and (new.error.code, new.error.kind) == (code, ErrorKind.SYSTEM)
        _assert_backoff(new, now, policy)


def _check_handled(
    prev: ExecutionRecord, transition: Transition, now: float, policy: Policy, update: RecordUpdate
) -> None:
    new, info = update.record, transition.phase_info
    requeue = (
        transition.requeue_after.total_seconds()
        if transition.requeue_after is not None
        else policy.default_requeue
    )
    if info.phase is Phase.WAITING_FOR_RESOURCES:
        requeue = max(requeue, policy.default_requeue)
    expected_next = min([now + requeue, *_limits_of(new)])
    if info.phase is Phase.UNDEFINED:
        assert update.events == ()
        assert visible(new) == visible(prev) and new.error == prev.error
        assert new.system_failures == prev.system_failures
        assert new.next_round_at == expected_next
    elif info.version > policy.max_phase_versions:
        assert (new.phase, new.reason) == (Phase.PERMANENT_FAILURE, "TooManyPhaseVersions")
    elif info.phase is Phase.RETRYABLE_FAILURE:
        error = info.error
        if error is not None and error.kind is ErrorKind.SYSTEM:
            _check_system_fault(prev, error.code, error.message, now, policy, update)
        elif prev.attempt < prev.max_attempts:
            assert (new.phase, new.attempt, new.abort_owed) == (Phase.RETRYABLE_FAILURE, prev.attempt, True)
            assert [(e.attempt, e.phase) for e in update.events] == [(prev.attempt, Phase.RETRYABLE_FAILURE)]
            assert update.events[0].info == (info.info.to_dict() if info.info is not None else None)
        else:
            assert (new.phase, new.reason) == (Phase.PERMANENT_FAILURE, "MaxRetriesExceeded")
            assert new.error is not None
            if error is not None:
                assert error.code in new.error.message and error.message in new.error.message
    else:
        assert (new.phase, new.phase_version, new.reason) == (info.phase, info.version, info.reason)
        assert new.error == info.error
        assert new.info == (info.info.to_dict() if info.info is not None else None)
        assert new.system_failures == prev.system_failures  # a good round resets nothing
        if not info.phase.is_final:
            assert new.next_round_at == expected_next


def _check_cleanup(
    prev: ExecutionRecord, run: CleanupRun, now: float, policy: Policy, update: RecordUpdate
) -> None:
    new = update.record
    completed = (run.abort_ok or not prev.abort_owed) and run.finalize_ok
    assert new.abort_owed == (prev.abort_owed and not run.abort_ok)
    if not completed:
        assert (new.phase, new.attempt, new.finalized) == (prev.phase, prev.attempt, False)
        assert new.finalize_failures == prev.finalize_failures + 1
        assert new.system_failures == prev.system_failures, "finalize has a counter of its own"
        assert update.events == ()
        _assert_backoff(new, now, policy)
    elif prev.phase.is_final:
        assert new.finalized and new.phase is prev.phase and update.events == ()
    elif new.attempt == prev.attempt + 1:
        assert (new.phase, new.phase_version, new.finalized, new.abort_owed) == (
            Phase.QUEUED,
            0,
            False,
            False,
        )
        assert (new.plugin_state, new.outputs, new.system_failures) == (None, None, 0)
        assert update.state_changed and update.outputs_changed
        _assert_backoff(new, now, policy)
    else:  # aborted meanwhile, or past the deadline: the execution ends here, already cleaned up
        assert new.phase in (Phase.ABORTED, Phase.PERMANENT_FAILURE) and new.finalized
        assert new.attempt == prev.attempt


@given(
    execution_id=st.text(min_size=1, max_size=8),
    max_attempts=st.integers(1, 4),
    policy=policies,
    limit=limits,
    steps=steps_strategy,
)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_rounds_keep_every_invariant(
    execution_id: str,
    max_attempts: int,
    policy: Policy,
    limit: tuple[float | None, float | None, float | None],
    steps: list[tuple[Outcome | AbortRequest, float, CleanupRun]],
) -> None:
    """Drive one execution the way the loop does, through random rounds, clean-ups (that may fail),
    abort requests and clock jumps, and check the lifecycle's invariants at every step."""
    timeout, deadline, base = limit
    record = replace(
        submitted(execution_id, max_attempts=max_attempts),
        timeout=timeout,
        deadline_at=T0 + deadline if deadline is not None else None,
        backoff_base=base,
    )
    now = T0
    last_key: tuple[object, ...] = (1, Phase.QUEUED, 0, "Submitted", None)
    seqs = [1]
    ended_attempts: list[int] = []  # each attempt that reached a terminal phase, in order
    cleanups: dict[int, int] = {}  # attempt -> clean-ups that completed (finalize ran to the end)
    for happening, jump, cleanup_run in steps:
        now = max(now + jump, T0)
        if record.finalized:
            break  # out of the claimable set: nothing happens to it any more
        if isinstance(happening, AbortRequest):
            if not record.phase.is_final:
                record = replace(record, abort_requested=True, abort_reason=happening.reason)
            continue
        if record.phase.is_terminal:
            cleanup = Cleanup(
                aborted=cleanup_run.abort_ok or not record.abort_owed,
                finalized=(cleanup_run.abort_ok or not record.abort_owed) and cleanup_run.finalize_ok,
                error=None if cleanup_run.finalize_ok else "finalize raised",
            )
            update = cleaned_up(record, cleanup, now, policy)
            assert update == cleaned_up(record, cleanup, now, policy), "clean-up must be deterministic"
            _check_cleanup(record, cleanup_run, now, policy, update)
            if update.record.finalized or update.record.attempt == record.attempt + 1:
                cleanups[record.attempt] = cleanups.get(record.attempt, 0) + 1
            if update.record.attempt == record.attempt + 1:
                assert cleanups.get(record.attempt) == 1, "a new attempt only after the old one's finalize"
        else:
            # What the loop does with a claimed execution: an abort request first, then expiry.
            outcome: Outcome
            if record.abort_requested:
                outcome = AbortRequested(record.abort_reason or "Aborted")
            else:
                outcome = expired(record, now) or happening
            update = advance(record, outcome, now, policy)
            assert update == advance(record, outcome, now, policy), "advance must be deterministic"
            _check_step(record, outcome, now, policy, update)
            if update.record.phase.is_terminal:
                ended_attempts.append(update.record.attempt)
        for event in update.events:
            assert event_key(event) != last_key, "duplicate consecutive event"
            last_key = event_key(event)
            seqs.append(event.seq)
        if record.phase.is_final:
            assert update.record.phase is record.phase, "a final phase is final"
        record = update.record
        assert 1 <= record.attempt <= max_attempts, "attempts never exceed the budget"
        assert record.system_failures <= policy.max_system_failures, "the system-failure cap holds"
    assert seqs == list(range(1, len(seqs) + 1)), "events are numbered without gaps or repeats"
    assert record.event_seq == seqs[-1]
    # Finalize is owed exactly once per terminal attempt: never twice, and once done, nothing more.
    assert all(count == 1 for count in cleanups.values())
    assert set(cleanups) <= set(ended_attempts)
    assert len(ended_attempts) == len(set(ended_attempts)), "an attempt ends once"
    if record.finalized:
        assert record.phase.is_final and set(cleanups) == set(ended_attempts)


@given(steps=st.lists(st.tuples(outcomes, clock_jumps), min_size=1, max_size=15), policy=policies)
@settings(max_examples=100, deadline=None)
def test_advance_depends_only_on_its_arguments(steps: list[tuple[Outcome, float]], policy: Policy) -> None:
    """Two runs over the same sequence give identical records and events at every step."""

    def run() -> list[RecordUpdate]:
        record, now, updates = submitted("same", max_attempts=3), T0, []
        for outcome, jump in steps:
            now += jump
            update = advance(record, outcome, now, policy)
            updates.append(update)
            record = update.record
            if record.phase.is_terminal:
                update = cleaned_up(record, Cleanup(True, True), now, policy)
                updates.append(update)
                record = update.record
            if record.finalized:
                break
        return updates

    assert run() == run()


cleanups = st.builds(
    Cleanup,
    aborted=st.booleans(),
    finalized=st.booleans(),
    error=st.one_of(st.none(), st.just("finalize raised")),
)


@given(
    steps=st.lists(st.tuples(outcomes, clock_jumps, cleanups), min_size=1, max_size=15),
    policy=policies,
    max_attempts=st.integers(min_value=1, max_value=4),
    deadline=st.one_of(st.none(), st.floats(min_value=0, max_value=100)),
    abort_requested=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_advance_and_clean_up_is_advance_then_with_cleanup(
    steps: list[tuple[Outcome, float, Cleanup]],
    policy: Policy,
    max_attempts: int,
    deadline: float | None,
    abort_requested: bool,
) -> None:
    """One call, one record built: the same update as `advance`, then `with_cleanup` when the
    attempt ended, whatever the clean-up achieved."""
    record = replace(
        submitted("same", max_attempts=max_attempts),
        deadline_at=T0 + deadline if deadline is not None else None,
    )
    now = T0
    for index, (outcome, jump, cleanup) in enumerate(steps):
        now = max(now + jump, T0)
        if index == len(steps) // 2 and abort_requested and not record.phase.is_final:
            record = replace(record, abort_requested=True, abort_reason="stop")
        if record.phase.is_terminal:
            record = cleaned_up(record, Cleanup(True, True), now, policy).record
            if record.finalized:
                break
            continue
        update, settled = advance_and_clean_up(record, outcome, now, policy, cleanup)
        plain = advance(record, outcome, now, policy)
        ended = plain.record.phase.is_terminal and not plain.record.finalized
        assert settled == ended
        assert update == (with_cleanup(plain, cleanup, now, policy) if ended else plain)
        record = plain.record
