"""Registering an `AsyncPlugin` as a core plugin entry, as Flyte's `RegisterRemotePlugin` does.

The entry keeps `is_default` and `default_for_task_types`; its `load_plugin` builds the
`AsyncPlugin`, applies the daemon's per-plugin configuration, registers the plugin's quotas and
returns the core plugin that drives it. The kit does not import the plugin runtime: a plugin module
passes `plugin_registry()` in, or registers the entry itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from pydantic import ValidationError

from executor.core import PluginEntry, SetupContext
from executor.core.config import config_error
from executor.webapi.core import WebApiPlugin
from executor.webapi.plugin import AsyncPlugin

LoadAsyncPlugin = Callable[[SetupContext], "AsyncPlugin[Any, Any] | Awaitable[AsyncPlugin[Any, Any]]"]


class Registrar(Protocol):
    def register_core_plugin(self, entry: PluginEntry) -> None: ...


def async_plugin_entry(
    id: str,
    task_types: Sequence[str],
    load_plugin: LoadAsyncPlugin,
    *,
    is_default: bool = False,
    default_for_task_types: Sequence[str] = (),
) -> PluginEntry:
    """The core `PluginEntry` for an `AsyncPlugin` built by `load_plugin(setup)`."""
    if isinstance(task_types, str):
        raise TypeError("task_types must be a list of task types, not a string")

    async def load(setup: SetupContext) -> WebApiPlugin:
        loaded = load_plugin(setup)
        plugin = await loaded if inspect.isawaitable(loaded) else loaded
        if not isinstance(plugin, AsyncPlugin):
            raise TypeError(f"load_plugin returned {type(plugin).__name__}, not an AsyncPlugin")
        try:
            config = plugin.config.with_overrides(setup.plugin_config.get(id))
        except ValidationError as err:
            raise config_error(id, err) from None  # the one line every plugin's bad value gets
        for namespace, quota in config.resource_quotas.items():
            setup.resource_registrar.register_resource_quota(namespace, quota)
        return WebApiPlugin(id, plugin, config, logger=setup.logger)

    return PluginEntry(
        id=id,
        registered_task_types=list(task_types),
        load_plugin=load,
        is_default=is_default,
        default_for_task_types=list(default_for_task_types),
    )


def register_async_plugin(
    registry: Registrar,
    id: str,
    task_types: Sequence[str],
    load_plugin: LoadAsyncPlugin,
    *,
    is_default: bool = False,
    default_for_task_types: Sequence[str] = (),
) -> None:
    """`registry.register_core_plugin(async_plugin_entry(...))`, for plugin modules."""
    registry.register_core_plugin(
        async_plugin_entry(
            id, task_types, load_plugin, is_default=is_default, default_for_task_types=default_for_task_types
        )
    )
