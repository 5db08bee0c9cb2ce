"""The plugin interface and its registration entry, after Flyte's `core/plugin.go`."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from executor.core.exec_context import Logger, TaskExecutionContext
from executor.core.transition import Transition


@dataclass(frozen=True, slots=True)
class PluginProperties:
    """What a plugin tells the daemon about how to call it."""

    #: The plugin's calls may block (sync I/O, CPU work): they run on a worker thread with an event
    #: loop of their own, so they can never stall the round for the other executions.
    blocking: bool = False
    #: Cap on `TaskExecutionMetadata.generated_name`, for remote systems with short name limits.
    generated_name_max_length: int | None = None


class Plugin(abc.ABC):
    """Drives executions of the task types it is registered for.

    `handle` is called once a round until it returns a terminal phase. It must not block and must
    be idempotent: after a crash, a round whose commit did not happen runs again.
    """

    id: str = ""
    properties: PluginProperties = PluginProperties()

    @abc.abstractmethod
    async def handle(self, tctx: TaskExecutionContext) -> Transition: ...

    async def abort(self, tctx: TaskExecutionContext) -> None:
        """Stop remote work for an execution being aborted. Default: nothing to stop."""
        return None

    async def finalize(self, tctx: TaskExecutionContext) -> None:
        """Release what the execution held; runs once the execution's phase is terminal."""
        return None


class ResourceRegistrar(Protocol):
    def register_resource_quota(self, namespace: str, quota: int) -> None: ...


@dataclass(frozen=True, slots=True)
class SetupContext:
    """Handed to `PluginEntry.load_plugin` once, when the daemon starts."""

    settings: Any
    logger: Logger
    resource_registrar: ResourceRegistrar
    #: Extra per-plugin configuration (from settings), keyed by plugin id.
    plugin_config: Mapping[str, Any] = field(default_factory=dict)


LoadPlugin = Callable[[SetupContext], "Plugin | Awaitable[Plugin]"]


@dataclass(frozen=True, slots=True)
class PluginEntry:
    """How a plugin module makes itself known; see `executor.plugin_registry()`."""

    id: str
    registered_task_types: Sequence[str]
    load_plugin: LoadPlugin
    #: The fallback plugin for task types no other plugin registers (at most one may say so).
    is_default: bool = False
    #: Task types this plugin should handle even when another plugin registers them too.
    default_for_task_types: Sequence[str] = ()
    #: A pydantic model the inputs must fit: `submit` refuses others, with the field errors, before
    #: anything is stored (and stores the validated inputs, defaults filled in, as JSON).
    input_model: type[BaseModel] | None = None
    #: A pydantic model the outputs must fit: outputs that do not fail the execution `InvalidOutputs`.
    output_model: type[BaseModel] | None = None
