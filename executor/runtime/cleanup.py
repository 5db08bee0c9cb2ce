"""The clean-up of every attempt that ended: the plugin's `abort` when owed, then `finalize`.

Each ended attempt is cleaned up once, after the phase that ended it is durable; what the clean-up
came to is recorded by a commit of its own (the round's second), unless it runs nothing of the
plugin's, in which case it is recorded with the round's commit (see `trivial_cleanup`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from executor import lifecycle
from executor.core import Plugin
from executor.core.records import ExecutionRecord, RecordUpdate
from executor.plugin.registry import LoadedPlugins
from executor.runtime.context import Contexts
from executor.runtime.invoker import Call, Invoker
from executor.runtime.tasks import cancel_and_wait

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

    async def clean_up(self, number: int, records: list[ExecutionRecord], budget: float) -> CleanUps:
        """For each attempt that ended: the plugin's `abort` when owed, then `finalize`, waited for
        up to `budget` seconds.

        Returns the records that say how each finished clean-up went (which start the next attempt
        of a RETRYABLE_FAILURE), the executions whose clean-up completed, whose quota tokens the
        commit releases, and the calls still running, each with its record: their outcome, the
        same pair, comes later. A step that raises is retried, with backoff, on a later round.
        """
        done = CleanUps()
        to_run: list[tuple[ExecutionRecord, Plugin]] = []
        for record in records:
            plugin = self._plugins.for_task_type(record.task_type)
            trivial = trivial_cleanup(plugin)
            if trivial is None and plugin is not None:
                to_run.append((record, plugin))
            else:
                assert trivial is not None
                done.completed.add(record.id)
                done.updates.append(lifecycle.cleaned_up(record, trivial, self._clock(), self._policy))
        if not to_run:
            return done
        limiter = self._limiter if len(to_run) > self._max_parallelism else _UNLIMITED
        step = self._invoker.clean_up_step

        async def one(call: Call, record: ExecutionRecord) -> None:
            aborted, error = not record.abort_owed, None
            plugin, tctx = call.plugin, call.tctx
            try:
                async with limiter:
                    if record.abort_owed:
                        error = await step(plugin, plugin.abort, tctx, "abort")
                        aborted = error is None
                    if error is None:
                        error = await step(plugin, plugin.finalize, tctx, "finalize")
            except asyncio.CancelledError:
                if call.dropped:
                    return  # its lease was lost: whoever holds it now cleans up
                raise
            cleanup = lifecycle.Cleanup(aborted=aborted, finalized=error is None, error=error)
            call.finish((lifecycle.cleaned_up(record, cleanup, self._clock(), self._policy), error is None))

        loop = asyncio.get_running_loop()
        calls: list[tuple[Call, ExecutionRecord]] = []
        started = time.monotonic()
        for record, plugin in to_run:
            call = Call(len(calls), plugin, self._contexts.build(record, plugin, number))
            call.started = started
            call.task = loop.create_task(one(call, record))
            calls.append((call, record))
        tasks = [call.task for call, _ in calls if call.task is not None]
        try:
            await asyncio.wait(tasks, timeout=budget)
        except BaseException:
            await cancel_and_wait(tasks)
            raise
        for call, record in calls:
            if call.outcome is None:
                done.pending.append((call, record))
            else:
                done.add(record.id, *call.outcome)
        return done


@dataclass(slots=True)
class CleanUps:
    """What a round's clean-ups came to: records to commit, completed clean-ups, calls pending."""

    updates: list[RecordUpdate] = field(default_factory=list)
    completed: set[str] = field(default_factory=set)
    pending: list[tuple[Call, ExecutionRecord]] = field(default_factory=list)

    def add(self, execution_id: str, update: RecordUpdate, completed: bool) -> None:
        self.updates.append(update)
        if completed:
            self.completed.add(execution_id)
