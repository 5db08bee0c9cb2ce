"""The state machine of an execution, as pure functions.

Given the record a round claimed and what happened to it (the plugin returned a transition, raised,
timed out, returned garbage, or no plugin handles its type), `advance` decides the next record and
the events to append. No I/O and no clock: `now` is an argument, and backoff jitter is derived from
the execution's id, so the same inputs always give the same decision. This is what lets the whole
lifecycle be tested exhaustively with property tests.

An attempt ends in a terminal phase (SUCCESS, RETRYABLE_FAILURE, PERMANENT_FAILURE, ABORTED). The
commit that ends it leaves the row claimable with its plugin state intact, and marks whether the
plugin's `abort` is owed; `cleaned_up` then records the outcome of `abort` and `finalize`. Only
once both ran does a RETRYABLE_FAILURE become the next attempt (state and outputs cleared, QUEUED,
after a backoff). So a crash between the commit and `finalize` loses nothing: the row is still
terminal and unfinalized, and the next claim runs the clean-up, once to completion.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from operator import attrgetter
from typing import Any, Final

from executor.core import ErrorKind, ExecutionError, Phase, PhaseInfo, TaskInfo, Transition
from executor.core.records import (
    RECORD_FIELDS,
    EventRecord,
    ExecutionRecord,
    RecordDraft,
    RecordUpdate,
    StateChange,
    frozen_record,
)


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
    #: `outputs` as JSON text, when the plugin's output writer already encoded them.
    outputs_json: str | None = None


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
    """The plugin's `abort` runs afterwards, in the clean-up, and is retried there if it raises."""

    reason: str


@dataclass(frozen=True, slots=True)
class Expired:
    """The attempt ran past its `timeout`, or the execution past its `deadline` (see `expired`)."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Cleanup:
    """What the clean-up of a terminal attempt achieved: `abort` (when owed) and `finalize`."""

    aborted: bool
    finalized: bool
    #: Why the clean-up did not complete (the error `abort` or `finalize` raised).
    error: str | None = None


Outcome = Handled | SystemFault | Rejected | NoPlugin | AbortRequested | Expired

TIMEOUT_EXPIRED = "TimeoutExpired"
DEADLINE_EXCEEDED = "DeadlineExceeded"


def expired(record: ExecutionRecord | RecordDraft, now: float) -> Expired | None:
    """Whether a claimed, still running execution is past its deadline or its attempt's timeout.

    Checked before `handle` is called: an expired attempt is not handled again, it is ended (and
    its `abort` and `finalize` run). The deadline wins when both have passed: it is final.
    """
    if record.deadline_at is not None and now >= record.deadline_at:
        lasted = now - record.created_at
        return Expired(
            DEADLINE_EXCEEDED,
            f"the execution's deadline passed {lasted:.3f}s after submission "
            f"(deadline {record.deadline_at - record.created_at:g}s), in attempt {record.attempt}",
        )
    ends = attempt_ends_at(record)
    if ends is not None and now >= ends:
        return Expired(
            TIMEOUT_EXPIRED,
            f"attempt {record.attempt} ran for {now - (record.attempt_started_at or now):.3f}s, "
            f"over its timeout of {record.timeout:g}s",
        )
    return None


def attempt_ends_at(record: ExecutionRecord | RecordDraft) -> float | None:
    """When the current attempt times out (None: no timeout, or it has not started)."""
    if record.timeout is None or record.attempt_started_at is None:
        return None
    return record.attempt_started_at + record.timeout


def policy_for(record: ExecutionRecord | RecordDraft, policy: Policy) -> Policy:
    """The daemon's policy with the submission's own backoff, when it gave one.

    A draft gives the claimed record's backoff: no round changes a submission's own settings.
    """
    if record.backoff_base is None and record.backoff_max is None:
        return policy
    base = record.backoff_base if record.backoff_base is not None else policy.backoff_base
    ceiling = record.backoff_max if record.backoff_max is not None else max(policy.backoff_max, base)
    return replace(policy, backoff_base=base, backoff_max=max(ceiling, base))


def advance(record: ExecutionRecord, outcome: Outcome, now: float, policy: Policy) -> RecordUpdate:
    """The record and events that follow `outcome` for `record`, claimed and handled at `now`."""
    draft, events, state_changed, outputs_changed = _advanced(record, outcome, now, policy)
    return RecordUpdate(frozen_record(draft), events, state_changed, outputs_changed, _outputs_json(outcome))


def advance_and_clean_up(
    record: ExecutionRecord, outcome: Outcome, now: float, policy: Policy, cleanup: Cleanup
) -> tuple[RecordUpdate, bool]:
    """`advance`, and when that ends the attempt, `cleanup` recorded with it; True when it was.

    The same update as `with_cleanup(advance(...), cleanup, ...)` when the attempt ends, else as
    `advance(...)`: for a clean-up that runs nothing, known before the round, recorded in the
    commit that ends the attempt. The record is built once, not once per step.
    """
    draft, events, state_changed, outputs_changed = _advanced(record, outcome, now, policy)
    outputs_json = _outputs_json(outcome)
    if not draft.phase.is_terminal or draft.finalized:
        return RecordUpdate(frozen_record(draft), events, state_changed, outputs_changed, outputs_json), False
    more, reset = _clean_up(draft, cleanup, now, policy)
    update = RecordUpdate(
        frozen_record(draft),
        events + more,
        state_changed or reset,
        outputs_changed or reset,
        None if reset else outputs_json,  # a new attempt starts with no outputs
    )
    return update, True


def _outputs_json(outcome: Outcome) -> str | None:
    """The JSON text of the outputs a round stores, when the plugin's writer made it already."""
    return outcome.outputs_json if isinstance(outcome, Handled) and outcome.outputs is not None else None


def _advanced(
    record: ExecutionRecord, outcome: Outcome, now: float, policy: Policy
) -> tuple[RecordDraft, Events, bool, bool]:
    """What `advance` decides: the draft of the next record, the events, whether state and
    outputs changed."""
    draft = _draft_of(record)
    draft.rounds = record.rounds + 1
    # Whether the attempt had begun. Only AbortRequested and Expired ask, and they come instead of
    # `handle`, so this round does not count (after a Handled, SystemFault or Rejected it would).
    started = record.attempt_started_at is not None
    if not started:
        draft.attempt_started_at = now
    match outcome:
        case Handled():
            events = _handled(draft, outcome, now, policy)
            return draft, events, outcome.state is not None, outcome.outputs is not None
        case SystemFault(code, message):
            events = _system_fault(draft, ExecutionError(code, message, ErrorKind.SYSTEM), now, policy)
        case Rejected(code, message):
            events = _finish(draft, PhaseInfo.system_failure(code, message), now, abort=True)
        case NoPlugin(task_type, known):
            known_text = ", ".join(known) if known else "none"
            message = f"no plugin handles task type {task_type!r}; known task types: {known_text}"
            events = _finish(draft, PhaseInfo.system_failure("UnknownTaskType", message), now)
        case AbortRequested(reason):
            # An attempt that never ran has nothing to stop, so `abort` is owed only once it started.
            events = _finish(draft, PhaseInfo.aborted(reason), now, abort=started)
        case Expired(code, message):
            error = ExecutionError(code, message, ErrorKind.USER)
            if code == TIMEOUT_EXPIRED:
                events = _user_retry(draft, error, now, policy, abort=started)
            else:
                failure = PhaseInfo(Phase.PERMANENT_FAILURE, reason=code, error=error)
                events = _finish(draft, failure, now, abort=started)
    return draft, events, False, False


def cleaned_up(record: ExecutionRecord, cleanup: Cleanup, now: float, policy: Policy) -> RecordUpdate:
    """The record after the clean-up of its terminal attempt ran: `abort` (when owed), `finalize`.

    Done for a final phase: the execution is finished for good. Done for a RETRYABLE_FAILURE: the
    next attempt starts, clean (no state, no outputs), QUEUED after a backoff, unless an abort was
    requested meanwhile or the deadline passed. Not done: it is retried after a backoff of its own
    (the finalize failure count, separate from the attempt's system failures).
    """
    draft = _draft_of(record)
    events, reset = _clean_up(draft, cleanup, now, policy)
    return RecordUpdate(frozen_record(draft), events, reset, reset)


def _clean_up(draft: RecordDraft, cleanup: Cleanup, now: float, policy: Policy) -> tuple[Events, bool]:
    """`cleaned_up` on a draft: the events, and whether state and outputs were cleared (a new attempt).

    Every value read here is the draft's before this clean-up changed it (they are read first).
    """
    record_id, attempt, reason = draft.id, draft.attempt, draft.reason
    draft.abort_owed = draft.abort_owed and not cleanup.aborted
    draft.updated_at = now
    if not cleanup.finalized:
        failures = draft.finalize_failures + 1
        delay = backoff_delay(record_id, failures, policy_for(draft, policy))
        draft.finalize_failures = failures
        draft.finalize_error = cleanup.error
        draft.next_round_at = now + delay
        return (), False
    draft.finalized = True
    draft.finalize_error = None
    if draft.phase.is_final:
        return (), False
    # A RETRYABLE_FAILURE whose attempt is cleaned up.
    if draft.abort_requested:
        events = _finish(draft, PhaseInfo.aborted(draft.abort_reason or "Aborted"), now, cleaned=True)
        return events, False
    if draft.deadline_at is not None and now >= draft.deadline_at:
        # The deadline is checked first, and the clean-up changed none of what it reads.
        lapsed = expired(draft, now)
        assert lapsed is not None
        failure = PhaseInfo(
            Phase.PERMANENT_FAILURE,
            reason=lapsed.code,
            error=ExecutionError(lapsed.code, lapsed.message, ErrorKind.USER),
        )
        return _finish(draft, failure, now, cleaned=True), False
    failed_code = reason or "RetryableFailure"
    draft.attempt = attempt + 1
    draft.system_failures = 0
    draft.finalize_failures = 0
    draft.finalized = False
    draft.plugin_state = None
    draft.plugin_state_version = 0
    draft.outputs = None
    draft.attempt_started_at = None
    delay = backoff_delay(record_id, attempt, policy_for(draft, policy))
    events = _move(
        draft,
        PhaseInfo.queued(f"Retrying after {failed_code}"),
        now,
        next_round_at=_bounded(draft, now + delay),
    )
    return events, True


def with_cleanup(update: RecordUpdate, cleanup: Cleanup, now: float, policy: Policy) -> RecordUpdate:
    """`update`, which ended an attempt, and what its clean-up did (see `cleaned_up`), as one update:
    for a clean-up recorded in the same commit as the end of its attempt."""
    cleaned = cleaned_up(update.record, cleanup, now, policy)
    return RecordUpdate(
        cleaned.record,
        update.events + cleaned.events,
        state_changed=update.state_changed or cleaned.state_changed,
        outputs_changed=update.outputs_changed or cleaned.outputs_changed,
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


#: All of a record's field values at once, in constructor order: one C call, not ~40 reads.
_field_values: Final = attrgetter(*RECORD_FIELDS)


def _draft_of(record: ExecutionRecord) -> RecordDraft:
    """A draft of the record after `record`, equal to it until a step changes a field.

    (It used to be the claimed record plus a dict of changes: each read went through
    `__getattr__`, ~0.4 µs, each step merged a kwargs dict, and `dataclasses.replace` ran the
    frozen `__init__` to make the record; a round cost 13-16 µs.)
    """
    return RecordDraft(*_field_values(record))


Events = tuple[EventRecord, ...]


def _handled(draft: RecordDraft, outcome: Handled, now: float, policy: Policy) -> Events:
    # A round never changes the submission's own backoff: the claimed record's is the one.
    policy = policy_for(draft, policy)
    transition = outcome.transition
    info = transition.phase_info
    state = outcome.state
    if state is not None:
        draft.plugin_state = state.data
        draft.plugin_state_version = state.version
    if outcome.outputs is not None:
        draft.outputs = outcome.outputs

    requeue = (
        transition.requeue_after.total_seconds()
        if transition.requeue_after is not None
        else policy.default_requeue
    )
    if info.phase is Phase.WAITING_FOR_RESOURCES:
        # Asked again later, never in a tight loop: a refused allocation frees up only with time.
        requeue = max(requeue, policy.default_requeue)
    if info.phase is Phase.UNDEFINED:
        # "Nothing to report": keep everything, look again later.
        draft.next_round_at = _bounded(draft, now + requeue)
        draft.updated_at = now
        return ()
    if info.version > policy.max_phase_versions:
        failure = PhaseInfo.system_failure(
            "TooManyPhaseVersions",
            f"phase {info.phase.name} reached version {info.version}, "
            f"above the limit of {policy.max_phase_versions}",
        )
        return _finish(draft, failure, now, abort=True)
    if info.phase is Phase.RETRYABLE_FAILURE:
        error = info.error or ExecutionError("RetryableFailure", info.reason or "", ErrorKind.UNKNOWN)
        if error.kind is ErrorKind.SYSTEM:
            return _system_fault(draft, error, now, policy)
        # Before another attempt, `abort` then `finalize` the failed one.
        return _user_retry(draft, error, now, policy, abort=True, info=info.info)
    if info.phase.is_final:
        # Flyte's CleanupOnFailure: a plugin that failed may still want its remote work stopped.
        abort = info.phase.is_failure and info.cleanup_on_failure
        return _finish(draft, info, now, abort=abort)
    return _move(draft, info, now, next_round_at=_bounded(draft, now + requeue))


def _user_retry(
    draft: RecordDraft,
    error: ExecutionError,
    now: float,
    policy: Policy,
    *,
    abort: bool,
    info: TaskInfo | None = None,
) -> Events:
    """A retryable failure of the user's work: the attempt ends RETRYABLE_FAILURE, owing its
    clean-up; `cleaned_up` starts the next one. Out of attempts: MaxRetriesExceeded."""
    if draft.attempt >= draft.max_attempts:
        message = f"attempt {draft.attempt} of {draft.max_attempts} failed: {error.code}: {error.message}"
        return _finish(draft, PhaseInfo.failure("MaxRetriesExceeded", message, info), now, abort=abort)
    ended = PhaseInfo(Phase.RETRYABLE_FAILURE, reason=error.code, error=error, info=info)
    return _finish(draft, ended, now, abort=abort)


def _system_fault(draft: RecordDraft, error: ExecutionError, now: float, policy: Policy) -> Events:
    """Spend one unit of the system-failure budget; retry the round after a backoff, or give up."""
    failures = draft.system_failures + 1
    draft.system_failures = failures
    if failures >= policy.max_system_failures:
        message = (
            f"{failures} system failures in attempt {draft.attempt}; last: {error.code}: {error.message}"
        )
        info = PhaseInfo.system_failure("MaxSystemFailuresExceeded", message)
        return _finish(draft, info, now, abort=True)
    info = PhaseInfo(draft.phase, draft.phase_version, reason=error.code, error=error)
    delay = backoff_delay(draft.id, failures, policy_for(draft, policy))
    return _move(draft, info, now, next_round_at=_bounded(draft, now + delay))


def _finish(
    draft: RecordDraft, info: PhaseInfo, now: float, *, abort: bool = False, cleaned: bool = False
) -> Events:
    """End the attempt in a terminal phase. Unless it is already `cleaned` up, its clean-up is owed
    (`abort` first when `abort`), so it stays claimable, due now, until `cleaned_up` records it."""
    events = _move(draft, info, now, next_round_at=now)
    draft.finished_at = now if info.phase.is_final else None
    draft.finalized = cleaned
    draft.abort_owed = abort and not cleaned
    draft.finalize_error = None
    if not cleaned:
        draft.finalize_failures = 0
    return events


def _bounded(draft: RecordDraft, next_round_at: float) -> float:
    """No later than the attempt's timeout or the deadline: the round that finds them ends it.

    The first of the three that is smallest, as `min` would pick it, without building a list for
    the usual record, which has neither.
    """
    ends = attempt_ends_at(draft)
    if ends is not None and ends < next_round_at:
        next_round_at = ends
    deadline = draft.deadline_at
    if deadline is not None and deadline < next_round_at:
        next_round_at = deadline
    return next_round_at


def _move(draft: RecordDraft, info: PhaseInfo, now: float, *, next_round_at: float | None = None) -> Events:
    """Set the phase; append an event when phase, version, reason or info changed."""
    info_dict = info.info.to_dict() if info.info is not None else None
    changed = (
        info.phase is not draft.phase
        or info.version != draft.phase_version
        or info.reason != draft.reason
        or info_dict != draft.info
    )
    draft.phase = info.phase
    draft.phase_version = info.version
    draft.reason = info.reason
    draft.error = info.error
    draft.info = info_dict
    draft.updated_at = now
    if next_round_at is not None:
        draft.next_round_at = next_round_at
    if not changed:
        return ()
    seq = draft.event_seq + 1
    draft.event_seq = seq
    event = EventRecord(
        execution_id=draft.id,
        seq=seq,
        attempt=draft.attempt,
        phase=info.phase,
        phase_version=info.version,
        occurred_at=now,
        reason=info.reason,
        error=info.error,
        info=info_dict,
    )
    return (event,)
