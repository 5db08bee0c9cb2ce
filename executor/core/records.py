"""Plain records of executions and events, shared by the lifecycle (which decides) and the store
(which moves them). Not part of the plugin contract; they live in `core` because both sides may
import only `core`.

Times are seconds since the epoch (floats): they compare and index the same in every dialect.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, make_dataclass
from typing import TYPE_CHECKING, Any, Final, cast

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
    #: When the submission said the first round may run, seconds since the epoch (None: at once).
    not_before: float | None = None
    #: The named queue it waits in: a replica with EXECUTOR_QUEUES set claims only its queues.
    queue: str = "default"
    #: Run every round on the host of the replica that claims it first (`pinned_host`).
    pin_to_host: bool = False
    #: The host (EXECUTOR_HOST) it is pinned to: only replicas on that host claim it.
    pinned_host: str | None = None
    lease_owner: str | None = None
    lease_token: str | None = None
    lease_expires_at: float | None = None


#: JSON as the store keeps it: compact, ASCII only (so its length is its size in bytes), no NaN.
#: One encoder made once: `json.dumps` with options builds a new one per call, which cost more
#: than encoding a small object. The output writer's text is stored as it is, so both use this.
encode_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=True).encode

#: Every field of an execution record, in the order of its constructor's parameters.
RECORD_FIELDS: Final = tuple(field.name for field in fields(ExecutionRecord))

if TYPE_CHECKING:

    class RecordDraft:
        """A record in the making; see the definition that runs, below. Its fields are typed Any:
        they are declared once, on `ExecutionRecord`, and the draft derives from it."""

        def __init__(self, *values: Any) -> None: ...
        def __getattr__(self, name: str) -> Any: ...
        def __setattr__(self, name: str, value: Any) -> None: ...

else:
    #: A mutable twin of `ExecutionRecord`: the same fields, as the same slots in the same order,
    #: derived from the record's fields so that the two cannot drift apart. The lifecycle builds
    #: the next record in one step by step, the store each claimed row; `frozen_record` makes
    #: it the record.
    RecordDraft = make_dataclass(
        "RecordDraft",
        [(field.name, field.type) for field in fields(ExecutionRecord)],
        slots=True,
        eq=False,
        match_args=False,
    )

# `frozen_record` hands a draft over as the record without running `ExecutionRecord.__init__`:
# all that would do beyond setting the fields is `__post_init__`, and a record must not gain
# one unnoticed.
if hasattr(ExecutionRecord, "__post_init__"):
    raise TypeError("ExecutionRecord has a __post_init__, which frozen_record would skip")


def frozen_record(draft: RecordDraft) -> ExecutionRecord:
    """The record `draft` describes, the same as `ExecutionRecord(*fields of draft)` would make.

    The draft object itself becomes the record: its class is switched to `ExecutionRecord`, which
    Python allows between classes with the same slots (and checks, raising TypeError otherwise).
    The frozen constructor sets ~40 fields through `object.__setattr__`: 2.7 µs, against 0.6 µs
    for a draft and the switch, paid for every execution in every round, twice (the claimed
    record, the next one). The draft must not be used afterwards: it is frozen now.
    """
    object.__setattr__(draft, "__class__", ExecutionRecord)
    return cast(ExecutionRecord, draft)


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
