"""What an execution that ended looks like when it is requeued: pure, like the lifecycle.

A requeue is a new attempt of the same execution: the same id, inputs, labels and events so far,
the attempt count one more, QUEUED now, with a clean slate for the attempt (no plugin state, no
outputs, no error, no clean-up owed). It is given one attempt of its own: `max_attempts` grows to
the new attempt's number if it was lower, so the lifecycle runs it (and retries it no further than
the submission allowed). A deadline that has passed is dropped: kept, it would fail the new attempt
before it ran. The event that opens the attempt says who asked for it.
"""

from __future__ import annotations

from dataclasses import replace

from executor.core import Phase
from executor.core.records import EventRecord, ExecutionRecord

#: The phases an execution may be requeued from.
REQUEUEABLE = frozenset({Phase.PERMANENT_FAILURE, Phase.ABORTED})


class NotRequeueableError(Exception):
    """The execution cannot run again as it stands; the message says why."""


def refusal(record: ExecutionRecord) -> str | None:
    """Why `record` cannot be requeued, or None when it can."""
    if not record.phase.is_final:
        return f"it is still running ({record.phase.name}); only an execution that ended can run again"
    if record.phase is Phase.SUCCESS:
        return "it succeeded; only PERMANENT_FAILURE or ABORTED executions are retried"
    if not record.finalized:
        return f"it ended {record.phase.name} but its clean-up has not run yet; retry once it has"
    return None


def requeued(record: ExecutionRecord, now: float, by: str) -> tuple[ExecutionRecord, EventRecord]:
    """The record of `record`'s next attempt, queued at `now` on `by`'s request, and its event."""
    problem = refusal(record)
    if problem is not None:
        raise NotRequeueableError(problem)
    attempt = record.attempt + 1
    reason = f"Requeued by {by}"
    info: dict[str, object] = {"requeued_by": by, "previous_phase": record.phase.name}
    if record.error is not None:
        info["previous_error_code"] = record.error.code
    deadline = record.deadline_at
    if deadline is not None and deadline <= now:
        info["deadline_dropped"] = True
        deadline = None
    seq = record.event_seq + 1
    after = replace(
        record,
        phase=Phase.QUEUED,
        phase_version=0,
        reason=reason,
        error=None,
        info=info,
        outputs=None,
        plugin_state=None,
        plugin_state_version=0,
        attempt=attempt,
        max_attempts=max(record.max_attempts, attempt),
        system_failures=0,
        event_seq=seq,
        updated_at=now,
        next_round_at=now,
        attempt_started_at=None,
        finished_at=None,
        abort_requested=False,
        abort_reason=None,
        finalized=False,
        abort_owed=False,
        finalize_failures=0,
        finalize_error=None,
        deadline_at=deadline,
        lease_owner=None,
        lease_token=None,
        lease_expires_at=None,
    )
    event = EventRecord(
        execution_id=record.id,
        seq=seq,
        attempt=attempt,
        phase=Phase.QUEUED,
        phase_version=0,
        occurred_at=now,
        reason=reason,
        info=info,
    )
    return after, event
