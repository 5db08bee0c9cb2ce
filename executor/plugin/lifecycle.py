"""The plugins' lifetime in the daemon: `start` after loading, background tasks, `aclose` at shutdown.

    async with running_plugins(plugins.by_id, logger):
        ...  # the loop, HTTP, signals: everything that calls a plugin

On entry every plugin's `start` runs, one after the other, each handed a `StartContext` whose
`tasks` spawn into a task group this context owns (after Flyte's webapi, whose cache starts when
the plugin loads, not from a request). A `start` that raises or hangs closes what was loaded and
raises `PluginStartError` naming the plugin: the daemon does not begin.

On exit (the body is done: the loop stopped, the calls under way ended), the background tasks are
cancelled and waited for, then every plugin's `aclose` runs, concurrently, each bounded by
`close_timeout`: one slow or failing close (logged) neither delays nor skips the others.

A background task that raises is logged naming its plugin and stops the daemon (the body is
cancelled and `PluginTaskError` raised), as a failed runnable stops a controller-runtime manager:
a plugin whose cache refresher died would otherwise leave its executions waiting for nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import anyio
from anyio.abc import TaskGroup

from executor.core import Logger, Plugin, StartContext
from executor.plugin.registry import PluginRegistryError

#: Bounds on one plugin's `start` and `aclose`; a plugin that needs longer is doing too much there.
START_TIMEOUT = 30.0
CLOSE_TIMEOUT = 10.0


class PluginStartError(PluginRegistryError):
    """A plugin's `start` failed: raised before the first round, like a plugin that fails to load."""


class PluginTaskError(Exception):
    """A plugin's background task raised; the daemon stops."""


class _PluginTasks:
    """One plugin's view of the lifecycle's task group (the `BackgroundTasks` protocol)."""

    def __init__(self, group: TaskGroup, plugin_id: str, logger: Logger) -> None:
        self._group = group
        self._plugin_id = plugin_id
        self._log = logger

    def start_soon(self, func: Callable[..., Awaitable[object]], *args: Any, name: str | None = None) -> None:
        label = f"plugin {self._plugin_id}: {name or getattr(func, '__qualname__', repr(func))}"
        self._group.start_soon(self._guarded, func, args, label, name=label)

    async def _guarded(
        self, func: Callable[..., Awaitable[object]], args: tuple[Any, ...], label: str
    ) -> None:
        try:
            await func(*args)
        except Exception as err:
            self._log.error("plugin.task_failed", plugin=self._plugin_id, task=label, exc_info=err)
            raise PluginTaskError(f"{label} failed: {type(err).__name__}: {err}") from err


@contextlib.asynccontextmanager
async def running_plugins(
    plugins: Mapping[str, Plugin],
    logger: Logger,
    *,
    start_timeout: float = START_TIMEOUT,
    close_timeout: float = CLOSE_TIMEOUT,
) -> AsyncIterator[None]:
    """Start `plugins` (by id), run the body, then stop their tasks and close them (see module doc)."""
    failed: PluginStartError | None = None
    lone: BaseException | None = None
    try:
        async with anyio.create_task_group() as group:
            failed = await _start_all(plugins, group, logger, start_timeout)
            try:
                if failed is None:
                    yield
            finally:
                group.cancel_scope.cancel()
    except BaseExceptionGroup as err:
        # The body's own error (or a task's) comes out as itself, not wrapped by this task group.
        if len(err.exceptions) != 1:
            raise
        lone = err.exceptions[0]
    finally:
        with anyio.CancelScope(shield=True):
            await _close_all(plugins, logger, close_timeout)
    if lone is not None:
        raise lone
    if failed is not None:
        raise failed


async def _start_all(
    plugins: Mapping[str, Plugin], group: TaskGroup, logger: Logger, each_within: float
) -> PluginStartError | None:
    for plugin_id, plugin in plugins.items():
        context = StartContext(tasks=_PluginTasks(group, plugin_id, logger), logger=logger)
        try:
            with anyio.move_on_after(each_within) as scope:
                await plugin.start(context)
        except Exception as err:
            return PluginStartError(f"plugin {plugin_id!r} failed to start: {type(err).__name__}: {err}")
        if scope.cancelled_caught:
            return PluginStartError(f"plugin {plugin_id!r} did not finish starting within {each_within:g}s")
    return None


async def _close_all(plugins: Mapping[str, Plugin], logger: Logger, each_within: float) -> None:
    async def close(plugin_id: str, plugin: Plugin) -> None:
        try:
            with anyio.move_on_after(each_within) as scope:
                await plugin.aclose()
        except Exception as err:
            logger.error("plugin.close_failed", plugin=plugin_id, exc_info=err)
            return
        if scope.cancelled_caught:
            logger.error("plugin.close_timed_out", plugin=plugin_id, timeout_seconds=each_within)

    async with anyio.create_task_group() as group:
        for plugin_id, plugin in plugins.items():
            group.start_soon(close, plugin_id, plugin, name=f"plugin {plugin_id}: aclose")
