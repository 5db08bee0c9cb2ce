"""The daemon process: settings -> logging -> store (migrated) -> plugins -> the loop, with signals.

SIGTERM and SIGINT stop claiming, let the round under way finish and commit within
EXECUTOR_SHUTDOWN_GRACE, hand back any lease still held, and return.
"""

from __future__ import annotations

import gc
import signal
from pathlib import Path

import anyio
from anyio.abc import TaskStatus

from executor.core import SetupContext
from executor.logging import get_logger
from executor.plugin.lifecycle import running_plugins
from executor.plugin.loader import collect
from executor.plugin.registry import LoadedPlugins, PluginRegistry, load_plugins
from executor.plugin.resources import InProcessResourceManager
from executor.reconciler import Reconciler
from executor.settings import Settings
from executor.store import Store
from executor.store.migrate import upgrade
from executor.store.replicas import ReplicaStatus, heartbeat


def collect_registry(settings: Settings) -> PluginRegistry:
    """Import the plugin modules the settings point at into a fresh registry."""
    registry = PluginRegistry()
    log = get_logger()

    def missing(default: Path) -> None:
        log.info("plugins.default_dir_missing", directory=str(default.resolve()), using="packaged built-ins")

    collect(
        registry,
        settings.plugins_dir,
        use_entry_points=settings.plugin_entry_points,
        on_missing_default=missing,
    )
    return registry


async def setup_plugins(
    settings: Settings, resources: InProcessResourceManager, registry: PluginRegistry | None = None
) -> LoadedPlugins:
    registry = registry if registry is not None else collect_registry(settings)
    setup = SetupContext(
        settings=settings,
        logger=get_logger(),
        resource_registrar=resources,
        plugin_config=settings.plugin_config,
    )
    return await load_plugins(registry, setup, settings.default_for_task_types)


#: Young-generation collections happen after this many new container objects. A round of 256
#: executions makes about ten thousand (records, dicts, tuples), nearly all freed by reference
#: counting: at Python's default of 700, the collector ran a dozen times a round for little.
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a long-running loop, once start-up is done.

    What start-up loaded (modules, plugins, SQLAlchemy's and pydantic's caches: hundreds of
    thousands of objects) lives as long as the process; frozen, the collector no longer walks it
    on every full collection. Together with a higher young threshold this took about a quarter
    off a one-round task's CPU (bench/, issue 5).
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


async def serve(settings: Settings, *, started: anyio.Event | None = None) -> None:
    log = get_logger(replica=settings.replica_id)
    resources = InProcessResourceManager(settings.resource_quotas)
    plugins = await setup_plugins(settings, resources)
    store = Store.from_url(settings.database_url)
    try:
        if settings.migrate_on_start:
            await upgrade(store.engine)
        from executor.http import HttpServer, Metrics  # the HTTP stack loads only for `executor run`

        metrics = Metrics(replica_id=settings.replica_id)
        reconciler = Reconciler(store, plugins, settings, resource_manager=resources, observer=metrics)
        http = HttpServer.from_settings(settings, store=store, plugins=plugins, metrics=metrics)
        tune_gc()
        # Plugins start before the first round and close after the loop and HTTP stopped.
        async with running_plugins(plugins.by_id, log), anyio.create_task_group() as group:
            # Only once the handlers are in place does SIGTERM mean "stop"; before, it kills.
            await group.start(_on_signals, reconciler, group.cancel_scope, settings)
            group.start_soon(store.watch_changes, reconciler.wakeup.set)
            group.start_soon(_heartbeat, store, reconciler, settings)
            if http is not None:
                group.start_soon(http.run)
            log.info(
                "daemon.started",
                database=store.url,
                task_types=plugins.task_types,
                plugins=sorted(plugins.by_id),
                batch_size=settings.batch_size,
            )
            if started is not None:
                started.set()
            try:
                await reconciler.run()
            finally:
                await reconciler.release_in_flight()
            group.cancel_scope.cancel()
        log.info("daemon.stopped", rounds=reconciler.rounds)
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()


async def _heartbeat(store: Store, reconciler: Reconciler, settings: Settings) -> None:
    def status() -> ReplicaStatus:
        return ReplicaStatus(reconciler.rounds, reconciler.last_round_at, reconciler.in_flight)

    await heartbeat(store, settings.replica_id, status, interval=settings.heartbeat_interval.total_seconds())


async def _on_signals(
    reconciler: Reconciler,
    scope: anyio.CancelScope,
    settings: Settings,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    log = get_logger(replica=settings.replica_id)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            grace = settings.shutdown_grace.total_seconds()
            log.info("daemon.stopping", signal=signal.Signals(signum).name, grace_seconds=grace)
            reconciler.stop()
            break
    await anyio.sleep(settings.shutdown_grace.total_seconds())
    log.warning("daemon.grace_expired", detail="cancelling the round under way; its leases are released")
    scope.cancel()
