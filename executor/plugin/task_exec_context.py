"""Builds the TaskExecutionContext one round hands to a plugin for one execution.

Everything is in memory: the inputs and state came with the claim, and what the plugin writes
(outputs, state) is captured here and persisted by the round's commit.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from executor.core import (
    Logger,
    PluginProperties,
    ResourceManager,
    SecretNotFoundError,
    TaskExecutionMetadata,
)
from executor.core.records import ExecutionRecord, encode_json
from executor.plugin.state_manager import PluginStateManager


class InputReader:
    __slots__ = ("_inputs",)

    def __init__(self, inputs: dict[str, Any]) -> None:
        self._inputs = inputs

    async def get(self) -> dict[str, Any]:
        return dict(self._inputs)


class OutputWriter:
    """Captures outputs; checks now that they fit the plugin's output model, serialise, and stay
    under EXECUTOR_MAX_PAYLOAD_BYTES, so the commit cannot fail on them. The JSON text made for
    the check is what the commit stores."""

    __slots__ = ("_max_bytes", "_model", "outputs", "outputs_json", "problem")

    def __init__(self, model: type[BaseModel] | None = None, max_bytes: int | None = None) -> None:
        self.outputs: dict[str, Any] | None = None
        self.outputs_json: str | None = None
        self.problem: tuple[str, str] | None = None
        self._model = model
        self._max_bytes = max_bytes

    async def put(self, outputs: Mapping[str, Any] | BaseModel) -> None:
        if isinstance(outputs, BaseModel):
            outputs = outputs.model_dump(mode="json")
        if not isinstance(outputs, Mapping):
            self.problem = ("InvalidOutputs", f"outputs must be a mapping, not {type(outputs).__name__}")
            return
        if self._model is not None:
            try:
                outputs = self._model.model_validate(dict(outputs)).model_dump(mode="json")
            except ValidationError as err:
                self.problem = (
                    "InvalidOutputs",
                    f"outputs do not fit {self._model.__name__}: {field_errors(err)}",
                )
                return
        try:
            text = encode_json(outputs)
        except (TypeError, ValueError) as err:
            self.problem = ("OutputsUnserialisable", f"outputs cannot be serialised to JSON: {err}")
            return
        size = len(text)  # ASCII only: one byte a character
        if self._max_bytes is not None and size > self._max_bytes:
            self.problem = (
                "OutputsTooLarge",
                f"outputs are {size} bytes as JSON, over the limit of {self._max_bytes} bytes "
                "(EXECUTOR_MAX_PAYLOAD_BYTES)",
            )
            return
        self.problem = None
        self.outputs = dict(outputs)
        self.outputs_json = text


def field_errors(err: ValidationError) -> str:
    """Pydantic's errors as one line: `field.path: message; ...` (never the offending values)."""
    parts = []
    for error in err.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "(root)"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


class SecretManager:
    """Secrets from environment variables (`<prefix><KEY>`) and from files in a directory named
    after the key (the Kubernetes and Docker secrets convention). Values never appear in errors;
    each value handed out is also passed to `on_read`, so that the daemon can scrub it from
    whatever a plugin logs, raises or reports (see `executor.redaction`)."""

    def __init__(
        self, env_prefix: str, directory: Path | None, on_read: Callable[[str], None] | None = None
    ) -> None:
        self._env_prefix = env_prefix
        self._directory = directory
        self._on_read = on_read

    def get(self, key: str) -> str:
        value = self._lookup(key)
        if self._on_read is not None:
            self._on_read(value)
        return value

    def _lookup(self, key: str) -> str:
        value = os.environ.get(self._env_prefix + key.upper())
        if value is not None:
            return value
        if self._directory is not None and "/" not in key and key not in ("", ".", ".."):
            path = self._directory / key
            if path.is_file():
                return path.read_text().rstrip("\n")
        where = f"environment variable {self._env_prefix}{key.upper()}"
        if self._directory is not None:
            where += f" or file {self._directory / key}"
        raise SecretNotFoundError(f"secret {key!r} is not set (looked for {where})")


class TaskExecContext:
    """The real `TaskExecutionContext` of one execution in one round.

    Built for every execution of every round, and most plugins read only their inputs (and some
    their state): the state manager, the metadata, the bound logger and the resource manager are
    made on first use.
    """

    __slots__ = (
        "_logger",
        "_make_logger",
        "_make_resources",
        "_max_state_bytes",
        "_metadata",
        "_properties",
        "_record",
        "_resources",
        "_state",
        "input_reader",
        "lease_token",
        "output_writer",
        "secret_manager",
    )

    def __init__(
        self,
        record: ExecutionRecord,
        *,
        properties: PluginProperties,
        max_state_bytes: int,
        resource_manager: Callable[[], ResourceManager],
        secret_manager: SecretManager,
        logger: Callable[[], Logger],
        output_model: type[BaseModel] | None = None,
        max_payload_bytes: int | None = None,
    ) -> None:
        self._record = record
        self._properties = properties
        self._metadata: TaskExecutionMetadata | None = None
        self._make_logger = logger
        self._logger: Logger | None = None
        self._make_resources = resource_manager
        self._resources: ResourceManager | None = None
        self.input_reader = InputReader(record.inputs)
        self.output_writer = OutputWriter(output_model, max_payload_bytes)
        self._max_state_bytes = max_state_bytes
        self._state: PluginStateManager | None = None
        self.secret_manager = secret_manager
        #: The lease this round holds the execution under. Not part of the plugin contract: the
        #: fencing tests record it to prove that no two replicas commit the same round.
        self.lease_token = record.lease_token

    @property
    def record(self) -> ExecutionRecord:
        """The execution as claimed. Not part of the plugin contract: the runtime sends it to the
        worker process that runs a `cpu_bound` plugin's call."""
        return self._record

    @property
    def task_execution_metadata(self) -> TaskExecutionMetadata:
        if self._metadata is None:
            record = self._record
            generated_name = f"{record.id}-{record.attempt}"
            max_length = self._properties.generated_name_max_length
            if max_length is not None:
                generated_name = generated_name[-max_length:]
            self._metadata = TaskExecutionMetadata(
                execution_id=record.id,
                task_type=record.task_type,
                attempt=record.attempt,
                created_at=datetime.fromtimestamp(record.created_at, UTC),
                labels=record.labels,
                generated_name=generated_name,
            )
        return self._metadata

    @property
    def state(self) -> PluginStateManager:
        """The plugin state's reader and writer in one (see `PluginStateManager`)."""
        if self._state is None:
            record = self._record
            self._state = PluginStateManager(
                record.plugin_state, record.plugin_state_version, self._max_state_bytes
            )
        return self._state

    @property
    def plugin_state_reader(self) -> PluginStateManager:
        return self.state

    @property
    def plugin_state_writer(self) -> PluginStateManager:
        return self.state

    @property
    def state_used(self) -> PluginStateManager | None:
        """The state manager if the plugin read or wrote its state this round, else None."""
        return self._state

    @property
    def logger(self) -> Logger:
        if self._logger is None:
            self._logger = self._make_logger()
        return self._logger

    @property
    def resource_manager(self) -> ResourceManager:
        if self._resources is None:
            self._resources = self._make_resources()
        return self._resources
