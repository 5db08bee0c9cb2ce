"""The plugin registry: which plugin drives which task type.

Plugin modules register an entry when they are imported, the Python shape of Flyte's `init()`
registration. `plugin_registry()` returns the registry being loaded into right now (the loader
activates one around each import, so tests can build isolated registries), or the process-wide one.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from pydantic import BaseModel

from executor.core import Plugin, PluginEntry, SetupContext, validate_plugin_config


class PluginRegistryError(Exception):
    """A registration conflicts with another; raised at startup, before any round runs."""


@dataclass(frozen=True, slots=True)
class _Registered:
    entry: PluginEntry
    source: str


class PluginRegistry:
    def __init__(self) -> None:
        self._registered: dict[str, _Registered] = {}

    def register_core_plugin(self, entry: PluginEntry) -> None:
        if not isinstance(entry, PluginEntry):
            raise PluginRegistryError(f"register_core_plugin takes a PluginEntry, not {type(entry).__name__}")
        if not entry.id:
            raise PluginRegistryError(f"a plugin entry from {_current_source.get()} has an empty id")
        if isinstance(entry.registered_task_types, str):
            raise PluginRegistryError(
                f"plugin {entry.id!r}: registered_task_types must be a list of task types, not a string"
            )
        source = _current_source.get()
        if entry.id in self._registered:
            earlier = self._registered[entry.id].source
            raise PluginRegistryError(
                f"plugin id {entry.id!r} is registered twice: by {earlier} and by {source}"
            )
        self._registered[entry.id] = _Registered(entry, source)

    @property
    def entries(self) -> list[PluginEntry]:
        return [registered.entry for registered in self._registered.values()]

    def source_of(self, plugin_id: str) -> str:
        return self._registered[plugin_id].source

    def resolver(self, explicit_defaults: Mapping[str, str] | None = None) -> TaskTypeResolver:
        """Decide, once, which plugin id handles each task type, or say loudly why it cannot.

        Order, as in Flyte: an explicit choice from settings, then a plugin's own
        `default_for_task_types`, then the one plugin registering the type, then the default plugin.
        """
        explicit = dict(explicit_defaults or {})
        for task_type, plugin_id in explicit.items():
            if plugin_id not in self._registered:
                raise PluginRegistryError(
                    f"the default plugin for task type {task_type!r} is {plugin_id!r}, "
                    f"but no plugin has that id (known: {', '.join(sorted(self._registered)) or 'none'})"
                )
        claims: dict[str, list[str]] = {}
        preferred: dict[str, list[str]] = {}
        for plugin_id, registered in self._registered.items():
            for task_type in registered.entry.registered_task_types:
                claims.setdefault(task_type, []).append(plugin_id)
            for task_type in registered.entry.default_for_task_types:
                preferred.setdefault(task_type, []).append(plugin_id)
        mapping: dict[str, str] = {}
        for task_type in sorted(set(claims) | set(preferred)):
            if task_type in explicit:
                continue
            candidates = preferred.get(task_type) or claims[task_type]
            if len(candidates) > 1:
                raise PluginRegistryError(
                    f"task type {task_type!r} is claimed by plugins "
                    f"{' and '.join(repr(c) for c in candidates)}; choose one with "
                    f"EXECUTOR_DEFAULT_FOR_TASK_TYPES"
                )
            mapping[task_type] = candidates[0]
        mapping.update(explicit)
        defaults = [pid for pid, registered in self._registered.items() if registered.entry.is_default]
        if len(defaults) > 1:
            raise PluginRegistryError(
                f"plugins {' and '.join(repr(d) for d in defaults)} both say is_default; at most one may"
            )
        models = {
            plugin_id: (registered.entry.input_model, registered.entry.output_model)
            for plugin_id, registered in self._registered.items()
            if registered.entry.input_model is not None or registered.entry.output_model is not None
        }
        submission_defaults = {
            plugin_id: SubmissionDefaults(entry.default_max_attempts, entry.default_timeout)
            for plugin_id, entry in ((pid, r.entry) for pid, r in self._registered.items())
            if entry.default_max_attempts is not None or entry.default_timeout is not None
        }
        placements = {
            plugin_id: Placement(registered.entry.queue, registered.entry.pin_to_host)
            for plugin_id, registered in self._registered.items()
            if registered.entry.queue is not None or registered.entry.pin_to_host
        }
        return TaskTypeResolver(
            mapping, defaults[0] if defaults else None, models, submission_defaults, placements
        )


@dataclass(frozen=True, slots=True)
class SubmissionDefaults:
    """What a plugin's entry says a submission of its task types gets when it does not say."""

    max_attempts: int | None = None
    timeout: timedelta | None = None


_NO_DEFAULTS = SubmissionDefaults()


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a plugin's executions run unless their submission says otherwise."""

    queue: str | None = None
    pin_to_host: bool = False


NO_PLACEMENT = Placement()


@dataclass(frozen=True, slots=True)
class TaskTypeResolver:
    by_task_type: Mapping[str, str]
    default_plugin_id: str | None
    #: Plugin id -> (input model, output model), for plugins that declare either.
    models: Mapping[str, tuple[type[BaseModel] | None, type[BaseModel] | None]] = field(default_factory=dict)
    #: Plugin id -> the submission defaults of its entry, for plugins that declare any.
    submission_defaults: Mapping[str, SubmissionDefaults] = field(default_factory=dict)
    #: Plugin id -> its entry's `queue` and `pin_to_host`, for plugins that declare either.
    placements: Mapping[str, Placement] = field(default_factory=dict)

    def defaults_for(self, task_type: str) -> SubmissionDefaults:
        plugin_id = self.plugin_id_for(task_type)
        if plugin_id is None:
            return _NO_DEFAULTS
        return self.submission_defaults.get(plugin_id, _NO_DEFAULTS)

    def plugin_id_for(self, task_type: str) -> str | None:
        return self.by_task_type.get(task_type, self.default_plugin_id)

    def input_model_for(self, task_type: str) -> type[BaseModel] | None:
        plugin_id = self.plugin_id_for(task_type)
        return self.models.get(plugin_id, (None, None))[0] if plugin_id is not None else None

    def output_model_for(self, task_type: str) -> type[BaseModel] | None:
        plugin_id = self.plugin_id_for(task_type)
        return self.models.get(plugin_id, (None, None))[1] if plugin_id is not None else None

    def placement_for(self, task_type: str) -> Placement:
        plugin_id = self.plugin_id_for(task_type)
        return self.placements.get(plugin_id, NO_PLACEMENT) if plugin_id is not None else NO_PLACEMENT

    @property
    def task_types(self) -> list[str]:
        return sorted(self.by_task_type)


_global_registry = PluginRegistry()
_active_registry: contextvars.ContextVar[PluginRegistry | None] = contextvars.ContextVar(
    "executor_active_plugin_registry", default=None
)
_current_source: contextvars.ContextVar[str] = contextvars.ContextVar(
    "executor_plugin_source", default="<code outside a plugin module>"
)


def plugin_registry() -> PluginRegistry:
    """The registry plugin modules register into (see the module docstring)."""
    return _active_registry.get() or _global_registry


@contextlib.contextmanager
def registering_into(registry: PluginRegistry, source: str) -> Iterator[None]:
    """Route `plugin_registry()` to `registry` while `source` (a module being loaded) runs."""
    registry_token = _active_registry.set(registry)
    source_token = _current_source.set(source)
    try:
        yield
    finally:
        _current_source.reset(source_token)
        _active_registry.reset(registry_token)


class LoadedPlugins:
    """The plugins a daemon runs with: each entry loaded once, and the task-type resolution."""

    def __init__(self, plugins: Mapping[str, Plugin], resolver: TaskTypeResolver) -> None:
        self.by_id = dict(plugins)
        self.resolver = resolver

    def for_task_type(self, task_type: str) -> Plugin | None:
        plugin_id = self.resolver.plugin_id_for(task_type)
        return self.by_id.get(plugin_id) if plugin_id is not None else None

    @property
    def task_types(self) -> list[str]:
        return self.resolver.task_types


async def load_plugins(
    registry: PluginRegistry,
    setup: SetupContext,
    explicit_defaults: Mapping[str, str] | None = None,
) -> LoadedPlugins:
    """Resolve task types (failing loudly on conflicts), then call every entry's `load_plugin`,
    with its configuration validated against its `config_model` first."""
    resolver = registry.resolver(explicit_defaults)
    known = {entry.id for entry in registry.entries}
    unknown = sorted(plugin_id for plugin_id in setup.plugin_config if plugin_id not in known)
    if unknown:
        raise PluginRegistryError(
            f"EXECUTOR_PLUGIN_CONFIG configures {', '.join(repr(u) for u in unknown)}, but no plugin "
            f"has that id (known: {', '.join(sorted(known)) or 'none'})"
        )
    plugins: dict[str, Plugin] = {}
    for entry in registry.entries:
        try:
            own_setup = setup
            if entry.config_model is not None:
                given = setup.plugin_config.get(entry.id)
                config = validate_plugin_config(entry.id, entry.config_model, given)
                own_setup = dataclasses.replace(setup, config=config)
            loaded = entry.load_plugin(own_setup)
            plugin = await loaded if inspect.isawaitable(loaded) else loaded
        except Exception as err:
            source = registry.source_of(entry.id)
            raise PluginRegistryError(
                f"plugin {entry.id!r} ({source}) failed to load: {type(err).__name__}: {err}"
            ) from err
        if not isinstance(plugin, Plugin):
            raise PluginRegistryError(
                f"plugin {entry.id!r} ({registry.source_of(entry.id)}): load_plugin returned "
                f"{type(plugin).__name__}, not a Plugin"
            )
        plugins[entry.id] = plugin
    return LoadedPlugins(plugins, resolver)
