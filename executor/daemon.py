"""The daemon process: the parts the composition root builds (`executor.app.process`), run with signals.

SIGTERM and SIGINT stop claiming, let the round under way finish and commit within
EXECUTOR_SHUTDOWN_GRACE, hand back any lease still held, and return.
"""

from __future__ import annotations

import gc
import signal

import anyio
from anyio.abc import TaskStatus

from executor.app.process import DaemonParts, daemon_parts, setup_plugins
from executor.logging import get_logger
from executor.plugin.lifecycle import running_plugins
from executor.runtime import Reconciler
from executor.settings import Settings
from executor.store import Store
from executor.store.replicas import ReplicaStatus, heartbeat

__all__ = ["serve", "setup_plugins", "tune_gc"]  # setup_plugins: where the benchmarks look for it


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
    """Run a daemon built by the composition root until SIGTERM or SIGINT."""
    async with daemon_parts(settings) as parts:
        await _run(parts, started)


async def _run(parts: DaemonParts, started: anyio.Event | None) -> None:
    settings, store, reconciler = parts.settings, parts.store, parts.reconciler
    log = get_logger(replica=settings.replica_id)
    tune_gc()
    # Plugins start before the first round and close after the loop and HTTP stopped.
    async with running_plugins(parts.plugins.by_id, log), anyio.create_task_group() as group:
        # Only once the handlers are in place does SIGTERM mean "stop"; before, it kills.
        await group.start(_on_signals, reconciler, group.cancel_scope, settings)
        group.start_soon(store.watch_changes, reconciler.wakeup.set)
        group.start_soon(_heartbeat, store, reconciler, settings)
        group.start_soon(parts.scheduler.run)
        group.start_soon(parts.pruner.run)
        if parts.http is not None:
            group.start_soon(parts.http.run)
        log.info(
            "daemon.started",
            database=store.url,
            task_types=parts.plugins.task_types,
            plugins=sorted(parts.plugins.by_id),
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
