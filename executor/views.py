"""What the doors print: the one JSON shape of an execution, an event and a replica.

`executor get --json` and `GET /api/v1/executions/{id}` (and the lists, events and replicas
alike) print these dictionaries, so a field added here shows in every door at once; the API's
response models describe the same shapes for its OpenAPI document, and a test holds them together.
Times are ISO 8601 in UTC; durations are seconds.

Every function here is total: whatever a row holds (a time no calendar formats, a duration that is
not finite, written before the doors refused such values or by a plugin), it is shown as null
rather than failing, so that one stored row can never break a read of it, of a page holding it,
or of the dashboard.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from executor.core.records import EventRecord, ExecutionRecord
from executor.store.replicas import Replica


def iso(seconds: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 in UTC; None, and a time no calendar holds, are None."""
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    except (ValueError, OverflowError, OSError, TypeError):
        return None


def finite(value: float | None) -> float | None:
    """A number JSON can carry: infinities and NaN (which strict JSON has no words for) are None."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def execution_dict(record: ExecutionRecord) -> dict[str, Any]:
    """An execution, with every option it was submitted with, so that each can be checked."""
    return {
        "id": record.id,
        "task_type": record.task_type,
        "phase": record.phase.name,
        "phase_version": record.phase_version,
        "reason": record.reason,
        "error": record.error.to_dict() if record.error else None,
        "attempt": record.attempt,
        "max_attempts": record.max_attempts,
        "system_failures": record.system_failures,
        "inputs": record.inputs,
        "outputs": record.outputs,
        "labels": record.labels,
        "priority": record.priority,
        "timeout": finite(record.timeout),
        "deadline": _deadline(record),
        "deadline_at": iso(record.deadline_at),
        "not_before": iso(record.not_before),
        "idempotency_key": record.idempotency_key,
        "backoff_base": finite(record.backoff_base),
        "backoff_max": finite(record.backoff_max),
        "queue": record.queue,
        "pin_to_host": record.pin_to_host,
        "pinned_host": record.pinned_host,
        "rounds": record.rounds,
        "plugin_state_version": record.plugin_state_version,
        "abort_requested": record.abort_requested,
        "finalized": record.finalized,
        "finalize_error": record.finalize_error,
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "next_round_at": iso(record.next_round_at),
        "finished_at": iso(record.finished_at),
    }


def _deadline(record: ExecutionRecord) -> float | None:
    """The deadline as submitted: seconds from submission (the store keeps when it falls)."""
    if record.deadline_at is None:
        return None
    return finite(round(record.deadline_at - record.created_at, 6))


def event_dict(event: EventRecord) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "attempt": event.attempt,
        "phase": event.phase.name,
        "phase_version": event.phase_version,
        "reason": event.reason,
        "error": event.error.to_dict() if event.error else None,
        "info": event.info,
        "occurred_at": iso(event.occurred_at),
    }


def replica_dicts(
    beating: Iterable[Replica], leases: Mapping[str, int], *, this: str | None = None
) -> list[dict[str, Any]]:
    """Replicas from their heartbeats, then any other lease holder (`live` None: no heartbeat seen).

    `leases` maps each lease owner to how many executions it holds; `this` is the replica that
    answers (the API's), None for the command line, which is no replica.
    """
    leases = dict(leases)
    items = [
        _replica(
            r.id,
            this=r.id == this,
            live=r.live,
            host=r.host,
            pid=r.pid,
            started_at=r.started_at,
            heartbeat_at=r.heartbeat_at,
            silent_for=finite(round(r.silent_for, 3)),
            rounds=r.rounds,
            last_round_at=r.last_round_at,
            in_flight=r.in_flight,
            executions_leased=leases.pop(r.id, 0),
        )
        for r in beating
    ]
    items += [
        _replica(owner, this=owner == this, live=None, executions_leased=count)
        for owner, count in sorted(leases.items())
    ]
    return items


def own_replica_dict(
    replica_id: str,
    *,
    started_at: float,
    rounds: int,
    last_round_at: float | None,
    executions_leased: int,
) -> dict[str, Any]:
    """The answering replica before its first heartbeat: what it knows of itself."""
    return _replica(
        replica_id,
        this=True,
        live=True,
        started_at=started_at,
        rounds=rounds,
        last_round_at=last_round_at,
        executions_leased=executions_leased,
    )


def _replica(
    replica_id: str,
    *,
    this: bool,
    live: bool | None,
    executions_leased: int,
    host: str | None = None,
    pid: int | None = None,
    started_at: float | None = None,
    heartbeat_at: float | None = None,
    silent_for: float | None = None,
    rounds: int | None = None,
    last_round_at: float | None = None,
    in_flight: int | None = None,
) -> dict[str, Any]:
    return {
        "id": replica_id,
        "this": this,
        "live": live,
        "host": host,
        "pid": pid,
        "started_at": iso(started_at),
        "heartbeat_at": iso(heartbeat_at),
        "silent_for": silent_for,
        "rounds": rounds,
        "last_round_at": iso(last_round_at),
        "in_flight": in_flight,
        "executions_leased": executions_leased,
    }
