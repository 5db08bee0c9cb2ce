"""Builds the TaskExecutionContext one round hands to a plugin for one execution.

Everything is in memory: the inputs and state came with the claim, and what the plugin writes
(outputs, state) is captured here and persisted by the round's commit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from executor.core import (
    Logger,
    PluginProperties,
    ResourceManager,
    SecretNotFoundError,
    TaskExecutionMetadata,
)
from executor.core.records import ExecutionRecord
from executor.plugin.state_manager import PluginStateManager


class InputReader:
    __slots__ = ("_inputs",)

    def __init__(self, inputs: dict[str, Any]) -> None:
        self._inputs = inputs

    async def get(self) -> dict[str, Any]:
        return dict(self._inputs)


class OutputWriter:
    """Captures outputs; checks now that they will serialise, so the commit cannot fail on them."""

    __slots__ = ("outputs", "problem")

    def __init__(self) -> None:
        self.outputs: dict[str, Any] | None = None
        self.problem: tuple[str, str] | None = None

    async def put(self, outputs: Mapping[str, Any]) -> None:
        if not isinstance(outputs, Mapping):
            self.problem = ("InvalidOutputs", f"outputs must be a mapping, not {type(outputs).__name__}")
            return
        try:
            json.dumps(outputs, allow_nan=False)
        except (TypeError, ValueError) as err:
            self.problem = ("OutputsUnserialisable", f"outputs cannot be serialised to JSON: {err}")
            return
        self.outputs = dict(outputs)


class SecretManager:
    """Secrets from environment variables (`<prefix><KEY>`) and from files in a directory named
    after the key (the Kubernetes and Docker secrets convention). Values never appear in errors."""

    def __init__(self, env_prefix: str, directory: Path | None) -> None:
        self._env_prefix = env_prefix
        self._directory = directory

    def get(self, key: str) -> str:
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
    """The real `TaskExecutionContext` of one execution in one round."""

    __slots__ = (
        "input_reader",
        "lease_token",
        "logger",
        "output_writer",
        "plugin_state_reader",
        "plugin_state_writer",
        "resource_manager",
        "secret_manager",
        "state",
        "task_execution_metadata",
    )

    def __init__(
        self,
        record: ExecutionRecord,
        *,
        properties: PluginProperties,
        max_state_bytes: int,
        resource_manager: ResourceManager,
        secret_manager: SecretManager,
        logger: Logger,
    ) -> None:
        generated_name = f"{record.id}-{record.attempt}"
        if properties.generated_name_max_length is not None:
            generated_name = generated_name[-properties.generated_name_max_length :]
        self.task_execution_metadata = TaskExecutionMetadata(
            execution_id=record.id,
            task_type=record.task_type,
            attempt=record.attempt,
            created_at=datetime.fromtimestamp(record.created_at, UTC),
            labels=record.labels,
            generated_name=generated_name,
        )
        self.input_reader = InputReader(record.inputs)
        self.output_writer = OutputWriter()
        self.state = PluginStateManager(record.plugin_state, record.plugin_state_version, max_state_bytes)
        self.plugin_state_reader = self.state
        self.plugin_state_writer = self.state
        self.resource_manager = resource_manager
        self.secret_manager = secret_manager
        self.logger = logger
        #: The lease this round holds the execution under. Not part of the plugin contract: the
        #: fencing tests record it to prove that no two replicas commit the same round.
        self.lease_token = record.lease_token
