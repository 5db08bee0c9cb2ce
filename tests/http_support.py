"""Helpers shared by the HTTP tests: the app over a real store, polling with deadlines."""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
from prometheus_client.parser import text_string_to_metric_families

from executor.app.parts import client_for
from executor.core import Plugin, PluginEntry, SetupContext
from executor.http import Metrics, create_app
from executor.logging import get_logger
from executor.plugin.loader import load_directory
from executor.plugin.registry import LoadedPlugins, PluginRegistry, load_plugins
from executor.plugin.resources import InProcessResourceManager
from executor.settings import Settings, load_settings
from executor.store import Store

BUILTIN_PLUGINS = Path(__file__).resolve().parent.parent / "plugins"

T = TypeVar("T")


async def load(settings: Settings, extra: Iterable[Plugin] = ()) -> LoadedPlugins:
    """The built-in plugins (core-sleep, echo) and `extra`, in a registry of the test's own."""
    registry = PluginRegistry()
    load_directory(registry, BUILTIN_PLUGINS)
    for plugin in extra:
        registry.register_core_plugin(
            PluginEntry(id=plugin.id, registered_task_types=[plugin.id], load_plugin=lambda _s, p=plugin: p)
        )
    setup = SetupContext(
        settings=settings, logger=get_logger(), resource_registrar=InProcessResourceManager()
    )
    return await load_plugins(registry, setup)


class Served:
    """The app over a real store, called in process through httpx's ASGI transport, with its
    client from the composition root, as the daemon's."""

    def __init__(self, store: Store, settings: Settings, plugins: LoadedPlugins, metrics: Metrics) -> None:
        self.store = store
        self.settings = settings
        self.plugins = plugins
        self.metrics = metrics
        self.client = client_for(settings, store, plugins.resolver)
        self.app = create_app(client=self.client, plugins=plugins, settings=settings, metrics=metrics)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://executor")


async def serve_app(
    store: Store, database_url: str, *, extra: Iterable[Plugin] = (), **settings: Any
) -> Served:
    loaded = load_settings(database_url=database_url, **settings)
    plugins = await load(loaded, extra)
    return Served(store, loaded, plugins, Metrics(replica_id=loaded.replica_id))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def poll(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    within: float = 10.0,
    every: float = 0.02,
) -> T:
    """Call `probe` until `done(result)`; fail with the last result after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"still not done after {within}s: {result!r}")
        await anyio.sleep(every)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text -> {(sample name, sorted labels): value}."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def sample(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))
