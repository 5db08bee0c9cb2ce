"""The worker processes of `cpu_bound` plugins: their `handle`, `abort` and `finalize` run here, off
the daemon's interpreter, where CPU-bound Python holds neither the event loop nor the GIL.

A worker is a spawned interpreter (never a fork of the running event loop) that loads the plugins
from the settings, as the daemon does, once, and then runs one call at a time, each on the event
loop its plugins were loaded on. What crosses the process boundary is the store's data: the
execution record (its inputs and plugin state are JSON already) and, back, what the call came to:
for `handle`, the outcome `outcome.handled` computes (the transition, the new plugin state as JSON
text, the outputs as JSON), for a clean-up None or why it failed. The plugin object never crosses:
each worker has an instance of its own, so what one process keeps on it the other does not see.

The pool is the loop's: workers start when first needed, at most EXECUTOR_PROCESS_WORKERS, and end
with the loop. A worker that dies (killed, a segfault, `os._exit`) fails the one call it was
running as a system failure saying so, and the next call starts a new worker.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
import signal
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from typing import Any

import anyio
import structlog

from executor import lifecycle
from executor.core import Plugin, PluginStateError, SetupContext
from executor.core.records import ExecutionRecord
from executor.logging import configure_logging, get_logger
from executor.plugin.loader import collect
from executor.plugin.registry import LoadedPlugins, PluginRegistry, load_plugins
from executor.plugin.resources import InProcessResourceManager
from executor.plugin.task_exec_context import SecretManager, TaskExecContext
from executor.redaction import REDACTOR
from executor.runtime.outcome import clean_up_raised, handle_raised, handled
from executor.settings import Settings

#: `handle`, `abort` or `finalize`.
Method = str

#: The system failure of a call whose worker process died under it.
WORKER_DIED = "WorkerProcessDied"

#: How long a worker told to stop may take before it is killed.
_STOP_SECONDS = 2.0


class HandledInWorker(Exception):  # noqa: N818 -- not an error: how an outcome comes back
    """Carries the outcome of a `handle` run in a worker process, decided there, past the invoker's
    `handled` (which would check it as a plugin's answer). Raised, so that the invoker's hot path
    pays nothing to tell these calls from the others."""

    def __init__(self, outcome: lifecycle.Outcome) -> None:
        super().__init__(outcome)
        self.outcome = outcome


class WorkerCleanUpError(Exception):
    """An `abort` or `finalize` run in a worker process failed; the message says why, as the
    invoker's own clean-up would have (`abort raised ValueError: ...`)."""


class WorkerDiedError(Exception):
    """The worker process running a call is gone; the message names it and how it ended."""


class QuotasUnavailableError(RuntimeError):
    """Raised by `tctx.resource_manager` in a worker process."""


@dataclass(frozen=True, slots=True)
class Request:
    plugin_id: str
    method: Method
    record: ExecutionRecord
    #: What the daemon's log lines about this call carry (execution, attempt, round, replica).
    log_context: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Reply:
    #: `handle`: its outcome; `abort` and `finalize`: None, or why they failed.
    result: lifecycle.Outcome | str | None
    #: Secrets the call read, for the daemon to mask too (see `executor.redaction`).
    secrets: tuple[str, ...] = ()


class ProcessPool:
    """At most `size` worker processes, started on first use, each running one call at a time.

    A call that is cancelled (its lease lost, shutdown past the grace, EXECUTOR_HANDLE_TIMEOUT)
    cannot be interrupted inside the worker, and its result would be dropped anyway: its worker is
    killed and the next call starts a new one. So a cancelled call never keeps a worker, and a
    runaway computation never keeps the pool's capacity, for longer than the cancellation takes;
    the plugin meets what a crash would do, which `handle`, `abort` and `finalize` must bear anyway.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._slots = asyncio.Semaphore(settings.process_workers)
        #: The threads that wait for the workers' answers, one per call under way.
        self._threads = anyio.CapacityLimiter(settings.process_workers)
        self._idle: list[_Worker] = []
        self._workers: set[_Worker] = set()

    @property
    def started(self) -> int:
        """Worker processes alive (or starting)."""
        return len(self._workers)

    async def call(self, plugin: Plugin, method: Method, tctx: TaskExecContext) -> None:
        """Run `method` of `plugin` for `tctx`'s execution in a worker. A `handle` raises
        `HandledInWorker` with its outcome; a clean-up returns when it completed and raises
        `WorkerCleanUpError` otherwise. A dead worker is a failure of the call like those."""
        context = structlog.get_context(tctx.logger)  # type: ignore[arg-type]
        request = Request(plugin.id, method, tctx.record, context)
        try:
            reply = await self._exchange(request)
        except WorkerDiedError as died:
            message = f"{method} did not finish: {died}"
            tctx.logger.warning("worker_process.died", method=method, error=str(died))
            if method == "handle":
                raise HandledInWorker(lifecycle.SystemFault(WORKER_DIED, message)) from None
            raise WorkerCleanUpError(message) from None
        for secret in reply.secrets:
            REDACTOR.add(secret)
        if method == "handle":
            assert not isinstance(reply.result, str | None)
            raise HandledInWorker(reply.result)
        if reply.result is not None:
            raise WorkerCleanUpError(reply.result)

    async def _exchange(self, request: Request) -> Reply:
        async with self._slots:
            worker = self._idle.pop() if self._idle else await self._start_worker()
            try:
                reply: Reply = await anyio.to_thread.run_sync(
                    worker.exchange, request, abandon_on_cancel=True, limiter=self._threads
                )
            except BaseException:
                # Dead, or running a call nobody waits for any more: either way not reusable.
                self._workers.discard(worker)
                worker.kill()
                raise
            if worker in self._workers:
                self._idle.append(worker)
            else:  # the pool was closed meanwhile
                await anyio.to_thread.run_sync(_stop_all, {worker})
            return reply

    async def _start_worker(self) -> _Worker:
        # Spawning writes the worker's start-up data down a pipe: off the loop, like the calls.
        worker = await anyio.to_thread.run_sync(_Worker, self._context, self._settings)
        self._workers.add(worker)
        return worker

    async def close(self) -> None:
        """End every worker: idle ones are asked to stop, any other is killed. The pool may be
        used again afterwards (it starts new workers)."""
        workers, self._workers, self._idle = self._workers, set(), []
        if workers:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_stop_all, workers)


class _Worker:
    """One worker process and the daemon's end of its pipe."""

    __slots__ = ("connection", "process")

    def __init__(self, context: Any, settings: Settings) -> None:
        self.connection, child = context.Pipe()
        self.process: SpawnProcess = context.Process(
            target=serve, args=(child, settings), name="executor-cpu-worker", daemon=True
        )
        self.process.start()
        child.close()

    def exchange(self, request: Request) -> Reply:
        """Send a call and wait for its reply (in a thread of the daemon's)."""
        try:
            self.connection.send(request)
            reply: Reply = self.connection.recv()
        except (EOFError, OSError) as err:
            self.process.join(_STOP_SECONDS)
            self.kill()
            self.process.join()
            self.connection.close()
            raise WorkerDiedError(self._death()) from err
        return reply

    def kill(self) -> None:
        if self.process.exitcode is None:
            self.process.kill()

    def _death(self) -> str:
        code = self.process.exitcode
        if code is not None and code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        return f"the worker process (pid {self.process.pid}) died ({how})"


def _stop_all(workers: set[_Worker]) -> None:
    for worker in workers:
        try:
            worker.connection.send(None)
        except OSError:
            worker.kill()  # gone already, or its pipe is: nothing to ask
    for worker in workers:
        worker.process.join(_STOP_SECONDS)
        worker.kill()
        worker.process.join()
        worker.connection.close()


# -- in the worker process ----------------------------------------------------------------------


def serve(connection: Connection, settings: Settings) -> None:
    """A worker's life: load the plugins, then answer calls until told to stop or the daemon is gone.

    SIGINT is ignored: a Ctrl+C reaches the whole process group, and must not kill the calls that
    the daemon's graceful stop lets finish; the daemon ends its workers itself. SIGTERM is not:
    it is how `multiprocessing` ends the workers of a daemon that exits without closing its pool.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(settings.log_level, settings.log_format)
    with asyncio.Runner() as runner:
        worker = Calls(settings, runner)
        while True:
            try:
                request = connection.recv()
            except (EOFError, OSError):
                return  # the daemon went away
            if request is None:
                return
            reply = worker.run(request)
            try:
                connection.send(reply)
            except (EOFError, OSError):
                return
            except Exception as err:  # the outcome would not pickle: say so instead
                connection.send(_unsendable(request, err))


class Calls:
    """The worker's plugins and what a call needs besides its execution."""

    def __init__(self, settings: Settings, runner: asyncio.Runner) -> None:
        self._settings = settings
        self._runner = runner
        self._read: list[str] = []
        self._secrets = SecretManager(settings.secret_env_prefix, settings.secrets_dir, on_read=self._on_read)
        self._plugins: LoadedPlugins | None = None
        self._unloadable: str | None = None
        try:
            self._plugins = runner.run(_load_plugins(settings))
        except Exception as err:
            self._unloadable = f"the worker process could not load the plugins: {type(err).__name__}: {err}"
            get_logger().error("worker_process.plugins_failed", error=self._unloadable)

    def _on_read(self, value: str) -> None:
        REDACTOR.add(value)
        self._read.append(value)

    def run(self, request: Request) -> Reply:
        self._read = []
        result = self._run(request)
        return Reply(result, tuple(self._read))

    def _run(self, request: Request) -> lifecycle.Outcome | str | None:
        record = request.record
        logger = functools.partial(get_logger, **request.log_context, worker_pid=os.getpid())
        try:
            plugin, output_model = self._plugin(request)
            tctx = TaskExecContext(
                record,
                properties=plugin.properties,
                max_state_bytes=self._settings.max_plugin_state_bytes,
                resource_manager=_NoQuotas,
                secret_manager=self._secrets,
                output_model=output_model,
                max_payload_bytes=self._settings.max_payload_bytes,
                logger=logger,
            )
            returned = self._runner.run(_awaited(getattr(plugin, request.method)(tctx)))
        except Exception as err:
            if request.method != "handle":
                return clean_up_raised(request.method, err)
            if not isinstance(err, PluginStateError):
                logger().warning("handle.raised", error=f"{type(err).__name__}: {err}", exc_info=True)
            return handle_raised(err)
        if request.method != "handle":
            return None
        return handled(returned, tctx)

    def _plugin(self, request: Request) -> tuple[Plugin, Any]:
        if self._plugins is None:
            raise RuntimeError(self._unloadable)
        plugin = self._plugins.by_id.get(request.plugin_id)
        if plugin is None:
            raise LookupError(
                f"plugin {request.plugin_id!r} is not loaded in the worker process, which loads "
                "the plugins the settings name (EXECUTOR_PLUGINS_DIR, EXECUTOR_PLUGIN_ENTRY_POINTS)"
            )
        return plugin, self._plugins.resolver.output_model_for(request.record.task_type)


async def _load_plugins(settings: Settings) -> LoadedPlugins:
    """The daemon's plugins, found and loaded as `executor.daemon.setup_plugins` does (which the
    runtime may not import: the daemon assembles the runtime, not the other way round)."""
    registry = PluginRegistry()
    collect(registry, settings.plugins_dir, use_entry_points=settings.plugin_entry_points)
    setup = SetupContext(
        settings=settings,
        logger=get_logger(),
        resource_registrar=InProcessResourceManager(settings.resource_quotas),
        plugin_config=settings.plugin_config,
    )
    return await load_plugins(registry, setup, settings.default_for_task_types)


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class _NoQuotas:
    """`tctx.resource_manager` in a worker process: quotas are kept in the store, which a worker
    does not reach. A plugin that allocates must not be `cpu_bound` (or must hand the allocation
    to a plugin that is not)."""

    _MESSAGE = (
        "resource quotas are kept in the store, which the worker process of a cpu_bound plugin "
        "cannot reach: allocate from a plugin that is not cpu_bound"
    )

    async def allocate(
        self, namespace: str, token: str, constraints: Mapping[str, Any] | None = None
    ) -> bool:
        raise QuotasUnavailableError(self._MESSAGE)

    async def release(self, namespace: str, token: str) -> None:
        raise QuotasUnavailableError(self._MESSAGE)


def _unsendable(request: Request, err: Exception) -> Reply:
    problem = f"what {request.method} came to cannot be sent back from the worker process: {err}"
    if request.method == "handle":
        return Reply(lifecycle.SystemFault("HandleRaised", problem))
    return Reply(problem)
