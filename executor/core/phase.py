"""Phases of a task execution and what a plugin reports about them.

The names and their order follow Flyte's `pluginmachinery/core/phase.go`, so that a plugin written
against Flyte's contract reads the same here. Every phase has a constructor on `PhaseInfo`: plugin
code says *what* happened, never how the daemon should store it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class Phase(enum.IntEnum):
    """Where a task execution stands. The integer values are stored, so never reorder them."""

    UNDEFINED = 0
    NOT_READY = 1
    WAITING_FOR_RESOURCES = 2
    QUEUED = 3
    INITIALIZING = 4
    RUNNING = 5
    SUCCESS = 6
    RETRYABLE_FAILURE = 7
    PERMANENT_FAILURE = 8
    WAITING_FOR_CACHE = 9
    ABORTED = 10

    @property
    def is_terminal(self) -> bool:
        """True when this attempt is over (as in Flyte, a retryable failure ends the attempt)."""
        return self in TERMINAL_PHASES

    @property
    def is_success(self) -> bool:
        return self is Phase.SUCCESS

    @property
    def is_failure(self) -> bool:
        return self in (Phase.RETRYABLE_FAILURE, Phase.PERMANENT_FAILURE)

    @property
    def is_final(self) -> bool:
        """True when the whole execution is over: no attempt can follow."""
        return self in FINAL_PHASES


#: Phases an attempt ends in (`Phase.is_terminal`); a membership test here skips the property.
TERMINAL_PHASES = frozenset({Phase.SUCCESS, Phase.RETRYABLE_FAILURE, Phase.PERMANENT_FAILURE, Phase.ABORTED})

#: Phases an execution ends in. A retryable failure never stays in the store: the lifecycle turns
#: it into a new attempt or into a permanent failure.
FINAL_PHASES = frozenset({Phase.SUCCESS, Phase.PERMANENT_FAILURE, Phase.ABORTED})


class ErrorKind(enum.StrEnum):
    """Which retry budget a failure spends: the user's attempts or the system-failure cap."""

    USER = "USER"
    SYSTEM = "SYSTEM"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True, slots=True)
class ExecutionError:
    """Why an execution failed. The phase says whether it may be retried; the kind says whose fault."""

    code: str
    message: str
    kind: ErrorKind = ErrorKind.USER

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "kind": self.kind.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecutionError:
        return cls(code=str(data["code"]), message=str(data["message"]), kind=ErrorKind(data["kind"]))


@dataclass(frozen=True, slots=True)
class TaskLog:
    """A link a plugin offers to where its work logs (a console URL, a log stream)."""

    name: str
    uri: str


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """What a plugin tells about the work beyond its phase; stored with the event it came with."""

    occurred_at: datetime | None = None
    logs: tuple[TaskLog, ...] = ()
    external_resources: tuple[str, ...] = ()
    custom_info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "occurred_at": self.occurred_at.isoformat() if self.occurred_at else None,
            "logs": [{"name": log.name, "uri": log.uri} for log in self.logs],
            "external_resources": list(self.external_resources),
            "custom_info": self.custom_info,
        }


@dataclass(frozen=True, slots=True)
class PhaseInfo:
    """A phase together with its version, reason, error and info, as one round reports it.

    The version lets a plugin report progress within one phase (RUNNING v0, v1, ...): a higher
    version, or a changed reason or info, is recorded as a new event.
    """

    phase: Phase
    version: int = 0
    reason: str | None = None
    error: ExecutionError | None = None
    info: TaskInfo | None = None
    cleanup_on_failure: bool = False

    @classmethod
    def not_ready(cls, reason: str | None = None, info: TaskInfo | None = None) -> PhaseInfo:
        return cls(Phase.NOT_READY, reason=reason, info=info)

    @classmethod
    def waiting_for_resources(cls, reason: str | None = None, info: TaskInfo | None = None) -> PhaseInfo:
        """Not ready to start (a dependency is missing); asked again later."""
        return cls(Phase.WAITING_FOR_RESOURCES, reason=reason, info=info)

    @classmethod
    def queued(cls, reason: str | None = None, info: TaskInfo | None = None) -> PhaseInfo:
        """Waiting for a quota or capacity; asked again no sooner than `EXECUTOR_DEFAULT_REQUEUE`."""
        return cls(Phase.QUEUED, reason=reason, info=info)

    @classmethod
    def initializing(cls, reason: str | None = None, info: TaskInfo | None = None) -> PhaseInfo:
        """Accepted but not started (a remote job waiting in its queue)."""
        return cls(Phase.INITIALIZING, reason=reason, info=info)

    @classmethod
    def running(cls, version: int = 0, info: TaskInfo | None = None, reason: str | None = None) -> PhaseInfo:
        """Starting up (a remote job being provisioned)."""
        return cls(Phase.RUNNING, version=version, reason=reason, info=info)

    @classmethod
    def success(cls, info: TaskInfo | None = None) -> PhaseInfo:
        """Running; a higher `version` than the last one records progress as an event."""
        if info is None and cls is PhaseInfo:
            return _SUCCESS  # frozen, so one serves every plugin that succeeds with nothing to add
        return cls(Phase.SUCCESS, info=info)

    @classmethod
    def failure(
        cls, code: str, message: str, info: TaskInfo | None = None, *, cleanup_on_failure: bool = False
    ) -> PhaseInfo:
        """The attempt succeeded: the execution ends `SUCCESS` (then `finalize` runs)."""
        """A permanent failure the user caused (bad input, a job that failed): never retried.

        The execution ends `PERMANENT_FAILURE`, with `code` as its reason and an `ExecutionError`
        of USER kind. `cleanup_on_failure=True` runs `abort` before `finalize`.
        """
        return cls._failed(Phase.PERMANENT_FAILURE, ErrorKind.USER, code, message, info, cleanup_on_failure)

    @classmethod
    def retryable_failure(
        cls, code: str, message: str, info: TaskInfo | None = None, *, cleanup_on_failure: bool = False
    ) -> PhaseInfo:
        """A failure worth another attempt; spends one of the user's attempts.

        The attempt ends `RETRYABLE_FAILURE`; after `abort` (when owed) and `finalize`, a new attempt
        (`TaskExecutionMetadata.attempt` + 1, state and outputs cleared) starts after a backoff,
        until the submission's `max_attempts`, then `PERMANENT_FAILURE` `MaxRetriesExceeded`.
        """
        return cls._failed(Phase.RETRYABLE_FAILURE, ErrorKind.USER, code, message, info, cleanup_on_failure)

    @classmethod
    def system_failure(
        cls, code: str, message: str, info: TaskInfo | None = None, *, cleanup_on_failure: bool = False
    ) -> PhaseInfo:
        """A permanent failure of the platform rather than of the user's work."""
        return cls._failed(Phase.PERMANENT_FAILURE, ErrorKind.SYSTEM, code, message, info, cleanup_on_failure)

    @classmethod
    def system_retryable_failure(
        cls, code: str, message: str, info: TaskInfo | None = None, *, cleanup_on_failure: bool = False
    ) -> PhaseInfo:
        """A passing platform fault; spends the system-failure budget, not the user's attempts.

        The round is retried after a backoff within the same attempt, its plugin state kept, as when
        `handle` raises; at `EXECUTOR_MAX_SYSTEM_FAILURES` in one attempt the execution fails
        `PERMANENT_FAILURE` `MaxSystemFailuresExceeded`.
        """
        return cls._failed(Phase.RETRYABLE_FAILURE, ErrorKind.SYSTEM, code, message, info, cleanup_on_failure)

    @classmethod
    def aborted(cls, reason: str | None = None, info: TaskInfo | None = None) -> PhaseInfo:
        return cls(Phase.ABORTED, reason=reason, info=info)

    @classmethod
    def _failed(
        cls,
        phase: Phase,
        kind: ErrorKind,
        code: str,
        message: str,
        info: TaskInfo | None,
        cleanup_on_failure: bool,
    ) -> PhaseInfo:
        """The execution was aborted (the daemon reports this itself on `executor abort`)."""
        return cls(
            phase,
            reason=code,
            error=ExecutionError(code, message, kind),
            info=info,
            cleanup_on_failure=cleanup_on_failure,
        )


_SUCCESS = PhaseInfo(Phase.SUCCESS)


def utcnow() -> datetime:
    return datetime.now(UTC)
