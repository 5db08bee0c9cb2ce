"""The reconciliation loop: claim -> handle -> advance -> commit -> finalize, round after round.

The loop only moves data. What each outcome means is decided by `lifecycle.advance`; where it is
stored is the store's business. A round is a transaction: nothing a plugin returned is visible
before the round commits, and a crash before that simply runs the round again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import time
import types
import uuid
from collections.abc import Awaitable, Callable, Collection, Coroutine, Generator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Protocol

import anyio

from executor import lifecycle
from executor.core import (
    ExecutionError,
    Logger,
    Phase,
    PhaseInfo,
    Plugin,
    PluginStateError,
    TaskInfo,
    TaskLog,
    Transition,
)
from executor.core.records import ExecutionRecord, RecordUpdate
from executor.logging import get_logger
from executor.plugin.registry import LoadedPlugins
from executor.plugin.resources import InProcessResourceManager
from executor.plugin.task_exec_context import SecretManager, TaskExecContext
from executor.redaction import REDACTOR
from executor.settings import Settings
from executor.store import CommitResult, Store
from executor.store.quotas import SqlResourceManager

Clock = Callable[[], float]


class Wakeup:
    """Wakes the sleeping loop early; many wake-ups while it is busy coalesce into one."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when woken. Clears the wake-up either way."""
        woken = False
        with anyio.move_on_after(max(seconds, 0.0)):
            await self._event.wait()
            woken = True
        if self._event.is_set():
            self._event = anyio.Event()
        return woken


@dataclass(frozen=True, slots=True)
class RoundStats:
    number: int
    claimed: int
    committed: int
    lost: int
    finalized: int


@dataclass(slots=True)
class _HandledRound:
    """A round whose plugins have run: what its commit writes, and what it must clean up after."""

    number: int
    token: str
    claimed: list[ExecutionRecord]
    awaiting_cleanup: list[ExecutionRecord] = field(default_factory=list)
    updates: list[RecordUpdate] = field(default_factory=list)
    #: Attempts whose clean-up runs nothing of the plugin's, recorded with this commit.
    settled: set[str] = field(default_factory=set)
    now: float = 0.0


class RoundObserver(Protocol):
    """What the loop reports as it goes (metrics hang off this); every method must be cheap."""

    def round_finished(self, stats: RoundStats, seconds: float) -> None: ...
    def handle_finished(self, plugin_id: str, outcome: str, seconds: float) -> None: ...
    def loop_blocked(self, plugin_id: str, seconds: float) -> None: ...
    def woken(self) -> None: ...
    def store_error(self) -> None: ...


class NullObserver:
    """Observes nothing; subclass it to hear only some of what the loop reports."""

    def round_finished(self, stats: RoundStats, seconds: float) -> None:
        pass

    def handle_finished(self, plugin_id: str, outcome: str, seconds: float) -> None:
        pass

    def loop_blocked(self, plugin_id: str, seconds: float) -> None:
        pass

    def woken(self) -> None:
        pass

    def store_error(self) -> None:
        pass


#: A plugin call that holds the event loop longer than this in one step is reported by name.
BLOCKING_STEP_SECONDS = 0.1

_OUTCOME_LABELS: dict[type, str] = {
    lifecycle.Handled: "transition",
    lifecycle.SystemFault: "system_fault",
    lifecycle.Rejected: "rejected",
    lifecycle.NoPlugin: "no_plugin",
    lifecycle.AbortRequested: "aborted",
    lifecycle.Expired: "expired",
}


class Reconciler:
    def __init__(
        self,
        store: Store,
        plugins: LoadedPlugins,
        settings: Settings,
        *,
        resource_manager: InProcessResourceManager | None = None,
        clock: Clock = time.time,
        observer: RoundObserver | None = None,
    ) -> None:
        self.store = store
        self.plugins = plugins
        self.settings = settings
        self.clock = clock
        self.wakeup = Wakeup()
        self.rounds = 0
        self.last_round_at: float | None = None
        self._stopping = False
        self._limiter = anyio.CapacityLimiter(settings.max_parallelism)
        self._policy = lifecycle.Policy(
            max_system_failures=settings.max_system_failures,
            backoff_base=settings.retry_backoff_base.total_seconds(),
            backoff_max=settings.retry_backoff_max.total_seconds(),
            default_requeue=settings.default_requeue.total_seconds(),
            max_phase_versions=settings.max_phase_versions,
        )
        self._handle_timeout = settings.handle_timeout.total_seconds()
        self._lease_ttl = settings.lease_ttl.total_seconds()
        # What plugins registered at set-up; the quotas themselves are kept in the store.
        self._resources = resource_manager or InProcessResourceManager(settings.resource_quotas)
        self._quotas = SqlResourceManager(store)
        self._quotas_registered = False
        self._secrets = SecretManager(settings.secret_env_prefix, settings.secrets_dir, on_read=REDACTOR.add)
        self._log = get_logger(replica=settings.replica_id)
        self.observer: RoundObserver = observer or NullObserver()
        # The plugins and their models are fixed once loaded: each task type is resolved once.
        self._output_model_for = functools.cache(plugins.resolver.output_model_for)
        #: The leases of the rounds under way (two while a commit overlaps the next round): token -> ids.
        self._in_flight: dict[str, list[str]] = {}

    # -- the loop -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the round under way, then return from `run`."""
        self._stopping = True
        self.wakeup.set()

    async def run(self) -> None:
        """Round after round until `stop`.

        Where the store lets a commit run while the next round claims (PostgreSQL), the commit of
        a full round runs in the background while the next round claims and calls its plugins:
        the database works on one round while Python works on the next. The two rounds' executions
        differ (a round's rows stay leased until its commit), and a round commits only after the
        one before it, so commits stay in order and at most one is in flight.
        """
        failures = 0
        committing: asyncio.Task[RoundStats] | None = None
        try:
            while not self._stopping:
                handled: _HandledRound | None = None
                try:
                    started = time.perf_counter()
                    handled = await self._claim_and_handle()
                    if committing is not None:
                        task, committing = committing, None
                        await task  # its error, if any, is this round's: handled above is released
                    full = len(handled.claimed) >= self.settings.batch_size
                    if full and self.store.overlaps_writes and not self._stopping:
                        # More is likely due: claim it while this round commits.
                        commit = self._commit_timed(handled, started)
                        committing = asyncio.get_running_loop().create_task(commit)
                        claimed = len(handled.claimed)
                    else:
                        claimed = (await self._commit_timed(handled, started)).claimed
                    if failures:
                        self._log.info("database.reconnected", failed_rounds=failures)
                    failures = 0
                except Exception as err:
                    if handled is not None:
                        await self._abandon(handled)  # when its commit never started
                    if not _is_store_error(err):
                        raise
                    failures += 1
                    self.observer.store_error()
                    delay = _backoff(failures, self.settings.poll_interval.total_seconds())
                    self._log.error(
                        "round.store_error",
                        error=f"{type(err).__name__}: {err}",
                        retry_in=round(delay, 3),
                        attempt=failures,
                    )
                    await self.wakeup.wait(delay)
                    continue
                if claimed >= self.settings.batch_size or self._stopping:
                    continue  # more may be due right now
                if await self.wakeup.wait(await self._idle_delay()):
                    self.observer.woken()
        except BaseException:
            # Cancelled (the shutdown grace ran out): the round still committing goes too, and
            # hands its leases back.
            if committing is not None:
                await _cancel_and_wait([committing])
            raise
        if committing is not None:
            await self._last_commit(committing)

    async def _last_commit(self, committing: asyncio.Task[RoundStats]) -> None:
        """On `stop`, the round still committing finishes. The database failing it is logged, as
        the loop would have; the round hands its leases back, so its executions run again."""
        try:
            await committing
        except Exception as err:
            if not _is_store_error(err):
                raise
            self._log.error("round.store_error", error=f"{type(err).__name__}: {err}")

    async def _idle_delay(self) -> float:
        poll = self.settings.poll_interval.total_seconds()
        try:
            due_in = await self.store.due_in(self.clock())
        except Exception as err:
            if not _is_store_error(err):
                raise
            return poll  # the database went away after the round: the next round reports it
        return poll if due_in is None else min(poll, due_in)

    @property
    def in_flight(self) -> int:
        """Executions of the rounds under way (what `executor replicas` shows)."""
        return sum(len(ids) for ids in self._in_flight.values())

    async def release_in_flight(self) -> None:
        """After a cancelled round: hand its leases back so another replica need not wait the TTL."""
        while self._in_flight:
            token, ids = self._in_flight.popitem()
            with anyio.CancelScope(shield=True):
                await self.store.release_leases(token, ids)

    # -- one round ----------------------------------------------------------------------------

    async def run_round(self) -> RoundStats:
        """One whole round, claim to commit (the loop may overlap a commit with the next round)."""
        return await self._commit_timed(await self._claim_and_handle(), time.perf_counter())

    async def _claim_and_handle(self) -> _HandledRound:
        """Claim a batch, call the plugins, decide each next record: all but the commit."""
        self.rounds += 1
        number = self.rounds
        token = str(uuid.uuid4())
        if not self._quotas_registered:
            await self._quotas.register(self._resources.quotas)
            self._quotas_registered = True
        claimed = await self.store.claim(
            owner=self.settings.replica_id,
            token=token,
            limit=self.settings.batch_size,
            lease_ttl=self._lease_ttl,
            now=self.clock(),
        )
        self.last_round_at = self.clock()
        handled = _HandledRound(number, token, claimed)
        if not claimed:
            return handled
        self._in_flight[token] = [record.id for record in claimed]
        try:
            await self._handle_round(handled)
        except BaseException:
            await self._abandon(handled)
            raise
        return handled

    async def _commit_timed(self, handled: _HandledRound, started: float) -> RoundStats:
        """Commit a handled round and report it, timed from `started`; a failed or cancelled
        commit hands the round's leases back."""
        if not handled.claimed:
            stats = RoundStats(handled.number, 0, 0, 0, 0)
        else:
            try:
                stats = await self._commit(handled)
            except BaseException:
                await self._abandon(handled)
                raise
            finally:
                self._in_flight.pop(handled.token, None)
        self.observer.round_finished(stats, time.perf_counter() - started)
        return stats

    async def _abandon(self, handled: _HandledRound) -> None:
        """The round was cancelled (the shutdown grace ran out) or its commit failed (the database
        went away mid-round): nothing of it is visible. Hand the leases back if the database lets
        us, so that the executions run again at once, here or elsewhere, not after the TTL."""
        if self._in_flight.pop(handled.token, None) is not None:
            await self._release_quietly(handled.token, [record.id for record in handled.claimed])

    async def _release_quietly(self, token: str, ids: list[str]) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._handle_timeout):
            try:
                await self.store.release_leases(token, ids)
            except Exception as err:
                self._log.info("round.release_failed", error=f"{type(err).__name__}: {err}", leases=len(ids))

    async def _handle_round(self, handled: _HandledRound) -> None:
        # An attempt that ended earlier and still owes its clean-up gets that, not `handle`.
        handled.awaiting_cleanup = [record for record in handled.claimed if record.phase.is_terminal]
        active = [record for record in handled.claimed if not record.phase.is_terminal]
        plugins = self._plugins_of(handled.claimed)
        outcomes = await self._outcomes(handled.number, active, plugins)
        now = handled.now = self.clock()
        # Attempts that ended with a clean-up that runs nothing of the plugin's: recorded with
        # this commit instead of a second one (see `_trivial_cleanup`).
        cleanups = {task_type: _trivial_cleanup(plugin) for task_type, plugin in plugins.items()}
        for record, raw_outcome in zip(active, outcomes, strict=True):
            outcome = _scrub_outcome(raw_outcome)
            cleanup = cleanups[record.task_type]
            if cleanup is None:
                update = lifecycle.advance(record, outcome, now, self._policy)
            else:
                update, cleaned = lifecycle.advance_and_clean_up(record, outcome, now, self._policy, cleanup)
                if cleaned:
                    handled.settled.add(record.id)
            handled.updates.append(update)

    async def _commit(self, handled: _HandledRound) -> RoundStats:
        number, token, updates = handled.number, handled.token, handled.updates
        result = await self.store.commit_round(
            token, updates, now=handled.now, release_allocations_of=handled.settled
        )
        if result.lost:
            self._log.warning(
                "round.leases_lost", round=number, count=len(result.lost), ids=sorted(result.lost)
            )
        self._log_transitions(number, updates, result.committed)
        self._log_released(number, updates, result)

        ended = [
            u.record
            for u in updates
            if u.record.id in result.committed and u.record.phase.is_terminal and not u.record.finalized
        ]
        finalized = await self._cleanup(number, token, ended + handled.awaiting_cleanup)
        finalized += len(handled.settled & result.committed)
        claimed = len(handled.claimed)
        self._log.debug("round.committed", round=number, claimed=claimed, committed=len(result.committed))
        return RoundStats(number, claimed, len(result.committed), len(result.lost), finalized)

    def _plugins_of(self, records: list[ExecutionRecord]) -> dict[str, Plugin | None]:
        """The plugin of each task type in the round, resolved once per type, not per execution."""
        found: dict[str, Plugin | None] = {}
        for record in records:
            if record.task_type not in found:
                found[record.task_type] = self.plugins.for_task_type(record.task_type)
        return found

    async def _outcomes(
        self, number: int, records: list[ExecutionRecord], plugins: dict[str, Plugin | None]
    ) -> list[lifecycle.Outcome]:
        """What happened to each record this round, in order: decided without the plugin when it
        can be (an abort, an expiry, no plugin), else by `handle`, all of them at once.

        The calls share one deadline for the round (see `_handle_all`): an anyio task group with a
        timeout scope per execution cost more than the rest of a one-round task together. The
        deadline is the same for each, since they all start together; when a round holds more
        executions than may run at once, each waits its turn and has a deadline of its own.
        """
        outcomes: list[lifecycle.Outcome | None] = []
        calls: list[tuple[int, Plugin, TaskExecContext]] = []
        now = self.clock()
        for record in records:
            plugin = plugins[record.task_type]
            decided = self._decided_without_plugin(record, plugin, now)
            if decided is None and plugin is not None:
                calls.append((len(outcomes), plugin, self._context(record, plugin, number)))
            elif decided is not None:
                label = _OUTCOME_LABELS[type(decided)]
                self.observer.handle_finished(plugin.id if plugin is not None else "", label, 0.0)
            outcomes.append(decided)
        if calls:
            limit = self.settings.max_parallelism
            handled = await (self._handle_all(calls) if len(calls) <= limit else self._handle_limited(calls))
            for (index, _, _), outcome in zip(calls, handled, strict=True):
                outcomes[index] = outcome
        return [outcome for outcome in outcomes if outcome is not None]

    def _decided_without_plugin(
        self, record: ExecutionRecord, plugin: Plugin | None, now: float
    ) -> lifecycle.Outcome | None:
        if record.abort_requested:
            # The plugin's `abort` (when the attempt had started), then `finalize`, run in the clean-up.
            return lifecycle.AbortRequested(record.abort_reason or "Aborted")
        if record.deadline_at is not None or record.timeout is not None:  # most have neither
            lapsed = lifecycle.expired(record, now)
            if lapsed is not None:
                return lapsed  # not handled again: its clean-up stops whatever still runs
        if plugin is None:
            return lifecycle.NoPlugin(record.task_type, tuple(self.plugins.task_types))
        return None

    async def _handle_all(self, calls: list[tuple[int, Plugin, TaskExecContext]]) -> list[lifecycle.Outcome]:
        """Every `handle` at once, under one deadline for the round.

        Most handles return without ever suspending. Each call starts here, in the round's own
        task, and one that returns in its first step needs no task of its own (a task per call
        was the largest cost left of a one-round task). The first call that suspends goes on in
        this task, and each call after it starts in a task of its own, so all still run at once.
        A call that has suspended cannot move to another task: a cancel scope it entered belongs
        to the task that entered it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._handle_timeout
        outcomes: list[lifecycle.Outcome] = []
        for index, (_, plugin, tctx) in enumerate(calls):
            call = self._handle(plugin, tctx)
            try:
                awaited = call.send(None)
            except StopIteration as returned:
                outcomes.append(returned.value)
                continue
            rest = calls[index + 1 :]
            tasks = [loop.create_task(self._handle(plugin, tctx)) for _, plugin, tctx in rest]
            try:
                try:
                    async with asyncio.timeout_at(deadline):
                        outcomes.append(await _stepped(call, awaited))
                except TimeoutError:
                    outcomes.append(self._timed_out(plugin, tctx))
                outcomes += await self._settled(tasks, rest, deadline)
            except BaseException:
                # The round itself was cancelled (shutdown): its plugin calls go with it.
                await _cancel_and_wait(tasks)
                raise
            break
        return outcomes

    async def _settled(
        self,
        tasks: list[asyncio.Task[lifecycle.Outcome]],
        calls: list[tuple[int, Plugin, TaskExecContext]],
        deadline: float,
    ) -> list[lifecycle.Outcome]:
        """The outcomes of `tasks`; those still running at `deadline` are cancelled, timed out."""
        running = [task for task in tasks if not task.done()]
        late: set[asyncio.Task[lifecycle.Outcome]] = set()
        if running:
            timeout = max(deadline - asyncio.get_running_loop().time(), 0.0)
            _, late = await asyncio.wait(running, timeout=timeout)
        if late:
            await _cancel_and_wait(late)
        return [
            self._timed_out(plugin, tctx) if task in late else task.result()
            for task, (_, plugin, tctx) in zip(tasks, calls, strict=True)
        ]

    async def _handle_limited(
        self, calls: list[tuple[int, Plugin, TaskExecContext]]
    ) -> list[lifecycle.Outcome]:
        """At most EXECUTOR_MAX_PARALLELISM `handle` calls at once, each with its own deadline."""
        slots = asyncio.Semaphore(self.settings.max_parallelism)

        async def one(plugin: Plugin, tctx: TaskExecContext) -> lifecycle.Outcome:
            async with slots:
                try:
                    async with asyncio.timeout(self._handle_timeout):
                        return await self._handle(plugin, tctx)
                except TimeoutError:
                    return self._timed_out(plugin, tctx)

        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(one(plugin, tctx)) for _, plugin, tctx in calls]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            await _cancel_and_wait(tasks)
            raise

    async def _handle(self, plugin: Plugin, tctx: TaskExecContext) -> lifecycle.Outcome:
        """`handle`, and what it came to: a transition, or why it was not one."""
        started = time.perf_counter()
        try:
            done, returned = self._start_call(plugin, plugin.handle, tctx)
            if not done:
                returned = await returned
        except PluginStateError as err:
            outcome: lifecycle.Outcome = lifecycle.Rejected("PluginStateUnreadable", str(err))
        except Exception as err:
            # A TimeoutError of the plugin's own (a remote call that timed out) is a raise like any other.
            tctx.logger.warning("handle.raised", error=f"{type(err).__name__}: {err}", exc_info=True)
            outcome = lifecycle.SystemFault("HandleRaised", f"handle raised {type(err).__name__}: {err}")
        else:
            outcome = _handled(returned, tctx)
        seconds = time.perf_counter() - started
        self.observer.handle_finished(plugin.id, _OUTCOME_LABELS[type(outcome)], seconds)
        return outcome

    def _timed_out(self, plugin: Plugin, tctx: TaskExecContext) -> lifecycle.Outcome:
        self.observer.handle_finished(plugin.id, "system_fault", self._handle_timeout)
        return lifecycle.SystemFault(
            "HandleTimeout",
            f"handle did not return within {self._handle_timeout:g}s (EXECUTOR_HANDLE_TIMEOUT)",
        )

    async def _cleanup(self, number: int, token: str, records: list[ExecutionRecord]) -> int:
        """For each attempt that ended: the plugin's `abort` when owed, then `finalize`, then release
        the quota tokens it still holds; record the outcome (which starts the next attempt of a
        RETRYABLE_FAILURE). A step that raises is retried, with backoff, on a later round."""
        if not records:
            return 0
        done: list[RecordUpdate] = []
        completed: set[str] = set()
        to_run: list[tuple[ExecutionRecord, Plugin | None]] = []
        for record in records:
            plugin = self.plugins.for_task_type(record.task_type)
            trivial = _trivial_cleanup(plugin)
            if trivial is None:
                to_run.append((record, plugin))
            else:
                completed.add(record.id)
                done.append(lifecycle.cleaned_up(record, trivial, self.clock(), self._policy))
        limiter = self._limiter if len(to_run) > self.settings.max_parallelism else _UNLIMITED

        async def one(record: ExecutionRecord, plugin: Plugin | None) -> None:
            aborted, error = not record.abort_owed, None
            async with limiter:
                if plugin is not None:
                    tctx = self._context(record, plugin, number)
                    if record.abort_owed:
                        error = await self._cleanup_step(plugin, plugin.abort, tctx, "abort")
                        aborted = error is None
                    if error is None:
                        error = await self._cleanup_step(plugin, plugin.finalize, tctx, "finalize")
                if error is None:
                    completed.add(record.id)
            cleanup = lifecycle.Cleanup(aborted=aborted, finalized=error is None, error=error)
            done.append(lifecycle.cleaned_up(record, cleanup, self.clock(), self._policy))

        if to_run:
            async with anyio.create_task_group() as group:
                for record, plugin in to_run:
                    group.start_soon(one, record, plugin)
        # Quota tokens the plugin forgot are released with the commit that records the clean-up.
        result = await self.store.commit_round(
            token, done, now=self.clock(), release_allocations_of=completed
        )
        self._log_transitions(number, done, result.committed)
        self._log_released(number, done, result)
        return len(completed & result.committed)

    def _log_released(self, number: int, updates: list[RecordUpdate], result: CommitResult) -> None:
        """Name the executions whose plugin forgot quota tokens that the clean-up released."""
        if not result.released:
            return
        for update in updates:
            tokens = result.released.get(update.record.id)
            if tokens:
                record = update.record
                self._log.info(
                    "finalize.released_tokens",
                    execution_id=record.id,
                    task_type=record.task_type,
                    attempt=record.attempt,
                    round=number,
                    tokens=tokens,
                )

    async def _cleanup_step(
        self, plugin: Plugin, method: Callable[[Any], Awaitable[Any]], tctx: TaskExecContext, name: str
    ) -> str | None:
        """Run `abort` or `finalize`; None when it completed, else why not (secrets scrubbed)."""
        try:
            with anyio.fail_after(self._handle_timeout) as deadline:
                await self._call(plugin, method, tctx)
        except Exception as err:
            if isinstance(err, TimeoutError) and deadline.cancel_called:
                error = f"{name} did not return within {self._handle_timeout:g}s (EXECUTOR_HANDLE_TIMEOUT)"
            else:
                error = f"{name} raised {type(err).__name__}: {err}"
            tctx.logger.warning(f"{name}.failed", error=error)
            return str(REDACTOR.text(error))
        return None

    async def _call(
        self, plugin: Plugin, method: Callable[[Any], Awaitable[Any]], tctx: TaskExecContext
    ) -> Any:
        """Call a plugin method (see `_start_call`) and wait for what it returns."""
        done, returned = self._start_call(plugin, method, tctx)
        return returned if done else await returned

    def _start_call(
        self, plugin: Plugin, method: Callable[[Any], Awaitable[Any]], tctx: TaskExecContext
    ) -> tuple[bool, Any]:
        """Start a plugin call: (True, what it returned) when it ended in its first step, as most
        do, else (False, an awaitable of what it will return).

        A plugin that declares itself blocking runs on a worker thread with an event loop of its
        own. Any other runs its first step here, at once: a call that needs no second step needs
        no coroutine of the loop's either. Each step is timed, so that a plugin which blocks the
        loop anyway is named in a warning instead of silently slowing every execution.
        """
        if plugin.properties.blocking:

            def in_thread() -> Any:
                return asyncio.run(method(tctx))  # type: ignore[arg-type]

            return False, anyio.to_thread.run_sync(in_thread, abandon_on_cancel=True)
        coroutine = method(tctx)
        # `type(...) is` first: an ABC's isinstance costs about as much as a whole echo `handle`.
        if type(coroutine) is not types.CoroutineType and not isinstance(coroutine, Coroutine):
            return False, coroutine
        started = time.perf_counter()
        try:
            awaited = coroutine.send(None)
        except StopIteration as stop:
            return True, stop.value
        finally:
            elapsed = time.perf_counter() - started
            if elapsed > BLOCKING_STEP_SECONDS:
                self._blocked(plugin, tctx, elapsed)
        return False, _stepped(coroutine, awaited, functools.partial(self._blocked, plugin, tctx))

    def _blocked(self, plugin: Plugin, tctx: TaskExecContext, seconds: float) -> None:
        self.observer.loop_blocked(plugin.id, seconds)
        tctx.logger.warning(
            "plugin.blocked_event_loop",
            plugin=plugin.id,
            seconds=round(seconds, 3),
            hint="declare PluginProperties(blocking=True) or make the call non-blocking",
        )

    def _context(self, record: ExecutionRecord, plugin: Plugin, number: int) -> TaskExecContext:
        return TaskExecContext(
            record,
            properties=plugin.properties,
            max_state_bytes=self.settings.max_plugin_state_bytes,
            resource_manager=functools.partial(self._quotas.for_execution, record.id),
            secret_manager=self._secrets,
            output_model=self._output_model_for(record.task_type),
            max_payload_bytes=self.settings.max_payload_bytes,
            logger=functools.partial(self._execution_logger, record, number),
        )

    def _execution_logger(self, record: ExecutionRecord, number: int) -> Logger:
        """`tctx.logger`: made when a plugin first logs, its lines carrying the execution's ids."""
        bound: Logger = self._log.bind(
            execution_id=record.id, task_type=record.task_type, attempt=record.attempt, round=number
        )
        return bound

    def _log_transitions(self, number: int, updates: list[RecordUpdate], committed: frozenset[str]) -> None:
        enabled = getattr(self._log, "is_enabled_for", None)  # structlog's filtering loggers have it
        if enabled is not None and not enabled(logging.INFO):
            return  # a line per event, each built for nothing, was a tenth of a one-round task
        for update in updates:
            if not update.events or update.record.id not in committed:
                continue
            record = update.record
            for event in update.events:
                self._log.info(
                    "execution.phase",
                    execution_id=record.id,
                    task_type=record.task_type,
                    attempt=event.attempt,
                    round=number,
                    phase=event.phase.name,
                    phase_version=event.phase_version,
                    reason=event.reason,
                    error=event.error.message if event.error else None,
                )


@types.coroutine
def _stepped(
    coroutine: Coroutine[Any, Any, Any], awaited: Any, blocked: Callable[[float], None] | None = None
) -> Generator[Any, Any, Any]:
    """Go on driving `coroutine`, started by this task and suspended on `awaited`, as `await`
    would have: what the event loop sends or throws in reaches it. With `blocked`, each step is
    timed, and one that held the loop too long is reported to it."""
    while True:
        sent, thrown = None, None
        try:
            sent = yield awaited
        except BaseException as err:  # cancellation and timeouts must reach the plugin's code
            thrown = err
        started = time.perf_counter()
        try:
            awaited = coroutine.throw(thrown) if thrown is not None else coroutine.send(sent)
        except StopIteration as stop:
            return stop.value
        finally:
            elapsed = time.perf_counter() - started
            if blocked is not None and elapsed > BLOCKING_STEP_SECONDS:
                blocked(elapsed)


#: Stands in for the limiter when a round holds no more executions than may run at once.
_UNLIMITED = contextlib.nullcontext()


async def _cancel_and_wait(tasks: Collection[asyncio.Task[Any]]) -> None:
    """Cancel plugin calls and wait until they have stopped, whatever cancels the caller meanwhile:
    no call of a round may outlive it."""
    for task in tasks:
        task.cancel()
    with anyio.CancelScope(shield=True):
        await asyncio.wait(tasks)


def _handled(returned: object, tctx: TaskExecContext) -> lifecycle.Outcome:
    """What `handle` returned, checked: a malformed transition, or state or outputs that cannot be
    stored, fail this execution alone."""
    invalid = _transition_problem(returned)
    if invalid is not None:
        return lifecycle.Rejected("InvalidTransition", invalid)
    state = tctx.state_used
    for problem in (state.problem if state is not None else None, tctx.output_writer.problem):
        if problem is not None:
            return lifecycle.Rejected(*problem)
    assert isinstance(returned, Transition)  # checked by _transition_problem
    writer = tctx.output_writer
    change = state.change if state is not None else None
    return lifecycle.Handled(returned, change, writer.outputs, writer.outputs_json)


def _trivial_cleanup(plugin: Plugin | None) -> lifecycle.Cleanup | None:
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


def _transition_problem(returned: object) -> str | None:
    """What is wrong with what `handle` returned, or None.

    Checked here, field by field, because a malformed transition must fail its own execution:
    left to `lifecycle.advance` or to the commit, it would raise there and sink the whole round
    (and, after a restart, the round that claims it again).
    """
    if type(returned) is Transition:  # the usual answer, checked at once
        info = returned.phase_info
        requeue = returned.requeue_after
        if (
            type(info) is PhaseInfo
            and type(info.phase) is Phase
            and type(info.version) is int
            and (info.reason is None or type(info.reason) is str)
            and info.error is None
            and info.info is None
            and (requeue is None or type(requeue) is timedelta)
        ):
            return None
    if not isinstance(returned, Transition):
        return f"handle returned {_describe(returned)}, expected a Transition"
    info = returned.phase_info
    if not isinstance(info, PhaseInfo):
        return f"handle returned a Transition whose phase_info is {_describe(info)}, expected a PhaseInfo"
    if not isinstance(info.phase, Phase):
        return f"phase {info.phase!r} is not a Phase"
    if not isinstance(info.version, int) or isinstance(info.version, bool):
        return f"phase version {info.version!r} is not an int"
    if info.reason is not None and not isinstance(info.reason, str):
        return f"reason {info.reason!r} is not a str"
    if returned.requeue_after is not None and not isinstance(returned.requeue_after, timedelta):
        return (
            f"requeue_after {returned.requeue_after!r} is not a timedelta "
            "(do_transition(..., requeue_after=seconds) converts numbers)"
        )
    if info.error is not None and not isinstance(info.error, ExecutionError):
        return f"error is {_describe(info.error)}, expected an ExecutionError"
    if info.info is not None and not isinstance(info.info, TaskInfo):
        return f"info is {_describe(info.info)}, expected a TaskInfo"
    try:
        for part in (info.error, info.info):
            if part is not None:
                json.dumps(part.to_dict(), allow_nan=False)
    except (TypeError, ValueError, AttributeError) as err:
        return f"the phase info cannot be stored as JSON: {type(err).__name__}: {err}"
    return None


def _scrub_outcome(outcome: lifecycle.Outcome) -> lifecycle.Outcome:
    """The outcome with every secret a plugin read masked, before it can reach an event or a log."""
    if not REDACTOR:
        return outcome
    match outcome:
        case lifecycle.Handled(transition):
            info = transition.phase_info
            task_info = info.info
            if task_info is not None:
                task_info = replace(
                    task_info,
                    logs=tuple(
                        TaskLog(REDACTOR.text(log.name), REDACTOR.text(log.uri)) for log in task_info.logs
                    ),
                    external_resources=tuple(REDACTOR.text(r) for r in task_info.external_resources),
                    custom_info=REDACTOR.scrub(task_info.custom_info),
                )
            error = info.error
            if error is not None:
                error = replace(error, code=REDACTOR.text(error.code), message=REDACTOR.text(error.message))
            scrubbed = replace(
                info,
                reason=REDACTOR.text(info.reason) if info.reason is not None else None,
                error=error,
                info=task_info,
            )
            return replace(outcome, transition=replace(transition, phase_info=scrubbed))
        case lifecycle.SystemFault(_, message) | lifecycle.Rejected(_, message):
            return replace(outcome, message=REDACTOR.text(message))
        case _:
            return outcome


def _describe(value: object) -> str:
    if value is None:
        return "None"
    return f"a {type(value).__name__}"


def _backoff(failures: int, poll: float) -> float:
    """Exponential from 0.1 s, capped at the larger of the poll interval and 5 s, with jitter so
    that replicas which lost the database together do not all come back in the same instant."""
    return float(min(0.1 * 2**failures, max(poll, 5.0)) * random.uniform(0.5, 1.0))


def _is_store_error(err: BaseException) -> bool:
    """Errors of the database or its connection: the loop retries those instead of dying."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    if isinstance(err, BaseExceptionGroup):  # from store calls made inside a task group
        return all(_is_store_error(inner) for inner in err.exceptions)
    return isinstance(err, DBAPIError | OperationalError | OSError | ConnectionError)
