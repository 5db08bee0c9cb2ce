"""Plain records of executions and events, shared by the lifecycle (which decides) and the store
(which moves them). Not part of the plugin contract; they live in `core` because both sides may
import only `core`.

Times are seconds since the epoch (floats): they compare and index the same in every dialect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from executor.core.phase import ExecutionError, Phase


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    id: str
    task_type: str
    inputs: dict[str, Any]
    phase: Phase
    phase_version: int
    created_at: float
    next_round_at: float
    attempt: int = 1
    max_attempts: int = 1
    system_failures: int = 0
    priority: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, Any] | None = None
    reason: str | None = None
    error: ExecutionError | None = None
    info: dict[str, Any] | None = None
    #: Serialised plugin state (JSON text) and its version; None when the plugin has written none.
    plugin_state: str | None = None
    plugin_state_version: int = 0
    #: Events written so far; the next event gets `event_seq + 1`.
    event_seq: int = 0
    rounds: int = 0
    attempt_started_at: float | None = None
    updated_at: float | None = None
    finished_at: float | None = None
    abort_requested: bool = False
    abort_reason: str | None = None
    #: True once the attempt is terminal and `finalize` has run for it. For a final phase this means
    #: the row is done; a RETRYABLE_FAILURE stays (with its plugin state, for `abort` and `finalize`)
    #: until its clean-up has run, and only then does the next attempt start.
    finalized: bool = False
    #: The plugin's `abort` must run before `finalize` for the current (terminal) attempt.
    abort_owed: bool = False
    #: Failed clean-ups (`abort` or `finalize` raising) of the current attempt, and the last error.
    finalize_failures: int = 0
    finalize_error: str | None = None
    #: Seconds an attempt may run from its first round (None: no limit).
    timeout: float | None = None
    #: When the whole execution must be over, seconds since the epoch (None: no deadline).
    deadline_at: float | None = None
    #: Per-submission overrides of the retry backoff (None: the daemon's settings).
    backoff_base: float | None = None
    backoff_max: float | None = None
    idempotency_key: str | None = None
    lease_owner: str | None = None
    lease_token: str | None = None
    lease_expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class EventRecord:
    execution_id: str
    seq: int
    attempt: int
    phase: Phase
    phase_version: int
    occurred_at: float
    reason: str | None = None
    error: ExecutionError | None = None
    info: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RecordUpdate:
    """The record after a round, and which of its heavier columns the round changed."""

    record: ExecutionRecord
    events: tuple[EventRecord, ...] = ()
    state_changed: bool = False
    outputs_changed: bool = False
    #: `record.outputs` as JSON text, when the round had it already; None: the store encodes them.
    outputs_json: str | None = None


@dataclass(frozen=True, slots=True)
class StateChange:
    """What a plugin's state writer captured in one round: serialised state (None for a reset)."""

    data: str | None
    version: int
