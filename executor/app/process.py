"""The daemon's parts: loaded plugins, the store (migrated), the client, the loop, metrics, HTTP.

`daemon_parts` builds them in order and takes them down in reverse; `executor.daemon.serve`
runs them (task group, signals, heartbeats). The HTTP stack is imported here, when a daemon is
assembled, never by the command line's other commands.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from executor.app.parts import client_for, collect_registry, open_store
from executor.client import Client
from executor.core import SetupContext
from executor.history import Pruner
from executor.logging import get_logger
from executor.plugin.registry import LoadedPlugins, PluginRegistry, load_plugins
from executor.plugin.resources import InProcessResourceManager
from executor.runtime import Reconciler
from executor.schedules import Scheduler, declare_at_start
from executor.settings import Settings
from executor.store import Store
from executor.store.migrate import upgrade

if TYPE_CHECKING:
    from executor.http import HttpServer, Metrics


async def setup_plugins(
    settings: Settings, resources: InProcessResourceManager, registry: PluginRegistry | None = None
) -> LoadedPlugins:
    """Import the plugin modules and call each entry's `load_plugin`, with the daemon's settings."""
    registry = registry if registry is not None else collect_registry(settings)
    setup = SetupContext(
        settings=settings,
        logger=get_logger(),
        resource_registrar=resources,
        plugin_config=settings.plugin_config,
    )
    return await load_plugins(registry, setup, settings.default_for_task_types)


@dataclass(frozen=True, slots=True)
class DaemonParts:
    settings: Settings
    store: Store
    resources: InProcessResourceManager
    plugins: LoadedPlugins
    #: What the HTTP API submits through: the same rules as `executor submit`.
    client: Client
    metrics: Metrics
    reconciler: Reconciler
    #: Turns due schedule slots into executions; runs on every replica.
    scheduler: Scheduler
    #: Deletes finished executions past their retention (EXECUTOR_RETAIN_*); one replica at a time.
    pruner: Pruner
    #: None when EXECUTOR_HTTP_ADDR is empty.
    http: HttpServer | None


@asynccontextmanager
async def daemon_parts(settings: Settings) -> AsyncIterator[DaemonParts]:
    """Every part of a daemon, built from `settings`; the store is closed on the way out.

    Plugins load first (a broken plugin stops the start-up before the database is touched), then
    the store is opened and migrated when EXECUTOR_MIGRATE_ON_START allows, then the loop and the
    HTTP server (its socket bound, so that an address in use stops the start-up too).
    """
    resources = InProcessResourceManager(settings.resource_quotas)
    plugins = await setup_plugins(settings, resources)
    store = open_store(settings)
    try:
        if settings.migrate_on_start:
            await upgrade(store.engine)
        from executor.http import HttpServer, Metrics  # the HTTP stack loads only for `executor run`

        metrics = Metrics(replica_id=settings.replica_id)
        client = client_for(settings, store, plugins.resolver)
        await declare_at_start(client, settings)
        scheduler = Scheduler(client, replica_id=settings.replica_id)
        reconciler = Reconciler(store, plugins, settings, resource_manager=resources, observer=metrics)
        metrics.watch_calls(reconciler.calls_in_flight)
        http = HttpServer.from_settings(settings, client=client, plugins=plugins, metrics=metrics)
        pruner = Pruner(store, settings)
        parts = DaemonParts(
            settings, store, resources, plugins, client, metrics, reconciler, scheduler, pruner, http
        )
        try:
            yield parts
        finally:
            if http is not None:
                http.close()  # a server that never ran still holds its socket
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()
