"""The clean-up of every attempt that ended: the plugin's `abort` when owed, then `finalize`.

Each ended attempt is cleaned up once, after the phase that ended it is durable; what the clean-up
came to is recorded by a commit of its own (the round's second), unless it runs nothing of the
plugin's, in which case it is recorded with the round's commit (see `trivial_cleanup`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import anyio

from executor import lifecycle
from executor.core import Plugin
from executor.core.records import ExecutionRecord, RecordUpdate
from executor.plugin.registry import LoadedPlugins
from executor.runtime.context import Contexts
from executor.runtime.invoker import Invoker

#: Stands in for the limiter when a round holds no more executions than may run at once.
_UNLIMITED = contextlib.nullcontext()


def trivial_cleanup(plugin: Plugin | None) -> lifecycle.Cleanup | None:
    """The outcome of a clean-up by `plugin` when it runs nothing of the plugin's, else None.

    That is when no plugin handles the task type any more (nothing can run an `abort` owed, so
    it stays owed: not aborted, yet finalized), or when the plugin keeps the contract's default
    `abort` and `finalize`, which do nothing. Such a clean-up is recorded
    with the commit that ends the attempt: every guarantee of the clean-up holds (nothing of the
    plugin's can run before the phase is durable, be lost in a crash, or run on two replicas),
    and a one-round task costs one write transaction instead of two.
    """
    if plugin is None:
        return lifecycle.Cleanup(aborted=False, finalized=True)
    if _is_default(plugin.abort, Plugin.abort) and _is_default(plugin.finalize, Plugin.finalize):
        return lifecycle.Cleanup(aborted=True, finalized=True)
    return None


def _is_default(method: object, default: object) -> bool:
    """Whether a plugin's bound method is the contract's own (not overridden, nor patched)."""
    return getattr(method, "__func__", None) is default


class Cleaner:
    def __init__(
        self,
        plugins: LoadedPlugins,
        invoker: Invoker,
        contexts: Contexts,
        *,
        clock: Callable[[], float],
        policy: lifecycle.Policy,
        max_parallelism: int,
    ) -> None:
        self._plugins = plugins
        self._invoker = invoker
        self._contexts = contexts
        self._clock = clock
        self._policy = policy
        self._max_parallelism = max_parallelism
        self._limiter = anyio.CapacityLimiter(max_parallelism)

    async def clean_up(
        self, number: int, records: list[ExecutionRecord]
    ) -> tuple[list[RecordUpdate], set[str]]:
        """For each attempt that ended: the plugin's `abort` when owed, then `finalize`. Returns the
        records that say so (which start the next attempt of a RETRYABLE_FAILURE) and the executions
        whose clean-up completed, whose quota tokens the commit releases. A step that raises is
        retried, with backoff, on a later round."""
        done: list[RecordUpdate] = []
        completed: set[str] = set()
        to_run: list[tuple[ExecutionRecord, Plugin | None]] = []
        for record in records:
            plugin = self._plugins.for_task_type(record.task_type)
            trivial = trivial_cleanup(plugin)
            if trivial is None:
                to_run.append((record, plugin))
            else:
                completed.add(record.id)
                done.append(lifecycle.cleaned_up(record, trivial, self._clock(), self._policy))
        limiter = self._limiter if len(to_run) > self._max_parallelism else _UNLIMITED
        step = self._invoker.clean_up_step

        async def one(record: ExecutionRecord, plugin: Plugin | None) -> None:
            aborted, error = not record.abort_owed, None
            async with limiter:
                if plugin is not None:
                    tctx = self._contexts.build(record, plugin, number)
                    if record.abort_owed:
                        error = await step(plugin, plugin.abort, tctx, "abort")
                        aborted = error is None
                    if error is None:
                        error = await step(plugin, plugin.finalize, tctx, "finalize")
                if error is None:
                    completed.add(record.id)
            cleanup = lifecycle.Cleanup(aborted=aborted, finalized=error is None, error=error)
            done.append(lifecycle.cleaned_up(record, cleanup, self._clock(), self._policy))

        if to_run:
            async with anyio.create_task_group() as group:
                for record, plugin in to_run:
                    group.start_soon(one, record, plugin)
        return done, completed
