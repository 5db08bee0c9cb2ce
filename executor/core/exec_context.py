"""What a plugin sees of one execution during one round: the TaskExecutionContext and its parts.

These are protocols: the daemon builds the real objects (see `executor.plugin.task_exec_context`),
tests may build their own. Nothing here does I/O on its own; inputs are loaded with the claim and
everything written is persisted when the round commits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

StateT = TypeVar("StateT")


@dataclass(frozen=True, slots=True)
class TaskExecutionMetadata:
    """Who the execution is: `tctx.task_execution_metadata`, the same in every round of an attempt."""

    execution_id: str
    """The execution's id, as `executor submit` printed it."""
    task_type: str
    """The task type it was submitted with (one this plugin is registered for)."""
    attempt: int
    """The attempt being run: 1 for the first, one more after each retryable failure (up to the
    submission's `max_attempts`). System failures retry the round within the same attempt."""
    created_at: datetime
    """When the execution was submitted (UTC)."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """The labels it was submitted with."""
    generated_name: str = ""
    """A name unique to this attempt, stable across rounds: use it to make remote calls idempotent
    (capped by `PluginProperties.generated_name_max_length`)."""


class InputReader(Protocol):
    async def get(self) -> dict[str, Any]:
        """The inputs given at submission (a fresh copy each call)."""
        ...


class OutputWriter(Protocol):
    async def put(self, outputs: Mapping[str, Any]) -> None:
        """Record the outputs; they are stored when the round commits (JSON-serialisable values)."""
        ...


class PluginStateReader(Protocol):
    def get(self, state_type: type[StateT]) -> tuple[int, StateT]:
        """The state the previous round `put`, as `state_type`, with its version.

        With no state yet: `(0, state_type())`. A stored state that does not fit `state_type`
        raises `PluginStateError`, which fails the execution with a reason that says so.
        """
        ...


class PluginStateWriter(Protocol):
    def put(self, version: int, state: object) -> None:
        """Replace the state; readable from the next round on, never in this one."""
        ...

    def reset(self) -> None:
        """Clear the state: the next round reads the zero value and version 0."""
        ...


class ResourceManager(Protocol):
    async def allocate(
        self, namespace: str, token: str, constraints: Mapping[str, Any] | None = None
    ) -> bool:
        """Take one unit of quota in `namespace` for `token`; False when the quota is used up."""
        ...

    async def release(self, namespace: str, token: str) -> None: ...


class SecretManager(Protocol):
    def get(self, key: str) -> str:
        """The secret's value; raises `SecretNotFoundError` naming the key (never the value)."""
        ...


class Logger(Protocol):
    """The subset of a structlog bound logger a plugin uses; lines carry the execution's ids."""

    def debug(self, event: str, **kw: Any) -> Any: ...
    def info(self, event: str, **kw: Any) -> Any: ...
    def warning(self, event: str, **kw: Any) -> Any: ...
    def error(self, event: str, **kw: Any) -> Any: ...


class TaskExecutionContext(Protocol):
    @property
    def task_execution_metadata(self) -> TaskExecutionMetadata: ...
    @property
    def input_reader(self) -> InputReader: ...
    @property
    def output_writer(self) -> OutputWriter: ...
    @property
    def plugin_state_reader(self) -> PluginStateReader: ...
    @property
    def plugin_state_writer(self) -> PluginStateWriter: ...
    @property
    def resource_manager(self) -> ResourceManager: ...
    @property
    def secret_manager(self) -> SecretManager: ...
    @property
    def logger(self) -> Logger: ...


class PluginStateError(Exception):
    """The stored plugin state cannot be read back into the type the plugin asked for."""


class SecretNotFoundError(KeyError):
    """A plugin asked for a secret that is not configured."""
