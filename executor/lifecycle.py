"""The state machine of an execution, as pure functions.

Given the record a round claimed and what happened to it (the plugin returned a transition, raised,
timed out, returned garbage, or no plugin handles its type), `advance` decides the next record and
the events to append. No I/O and no clock: `now` is an argument, and backoff jitter is derived from
the execution's id, so the same inputs always give the same decision. This is what lets the whole
lifecycle be tested exhaustively with property tests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

from executor.core import ErrorKind, ExecutionError, Phase, PhaseInfo, Transition
from executor.core.records import EventRecord, ExecutionRecord, RecordUpdate, StateChange


@dataclass(frozen=True, slots=True)
class Policy:
    """The daemon's limits, as the lifecycle needs them (seconds for every duration)."""

    max_system_failures: int = 3
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    #: When a plugin does not say when it wants the next round.
    default_requeue: float = 1.0
    max_phase_versions: int = 1000


@dataclass(frozen=True, slots=True)
class Handled:
    transition: Transition
    state: StateChange | None = None
    outputs: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SystemFault:
    """`handle` raised or timed out: a passing fault of the platform, retried within the attempt."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """The plugin broke the contract (garbage returned, state too large or unreadable): retrying
    the same code on the same data cannot help, so the execution fails permanently."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class NoPlugin:
    task_type: str
    known_task_types: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AbortRequested:
    reason: str
    #: Set when the plugin's `abort` raised; the execution ends ABORTED all the same.
    abort_error: str | None = None


Outcome = Handled | SystemFault | Rejected | NoPlugin | AbortRequested


def advance(record: ExecutionRecord, outcome: Outcome, now: float, policy: Policy) -> RecordUpdate:
    """The record and events that follow `outcome` for `record`, claimed and handled at `now`."""
    record = replace(
        record,
        rounds=record.rounds + 1,
        attempt_started_at=record.attempt_started_at if record.attempt_started_at is not None else now,
    )
    match outcome:
        case Handled():
            return _handled(record, outcome, now, policy)
        case SystemFault(code, message):
            return _system_fault(record, ExecutionError(code, message, ErrorKind.SYSTEM), now, policy)
        case Rejected(code, message):
            return _finish(record, PhaseInfo.system_failure(code, message), now)
        case NoPlugin(task_type, known):
            known_text = ", ".join(known) if known else "none"
            message = f"no plugin handles task type {task_type!r}; known task types: {known_text}"
            return _finish(record, PhaseInfo.system_failure("UnknownTaskType", message), now)
        case AbortRequested(reason, abort_error):
            info = PhaseInfo.aborted(reason)
            if abort_error is not None:
                error = ExecutionError("AbortFailed", abort_error, ErrorKind.SYSTEM)
                info = replace(info, error=error)
            return _finish(record, info, now)


def finalized(record: ExecutionRecord, *, succeeded: bool, now: float, policy: Policy) -> ExecutionRecord:
    """The record after `finalize` ran for a finished execution: done, or due again after a backoff."""
    if succeeded:
        return replace(record, finalized=True, updated_at=now)
    failures = record.system_failures + 1
    return replace(
        record,
        system_failures=failures,
        next_round_at=now + backoff_delay(record.id, failures, policy),
        updated_at=now,
    )


def backoff_delay(execution_id: str, failures: int, policy: Policy) -> float:
    """Exponential backoff with jitter, never below the base nor above the maximum.

    The jitter comes from a hash of the execution id and the failure count, so replicas that
    fail many executions at once spread their retries without the lifecycle needing randomness.
    """
    # The exponent is capped: 2.0 ** 1024 overflows, and far below that the maximum applies anyway.
    exponential = policy.backoff_base * 2.0 ** min(max(failures - 1, 0), 64)
    digest = hashlib.blake2b(f"{execution_id}:{failures}".encode(), digest_size=8).digest()
    jitter = int.from_bytes(digest, "big") / 2.0**64  # in [0, 1)
    return max(policy.backoff_base, min(policy.backoff_max, exponential * (1.0 + 0.5 * jitter)))


def _handled(record: ExecutionRecord, outcome: Handled, now: float, policy: Policy) -> RecordUpdate:
    transition = outcome.transition
    info = transition.phase_info
    state_changed = outcome.state is not None
    if outcome.state is not None:
        record = replace(record, plugin_state=outcome.state.data, plugin_state_version=outcome.state.version)
    outputs_changed = outcome.outputs is not None
    if outcome.outputs is not None:
        record = replace(record, outputs=outcome.outputs)

    requeue = (
        transition.requeue_after.total_seconds()
        if transition.requeue_after is not None
        else policy.default_requeue
    )
    if info.phase is Phase.UNDEFINED:
        # "Nothing to report": keep everything, look again later.
        unchanged = replace(record, next_round_at=now + requeue, updated_at=now)
        return RecordUpdate(unchanged, (), state_changed, outputs_changed)
    if info.version > policy.max_phase_versions:
        failure = PhaseInfo.system_failure(
            "TooManyPhaseVersions",
            f"phase {info.phase.name} reached version {info.version}, "
            f"above the limit of {policy.max_phase_versions}",
        )
        return _with_changes(_finish(record, failure, now), state_changed, outputs_changed)
    if info.phase is Phase.RETRYABLE_FAILURE:
        error = info.error or ExecutionError("RetryableFailure", info.reason or "", ErrorKind.UNKNOWN)
        if error.kind is ErrorKind.SYSTEM:
            update = _system_fault(record, error, now, policy)
        else:
            update = _user_retry(record, error, now, policy)
        return _with_changes(update, state_changed, outputs_changed)
    if info.phase.is_final:
        return _with_changes(_finish(record, info, now), state_changed, outputs_changed)
    update = _move(record, info, now, next_round_at=now + requeue)
    return _with_changes(update, state_changed, outputs_changed)


def _user_retry(record: ExecutionRecord, error: ExecutionError, now: float, policy: Policy) -> RecordUpdate:
    """A retryable failure of the user's work: a new attempt from a clean state, after a backoff."""
    if record.attempt >= record.max_attempts:
        message = f"attempt {record.attempt} of {record.max_attempts} failed: {error.code}: {error.message}"
        return _finish(record, PhaseInfo.failure("MaxRetriesExceeded", message), now)
    ended = _move(record, PhaseInfo(Phase.RETRYABLE_FAILURE, reason=error.code, error=error), now)
    new_attempt = replace(
        ended.record,
        attempt=record.attempt + 1,
        system_failures=0,
        plugin_state=None,
        plugin_state_version=0,
        attempt_started_at=None,
        phase=Phase.UNDEFINED,  # so that QUEUED below always reads as a change
    )
    delay = backoff_delay(record.id, record.attempt, policy)
    queued = _move(
        new_attempt,
        PhaseInfo.queued(f"Retrying after {error.code}"),
        now,
        next_round_at=now + delay,
    )
    return RecordUpdate(queued.record, ended.events + queued.events, state_changed=True)


def _system_fault(record: ExecutionRecord, error: ExecutionError, now: float, policy: Policy) -> RecordUpdate:
    """Spend one unit of the system-failure budget; retry the round after a backoff, or give up."""
    failures = record.system_failures + 1
    if failures >= policy.max_system_failures:
        message = (
            f"{failures} system failures in attempt {record.attempt}; last: {error.code}: {error.message}"
        )
        failed = replace(record, system_failures=failures)
        return _finish(failed, PhaseInfo.system_failure("MaxSystemFailuresExceeded", message), now)
    faulted = replace(record, system_failures=failures)
    info = PhaseInfo(record.phase, record.phase_version, reason=error.code, error=error)
    return _move(faulted, info, now, next_round_at=now + backoff_delay(record.id, failures, policy))


def _finish(record: ExecutionRecord, info: PhaseInfo, now: float) -> RecordUpdate:
    """End the execution; `finalize` is owed, so it stays claimable until that is recorded."""
    update = _move(record, info, now, next_round_at=now)
    return replace(update, record=replace(update.record, finished_at=now))


def _move(
    record: ExecutionRecord, info: PhaseInfo, now: float, *, next_round_at: float | None = None
) -> RecordUpdate:
    """Set the phase; append an event when phase, version, reason or info changed."""
    info_dict = info.info.to_dict() if info.info is not None else None
    changed = (
        info.phase is not record.phase
        or info.version != record.phase_version
        or info.reason != record.reason
        or info_dict != record.info
    )
    updated = replace(
        record,
        phase=info.phase,
        phase_version=info.version,
        reason=info.reason,
        error=info.error,
        info=info_dict,
        next_round_at=next_round_at if next_round_at is not None else record.next_round_at,
        updated_at=now,
    )
    if not changed:
        return RecordUpdate(updated)
    event = EventRecord(
        execution_id=record.id,
        seq=record.event_seq + 1,
        attempt=updated.attempt,
        phase=info.phase,
        phase_version=info.version,
        occurred_at=now,
        reason=info.reason,
        error=info.error,
        info=info_dict,
    )
    return RecordUpdate(replace(updated, event_seq=event.seq), (event,))


def _with_changes(update: RecordUpdate, state_changed: bool, outputs_changed: bool) -> RecordUpdate:
    return replace(
        update,
        state_changed=update.state_changed or state_changed,
        outputs_changed=update.outputs_changed or outputs_changed,
    )
