"""One round: claim -> outcomes -> lifecycle -> commit -> clean-up.

A round is a transaction: nothing a plugin returned is visible before the round commits, and a
crash before that simply runs the round again. The round only moves data: what each outcome means
is decided by `lifecycle.advance`, how plugins are called by the invoker, how the commit is written
by the committer.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from executor import lifecycle
from executor.core import Plugin
from executor.core.records import ExecutionRecord, RecordUpdate
from executor.plugin.registry import LoadedPlugins
from executor.plugin.resources import InProcessResourceManager
from executor.runtime.cleanup import Cleaner, CleanUps, trivial_cleanup
from executor.runtime.committer import Committer
from executor.runtime.context import Contexts
from executor.runtime.invoker import Call, Invoker
from executor.runtime.leases import InFlight
from executor.runtime.observer import RoundObserver, RoundStats
from executor.runtime.outcome import OUTCOME_LABELS, scrub_outcome
from executor.runtime.processes import ProcessPool
from executor.runtime.stragglers import CallKind, Straggler, Stragglers
from executor.settings import Settings
from executor.store import Store
from executor.store.quotas import SqlResourceManager
from executor.store.served import Served

#: Another replica silent for this many heartbeat intervals is taken for dead: the claim takes
#: its leases without waiting for them to expire. Two and a half: one lost beat is not death, and
#: a replica killed just after a beat has its work resumed within three intervals (the poll
#: interval included). Replicas must share `EXECUTOR_HEARTBEAT_INTERVAL` to judge each other.
DEAD_AFTER_HEARTBEATS = 2.5


@dataclass(slots=True)
class HandledRound:
    """A round whose plugins have run: what its commit writes, and what it must clean up after."""

    number: int
    token: str
    claimed: list[ExecutionRecord]
    awaiting_cleanup: list[ExecutionRecord] = field(default_factory=list)
    updates: list[RecordUpdate] = field(default_factory=list)
    #: Attempts whose clean-up runs nothing of the plugin's, recorded with this commit.
    settled: set[str] = field(default_factory=set)
    #: Executions whose call goes on after this round: they keep its lease past its commit.
    kept: set[str] = field(default_factory=set)
    #: Outcomes of calls of earlier rounds that finished since, folded into this round's commit:
    #: execution id -> the lease token its row holds (that round's). One commit, not one each.
    held: dict[str, str] = field(default_factory=dict)
    #: Of those, the executions whose clean-up finished: recorded as they are, not cleaned again.
    late_cleaned: set[str] = field(default_factory=set)
    now: float = 0.0


class RoundRunner:
    """Runs rounds, in two halves the loop may overlap: `claim_and_handle`, then `finish`."""

    def __init__(
        self,
        store: Store,
        plugins: LoadedPlugins,
        settings: Settings,
        *,
        resources: InProcessResourceManager,
        leases: InFlight,
        stragglers: Stragglers,
        processes: ProcessPool,
        clock: Callable[[], float],
        observer: RoundObserver,
        log: Any,
    ) -> None:
        self._store = store
        self._plugins = plugins
        self._settings = settings
        self._clock = clock
        self._log = log
        self._leases = leases
        self._stragglers = stragglers
        self._budget = settings.round_budget.total_seconds()
        self.rounds = 0
        self.last_round_at: float | None = None
        self._policy = lifecycle.Policy(
            max_system_failures=settings.max_system_failures,
            backoff_base=settings.retry_backoff_base.total_seconds(),
            backoff_max=settings.retry_backoff_max.total_seconds(),
            default_requeue=settings.default_requeue.total_seconds(),
            max_phase_versions=settings.max_phase_versions,
        )
        #: What this replica may claim: its queues and its host (EXECUTOR_QUEUES, EXECUTOR_HOST).
        self.served = Served(settings.queues, settings.host)
        self._lease_ttl = settings.lease_ttl.total_seconds()
        self._dead_after = DEAD_AFTER_HEARTBEATS * settings.heartbeat_interval.total_seconds()
        # What plugins registered at set-up; the quotas themselves are kept in the store.
        self._resources = resources
        self._quotas = SqlResourceManager(store)
        self._quotas_registered = False
        self._contexts = Contexts(settings, plugins, self._quotas, log)
        self._invoker = Invoker(
            handle_timeout=settings.handle_timeout.total_seconds(),
            max_parallelism=settings.max_parallelism,
            observer=observer,
            processes=processes,
            blocking_threads=settings.blocking_threads,
        )
        self._cleaner = Cleaner(
            plugins,
            self._invoker,
            self._contexts,
            clock=clock,
            policy=self._policy,
            max_parallelism=settings.max_parallelism,
        )
        self._committer = Committer(store, log)
        self._observer = observer

    @property
    def observer(self) -> RoundObserver:
        return self._observer

    @observer.setter
    def observer(self, observer: RoundObserver) -> None:
        self._observer = self._invoker.observer = observer

    async def claim_and_handle(self) -> HandledRound:
        """Claim a batch, call the plugins, decide each next record: all but the commit."""
        self.rounds += 1
        number = self.rounds
        token = str(uuid.uuid4())
        if not self._quotas_registered:
            await self._quotas.register(self._resources.quotas)
            self._quotas_registered = True
        claimed = await self._store.claim(
            owner=self._settings.replica_id,
            token=token,
            limit=self._settings.batch_size,
            lease_ttl=self._lease_ttl,
            now=self._clock(),
            dead_after=self._dead_after,
            served=self.served,
        )
        self.last_round_at = self._clock()
        handled = HandledRound(number, token, claimed)
        if not claimed:
            return handled
        self._leases.hold(token, [record.id for record in claimed])
        try:
            await self._handle_round(handled)
        except BaseException:
            await self.abandon(handled)
            raise
        return handled

    async def finish(self, handled: HandledRound, started: float) -> RoundStats:
        """Commit a handled round, clean up after it and report it, timed from `started`; a failed
        or cancelled commit hands the round's leases back."""
        if not handled.claimed:
            stats = RoundStats(handled.number, 0, 0, 0, 0)
        else:
            self._fold_late(handled)
            committed = False
            try:
                stats = await self._commit(handled)
                committed = True
            except BaseException:
                await self.abandon(handled)
                raise
            finally:
                if committed:
                    self._leases.move(handled.token, handled.held)
                else:  # their outcomes are gone with the commit: the leases lapse, the calls run again
                    for execution_id, token in handled.held.items():
                        self._leases.forget(token, (execution_id,))
                self._leases.drop(handled.token, keep=handled.kept)
        self._observer.round_finished(stats, time.perf_counter() - started)
        return stats

    def _fold_late(self, handled: HandledRound) -> None:
        """Take the outcomes of the calls that finished since the last commit into this round's:
        each row fenced by its own round's lease, as `commit_late` would have, but in one
        transaction with the round instead of one more per earlier round. With 1% of calls slow,
        every round had two or three such commits of its own, a third of its time on SQLite."""
        late = self._stragglers.take_finished()
        if not late:
            return
        for straggler in late:
            handled.held[straggler.record.id] = straggler.token
        handles = [(s.record, s.call.outcome) for s in late if s.kind is CallKind.HANDLE]
        if handles:
            self._advance(handled, handles)
        cleanups = [s for s in late if s.kind is CallKind.CLEAN_UP]
        if cleanups:
            done = CleanUps()
            for straggler in cleanups:
                done.add(straggler.record.id, *straggler.call.outcome)
            handled.updates.extend(done.updates)
            handled.late_cleaned.update(s.record.id for s in cleanups)
            handled.settled |= done.completed

    async def abandon(self, handled: HandledRound) -> None:
        """The round was cancelled (the shutdown grace ran out) or its commit failed (the database
        went away mid-round): nothing of it is visible. Hand the leases back if the database lets
        us, so that the executions run again at once, here or elsewhere, not after the TTL."""
        await self._leases.abandon(handled.token)

    async def _handle_round(self, handled: HandledRound) -> None:
        # An attempt that ended earlier and still owes its clean-up gets that, not `handle`.
        handled.awaiting_cleanup = [record for record in handled.claimed if record.phase.is_terminal]
        active = [record for record in handled.claimed if not record.phase.is_terminal]
        plugins = self._plugins_of(handled.claimed)
        outcomes = await self._outcomes(handled, active, plugins)
        handled.now = self._clock()
        self._advance(handled, list(zip(active, outcomes, strict=True)))

    def _advance(
        self, handled: HandledRound, outcomes: list[tuple[ExecutionRecord, lifecycle.Outcome | None]]
    ) -> None:
        """Each finished outcome's next record, into the round's updates."""
        now = handled.now
        # Attempts that ended with a clean-up that runs nothing of the plugin's: recorded with
        # this commit instead of a second one (see `trivial_cleanup`).
        cleanups: dict[str, lifecycle.Cleanup | None] = {}
        for record, raw_outcome in outcomes:
            if raw_outcome is None:
                continue  # its call goes on: a later commit takes its outcome
            if record.task_type not in cleanups:
                cleanups[record.task_type] = trivial_cleanup(self._plugins.for_task_type(record.task_type))
            outcome = scrub_outcome(raw_outcome)
            cleanup = cleanups[record.task_type]
            if cleanup is None:
                update = lifecycle.advance(record, outcome, now, self._policy)
            else:
                update, cleaned = lifecycle.advance_and_clean_up(record, outcome, now, self._policy, cleanup)
                if cleaned:
                    handled.settled.add(record.id)
            handled.updates.append(update)

    def _plugins_of(self, records: list[ExecutionRecord]) -> dict[str, Plugin | None]:
        """The plugin of each task type in the round, resolved once per type, not per execution."""
        found: dict[str, Plugin | None] = {}
        for record in records:
            if record.task_type not in found:
                found[record.task_type] = self._plugins.for_task_type(record.task_type)
        return found

    async def _outcomes(
        self, handled: HandledRound, records: list[ExecutionRecord], plugins: dict[str, Plugin | None]
    ) -> list[lifecycle.Outcome | None]:
        """What happened to each record this round, in order: decided without the plugin when it
        can be (an abort, an expiry, no plugin), else by `handle`, all of them at once. None for a
        call still running when the round's budget ran out: it goes on among the stragglers."""
        outcomes: list[lifecycle.Outcome | None] = []
        calls: list[Call] = []
        now = self._clock()
        number = handled.number
        for record in records:
            plugin = plugins[record.task_type]
            decided = self._decided_without_plugin(record, plugin, now)
            if decided is None and plugin is not None:
                calls.append(Call(len(outcomes), plugin, self._contexts.build(record, plugin, number)))
            elif decided is not None:
                label = OUTCOME_LABELS[type(decided)]
                self._observer.handle_finished(plugin.id if plugin is not None else "", label, 0.0)
            outcomes.append(decided)
        if calls:
            carrier = await self._invoker.handle(calls, self._budget)
            pending = []
            for call in calls:
                outcomes[call.index] = call.outcome
                if call.outcome is None:
                    pending.append((call, records[call.index]))
            if pending:
                handled.kept.update(record.id for _, record in pending)
                self._stragglers.keep(handled.number, handled.token, CallKind.HANDLE, pending, carrier)
        return outcomes

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
            return lifecycle.NoPlugin(record.task_type, tuple(self._plugins.task_types))
        return None

    async def _commit(self, handled: HandledRound) -> RoundStats:
        number, token, updates = handled.number, handled.token, handled.updates
        result = await self._committer.write(
            number,
            token,
            updates,
            now=handled.now,
            release_allocations_of=handled.settled,
            warn_lost=True,
            held=handled.held,
        )
        ended = [
            u.record
            for u in updates
            if u.record.id in result.committed
            and u.record.phase.is_terminal
            and not u.record.finalized
            and u.record.id not in handled.late_cleaned
        ]
        finalized = await self._clean_up(handled, ended + handled.awaiting_cleanup)
        finalized += len(handled.settled & result.committed)
        claimed = len(handled.claimed)
        self._log.debug("round.committed", round=number, claimed=claimed, committed=len(result.committed))
        return RoundStats(number, claimed, len(result.committed), len(result.lost), finalized)

    async def _clean_up(self, handled: HandledRound, records: list[ExecutionRecord]) -> int:
        """Clean up after each attempt that ended, and record that with a commit of its own. Quota
        tokens the plugin forgot are released with the commit that records the clean-up. Clean-ups
        still running after the budget go on among the stragglers, keeping the round's lease."""
        if not records:
            return 0
        number, token = handled.number, handled.token
        cleanups = await self._cleaner.clean_up(number, records, self._budget)
        if cleanups.pending:
            handled.kept.update(record.id for _, record in cleanups.pending)
            self._stragglers.keep(number, token, CallKind.CLEAN_UP, cleanups.pending)
        if not cleanups.updates:
            return 0
        result = await self._committer.write(
            number, token, cleanups.updates, now=self._clock(), release_allocations_of=cleanups.completed
        )
        return len(cleanups.completed & result.committed)

    # -- the calls that outlived their round ----------------------------------------------------

    async def commit_late(self) -> RoundStats | None:
        """Commit the outcomes of the calls that finished since the last commit, each under the
        lease of the round that started it: a handle's outcome as that round would have (clean-up
        included), a clean-up's record as is."""
        finished = self._stragglers.take_finished()
        if not finished:
            return None
        started = time.perf_counter()
        by_token: dict[str, list[Straggler]] = {}
        for straggler in finished:
            by_token.setdefault(straggler.token, []).append(straggler)
        committed = lost = finalized = 0
        for token, stragglers in by_token.items():
            stats = await self._commit_late(token, stragglers)
            committed += stats.committed
            lost += stats.lost
            finalized += stats.finalized
        stats = RoundStats(self.rounds, 0, committed, lost, finalized)
        self._observer.round_finished(stats, time.perf_counter() - started)
        return stats

    async def _commit_late(self, token: str, stragglers: list[Straggler]) -> RoundStats:
        number = stragglers[0].number
        handles = [s for s in stragglers if s.kind is CallKind.HANDLE]
        ids = [s.record.id for s in stragglers]
        committed = lost = finalized = 0
        try:
            if handles:
                handled = HandledRound(number, token, [s.record for s in handles], now=self._clock())
                self._advance(handled, [(s.record, s.call.outcome) for s in handles])
                stats = await self._commit(handled)
                committed, lost, finalized = stats.committed, stats.lost, stats.finalized
                ids = [i for i in ids if i not in handled.kept]
            cleanups = [s for s in stragglers if s.kind is CallKind.CLEAN_UP]
            if cleanups:
                done = CleanUps()
                for straggler in cleanups:
                    done.add(straggler.record.id, *straggler.call.outcome)
                result = await self._committer.write(
                    number, token, done.updates, now=self._clock(), release_allocations_of=done.completed
                )
                committed += len(result.committed)
                lost += len(result.lost)
                finalized += len(done.completed & result.committed)
        finally:
            self._leases.forget(token, ids)
        return RoundStats(number, 0, committed, lost, finalized)
