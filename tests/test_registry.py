"""The plugin registry: registration, task-type resolution, defaults, and loading entries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from executor import plugin_registry
from executor.core import PhaseInfo, Plugin, PluginEntry, SetupContext, Transition, do_transition
from executor.plugin.registry import (
    PluginRegistry,
    PluginRegistryError,
    load_plugins,
    registering_into,
)
from executor.plugin.resources import InProcessResourceManager

pytestmark = pytest.mark.anyio


class _Logger:
    def debug(self, event: str, **kw: Any) -> None: ...
    def info(self, event: str, **kw: Any) -> None: ...
    def warning(self, event: str, **kw: Any) -> None: ...
    def error(self, event: str, **kw: Any) -> None: ...


SETUP = SetupContext(settings=None, logger=_Logger(), resource_registrar=InProcessResourceManager())


class NamedPlugin(Plugin):
    def __init__(self, plugin_id: str) -> None:
        self.id = plugin_id

    async def handle(self, tctx: Any) -> Transition:
        return do_transition(PhaseInfo.success())


def entry(
    plugin_id: str,
    task_types: list[str] | None = None,
    *,
    load: Callable[[SetupContext], Any] | None = None,
    is_default: bool = False,
    default_for: list[str] | None = None,
) -> PluginEntry:
    return PluginEntry(
        id=plugin_id,
        registered_task_types=task_types if task_types is not None else [plugin_id],
        load_plugin=load or (lambda setup: NamedPlugin(plugin_id)),
        is_default=is_default,
        default_for_task_types=default_for or [],
    )


def register(registry: PluginRegistry, plugin_entry: PluginEntry, source: str) -> None:
    with registering_into(registry, source):
        plugin_registry().register_core_plugin(plugin_entry)


def test_registries_are_isolated() -> None:
    one, two = PluginRegistry(), PluginRegistry()
    register(one, entry("a"), "a.py")
    register(two, entry("b"), "b.py")
    assert [e.id for e in one.entries] == ["a"]
    assert [e.id for e in two.entries] == ["b"]
    assert one.source_of("a") == "a.py"


def test_plugin_registry_routes_to_the_active_registry_only_inside_the_block() -> None:
    registry = PluginRegistry()
    with registering_into(registry, "x.py"):
        assert plugin_registry() is registry
    assert plugin_registry() is not registry


def test_duplicate_id_names_both_sources() -> None:
    registry = PluginRegistry()
    register(registry, entry("dup", ["t1"]), "plugins/first.py")
    with pytest.raises(PluginRegistryError) as caught:
        register(registry, entry("dup", ["t2"]), "plugins/second.py")
    message = str(caught.value)
    assert "'dup'" in message
    assert "plugins/first.py" in message and "plugins/second.py" in message
    assert [e.id for e in registry.entries] == ["dup"]  # the second was not kept


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (entry("", ["t"]), "empty id"),
        (PluginEntry(id="s", registered_task_types="abc", load_plugin=lambda s: NamedPlugin("s")), "list"),
    ],
)
def test_malformed_entries_are_refused(bad: PluginEntry, match: str) -> None:
    with pytest.raises(PluginRegistryError, match=match):
        PluginRegistry().register_core_plugin(bad)


def test_non_entry_is_refused() -> None:
    with pytest.raises(PluginRegistryError, match="PluginEntry"):
        PluginRegistry().register_core_plugin({"id": "x"})  # type: ignore[arg-type]


def test_resolves_each_task_type_to_its_plugin() -> None:
    registry = PluginRegistry()
    register(registry, entry("sleep", ["core-sleep"]), "s.py")
    register(registry, entry("multi", ["a", "b"]), "m.py")
    resolver = registry.resolver()
    assert resolver.plugin_id_for("core-sleep") == "sleep"
    assert resolver.plugin_id_for("a") == "multi"
    assert resolver.plugin_id_for("b") == "multi"
    assert resolver.plugin_id_for("nope") is None
    assert resolver.task_types == ["a", "b", "core-sleep"]
    assert resolver.default_plugin_id is None


def test_two_plugins_claiming_one_task_type_is_an_error_naming_both() -> None:
    registry = PluginRegistry()
    register(registry, entry("first", ["shared", "x"]), "f.py")
    register(registry, entry("second", ["shared"]), "s.py")
    with pytest.raises(PluginRegistryError) as caught:
        registry.resolver()
    message = str(caught.value)
    assert "'shared'" in message
    assert "'first'" in message and "'second'" in message
    assert "EXECUTOR_DEFAULT_FOR_TASK_TYPES" in message


def test_explicit_defaults_resolve_the_conflict() -> None:
    registry = PluginRegistry()
    register(registry, entry("first", ["shared"]), "f.py")
    register(registry, entry("second", ["shared", "other"]), "s.py")
    resolver = registry.resolver({"shared": "second"})
    assert resolver.plugin_id_for("shared") == "second"
    assert resolver.plugin_id_for("other") == "second"
    assert registry.resolver({"shared": "first"}).plugin_id_for("shared") == "first"


def test_explicit_default_naming_an_unknown_plugin_is_an_error() -> None:
    registry = PluginRegistry()
    register(registry, entry("first", ["shared"]), "f.py")
    with pytest.raises(PluginRegistryError, match=r"'ghost'.*known: first"):
        registry.resolver({"shared": "ghost"})


def test_default_for_task_types_wins_over_a_plain_claim() -> None:
    registry = PluginRegistry()
    register(registry, entry("generic", ["shared"]), "g.py")
    register(registry, entry("special", ["shared"], default_for=["shared"]), "s.py")
    assert registry.resolver().plugin_id_for("shared") == "special"


def test_default_for_a_type_nobody_registers_still_routes_it() -> None:
    registry = PluginRegistry()
    register(registry, entry("p", ["a"], default_for=["b"]), "p.py")
    resolver = registry.resolver()
    assert resolver.plugin_id_for("b") == "p"
    assert "b" in resolver.task_types


def test_two_default_for_the_same_type_is_an_error() -> None:
    registry = PluginRegistry()
    register(registry, entry("one", ["t"], default_for=["t"]), "1.py")
    register(registry, entry("two", ["t"], default_for=["t"]), "2.py")
    with pytest.raises(PluginRegistryError, match=r"'one' and 'two'"):
        registry.resolver()


def test_is_default_is_the_fallback_for_unregistered_types() -> None:
    registry = PluginRegistry()
    register(registry, entry("sleep", ["core-sleep"]), "s.py")
    register(registry, entry("catchall", [], is_default=True), "c.py")
    resolver = registry.resolver()
    assert resolver.default_plugin_id == "catchall"
    assert resolver.plugin_id_for("anything") == "catchall"
    assert resolver.plugin_id_for("core-sleep") == "sleep"


def test_two_is_default_is_an_error() -> None:
    registry = PluginRegistry()
    register(registry, entry("d1", [], is_default=True), "1.py")
    register(registry, entry("d2", [], is_default=True), "2.py")
    with pytest.raises(PluginRegistryError, match=r"'d1' and 'd2'.*is_default"):
        registry.resolver()


async def test_load_plugins_with_sync_and_async_load_plugin() -> None:
    registry = PluginRegistry()
    seen: list[SetupContext] = []

    def sync_load(setup: SetupContext) -> Plugin:
        seen.append(setup)
        return NamedPlugin("sync")

    async def async_load(setup: SetupContext) -> Plugin:
        seen.append(setup)
        return NamedPlugin("async")

    register(registry, entry("sync", ["s"], load=sync_load), "s.py")
    register(registry, entry("async", ["a"], load=async_load), "a.py")
    register(registry, entry("fallback", [], is_default=True), "f.py")
    loaded = await load_plugins(registry, SETUP)
    assert seen == [SETUP, SETUP]
    assert set(loaded.by_id) == {"sync", "async", "fallback"}
    plugin = loaded.for_task_type("s")
    assert isinstance(plugin, NamedPlugin) and plugin.id == "sync"
    plugin = loaded.for_task_type("a")
    assert isinstance(plugin, NamedPlugin) and plugin.id == "async"
    plugin = loaded.for_task_type("unknown")
    assert isinstance(plugin, NamedPlugin) and plugin.id == "fallback"
    assert loaded.task_types == ["a", "s"]


async def test_load_plugins_without_default_gives_none_for_unknown_types() -> None:
    registry = PluginRegistry()
    register(registry, entry("only"), "o.py")
    loaded = await load_plugins(registry, SETUP)
    assert loaded.for_task_type("other") is None


async def test_load_plugins_resolves_conflicts_with_explicit_defaults() -> None:
    registry = PluginRegistry()
    register(registry, entry("first", ["shared"]), "f.py")
    register(registry, entry("second", ["shared"]), "s.py")
    with pytest.raises(PluginRegistryError, match="EXECUTOR_DEFAULT_FOR_TASK_TYPES"):
        await load_plugins(registry, SETUP)
    loaded = await load_plugins(registry, SETUP, {"shared": "first"})
    plugin = loaded.for_task_type("shared")
    assert isinstance(plugin, NamedPlugin) and plugin.id == "first"


async def test_load_plugin_that_raises_names_the_plugin_source_and_error() -> None:
    def broken(setup: SetupContext) -> Plugin:
        raise RuntimeError("no credentials")

    registry = PluginRegistry()
    register(registry, entry("broken", load=broken), "plugins/broken.py")
    with pytest.raises(PluginRegistryError) as caught:
        await load_plugins(registry, SETUP)
    message = str(caught.value)
    assert "'broken'" in message and "plugins/broken.py" in message
    assert "RuntimeError: no credentials" in message


async def test_async_load_plugin_that_raises_is_reported_too() -> None:
    async def broken(setup: SetupContext) -> Plugin:
        raise ValueError("bad config")

    registry = PluginRegistry()
    register(registry, entry("abroken", load=broken), "a.py")
    with pytest.raises(PluginRegistryError, match="ValueError: bad config"):
        await load_plugins(registry, SETUP)


@pytest.mark.parametrize("returned", [None, "a plugin", object()])
async def test_load_plugin_returning_a_non_plugin_is_an_error(returned: object) -> None:
    registry = PluginRegistry()
    register(registry, entry("liar", load=lambda setup: returned), "l.py")
    with pytest.raises(
        PluginRegistryError, match=rf"'liar'.*returned {type(returned).__name__}, not a Plugin"
    ):
        await load_plugins(registry, SETUP)
