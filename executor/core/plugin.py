"""The plugin interface and its registration entry, after Flyte's `core/plugin.go`."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from pydantic import BaseModel

from executor.core.exec_context import Logger, TaskExecutionContext
from executor.core.transition import Transition


@dataclass(frozen=True, slots=True)
class PluginProperties:
    """What a plugin tells the daemon about how to call it."""

    blocking: bool = False
    """The plugin's calls may block (sync I/O, CPU work): they run on a worker thread with an event
    loop of their own, so they can never stall the round for the other executions."""
    cpu_bound: bool = False
    """The plugin's calls are CPU-bound Python, which a thread cannot take off the loop (the GIL):
    `handle`, `abort` and `finalize` run in a worker process of the daemon's pool
    (EXECUTOR_PROCESS_WORKERS), one call at a time per worker. Only the execution record and
    what the call came to cross the process boundary, as the store's JSON; the plugin object
    in the worker is an instance of its own, loaded there from the same settings."""
    generated_name_max_length: int | None = None
    """Cap on `TaskExecutionMetadata.generated_name`, for remote systems with short name limits."""
    work_timeout: timedelta | None = None
    """For a plugin whose `handle` *is* the work (a function task): how long one call may run.
    A call still running then is ended and its attempt fails `TimeoutExpired` (a user failure,
    retried while attempts remain). None: EXECUTOR_HANDLE_TIMEOUT bounds the call, and one past
    it is a system failure (`HandleTimeout`), as for any plugin whose calls should be short."""


class BackgroundTasks(Protocol):
    """Where a plugin starts work that outlives one call: a task group the daemon owns.

    `start_soon(func, *args, name=...)` runs `await func(*args)` until it returns or the daemon
    shuts down (then it is cancelled, before `Plugin.aclose`). A task that raises stops the
    daemon, its plugin named in the log: background work a plugin relies on must not die silently.
    """

    def start_soon(
        self, func: Callable[..., Awaitable[object]], *args: Any, name: str | None = None
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class StartContext:
    """Handed to `Plugin.start` once, after every plugin loaded and before the first round."""

    tasks: BackgroundTasks
    logger: Logger


class Plugin(abc.ABC):
    """Drives executions of the task types it is registered for.

    `handle` is called once a round until it returns a terminal phase. It must not block and must
    be idempotent: after a crash, a round whose commit did not happen runs again.

    The daemon owns the plugin's lifetime: `start` once before the first round, `aclose` once at
    shutdown, after the loop stopped, the calls under way ended and the background tasks were
    cancelled. Both run on the daemon's event loop (a blocking plugin's calls do not).
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

    async def start(self, ctx: StartContext) -> None:
        """Start what lives as long as the plugin (a cache refresher: `ctx.tasks.start_soon`).

        Runs once, before the first round; it should return promptly. Raising stops the daemon
        at startup, naming the plugin. Default: nothing to start.
        """
        return None

    async def aclose(self) -> None:
        """Close what the plugin opened (clients, connections). Default: nothing to close.

        Called once at shutdown, also when `start` was not (another plugin's failed). An error
        is logged and the other plugins are closed all the same.
        """
        return None


class ResourceRegistrar(Protocol):
    def register_resource_quota(self, namespace: str, quota: int) -> None: ...


@dataclass(frozen=True, slots=True)
class SetupContext:
    """Handed to `PluginEntry.load_plugin` once, when the daemon starts."""

    settings: Any
    logger: Logger
    resource_registrar: ResourceRegistrar
    #: Extra per-plugin configuration (EXECUTOR_PLUGIN_CONFIG), keyed by plugin id, as given.
    plugin_config: Mapping[str, Any] = field(default_factory=dict)
    #: This plugin's configuration, validated: an instance of its entry's `config_model` (its
    #: defaults when EXECUTOR_PLUGIN_CONFIG does not name the plugin); None without a model.
    config: Any = None


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
    #: A pydantic model of the plugin's configuration: EXECUTOR_PLUGIN_CONFIG[id] is validated
    #: against it before `load_plugin` runs, which finds the result in `setup.config`. A value that
    #: does not fit stops the start-up in one line naming the plugin and the field.
    config_model: type[BaseModel] | None = None
    #: What a submission of the plugin's task types gets when it does not say, before the daemon's
    #: EXECUTOR_DEFAULT_MAX_ATTEMPTS and EXECUTOR_DEFAULT_TIMEOUT (every door applies them).
    default_max_attempts: int | None = None
    default_timeout: timedelta | None = None
    #: The queue its task types' executions go to when the submission names none (None: the
    #: `default` queue). Replicas with EXECUTOR_QUEUES set claim only the queues they list.
    queue: str | None = None
    #: Pin each execution to the host (EXECUTOR_HOST) of the replica that claims it first, before
    #: its first `handle`: every later round, abort and finalize run on that host, also after a
    #: restart of its daemon. For plugins whose work lives on the machine (local processes, files).
    pin_to_host: bool = False
