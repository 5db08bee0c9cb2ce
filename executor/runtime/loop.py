"""The reconciliation loop: round after round until stopped, idle between rounds until something is
due or a wake-up comes, backing off while the database is away.

`Reconciler` is the runtime's one entry point; a round itself is `round.py`'s, its plugin calls the
invoker's, its commits the committer's.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import anyio

from executor.logging import get_logger
from executor.plugin.registry import LoadedPlugins
from executor.plugin.resources import InProcessResourceManager
from executor.runtime.committer import CommitPipeline
from executor.runtime.leases import InFlight
from executor.runtime.observer import NullObserver, RoundObserver, RoundStats
from executor.runtime.processes import ProcessPool
from executor.runtime.round import HandledRound, RoundRunner
from executor.runtime.stragglers import Stragglers
from executor.settings import Settings
from executor.store import Store
from executor.store.errors import is_unavailable

Clock = Callable[[], float]


class Wakeup:
    """Wakes the sleeping loop early; many wake-ups while it is busy coalesce into one."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    def take(self) -> bool:
        """True, and cleared, when a wake-up came already (during the round that just ended)."""
        if not self._event.is_set():
            return False
        self._event = anyio.Event()
        return True

    async def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when woken. Clears the wake-up either way."""
        woken = False
        with anyio.move_on_after(max(seconds, 0.0)):
            await self._event.wait()
            woken = True
        if self._event.is_set():
            self._event = anyio.Event()
        return woken


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
        self._stopping = False
        self._log = get_logger(replica=settings.replica_id)
        self._observer: RoundObserver = observer or NullObserver()
        self._leases = InFlight(store, release_timeout=settings.handle_timeout.total_seconds(), log=self._log)
        self._stragglers = Stragglers(self.wakeup.set)
        #: The worker processes of `cpu_bound` plugins: none until a call needs one; ended by `run`.
        self._processes = ProcessPool(settings)
        self._rounds = RoundRunner(
            store,
            plugins,
            settings,
            resources=resource_manager or InProcessResourceManager(settings.resource_quotas),
            leases=self._leases,
            stragglers=self._stragglers,
            processes=self._processes,
            clock=clock,
            observer=self._observer,
            log=self._log,
        )
        self._commits = CommitPipeline(store, batch_size=settings.batch_size, log=self._log)

    @property
    def observer(self) -> RoundObserver:
        return self._observer

    @observer.setter
    def observer(self, observer: RoundObserver) -> None:
        self._observer = self._rounds.observer = observer

    @property
    def rounds(self) -> int:
        """Rounds started so far (what `executor replicas` shows)."""
        return self._rounds.rounds

    @property
    def last_round_at(self) -> float | None:
        """When the latest round claimed, on the loop's clock."""
        return self._rounds.last_round_at

    # -- the loop -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the round under way, then return from `run`."""
        self._stopping = True
        self.wakeup.set()

    async def run(self) -> None:
        """Round after round until `stop`; on PostgreSQL a full round commits while the next one
        claims (see `CommitPipeline`). Calls that outlive their round go on meanwhile (their leases
        renewed), and each commit of the loop's takes the outcomes they came to. After `stop`, the
        loop waits for those calls, for as long as the daemon's grace lets it. The worker
        processes of `cpu_bound` plugins end with the loop."""
        try:
            async with anyio.create_task_group() as background:
                background.start_soon(self._renew_leases)
                try:
                    await self._rounds_until_stopped()
                    await self._drain()
                except BaseException:
                    # Cancelled (the shutdown grace ran out): the calls still running go too; their
                    # leases are handed back by `release_in_flight`.
                    with anyio.CancelScope(shield=True):
                        await self._stragglers.cancel_all()
                    raise
                finally:
                    background.cancel_scope.cancel()
        finally:
            await self._processes.close()

    async def _rounds_until_stopped(self) -> None:
        failures = 0
        try:
            while not self._stopping:
                handled: HandledRound | None = None
                try:
                    started = time.perf_counter()
                    handled = await self._rounds.claim_and_handle()
                    # The previous round's commit: its error, if any, is this one's (which hands
                    # this round's leases back below).
                    await self._commits.previous()
                    claimed = len(handled.claimed)
                    if not claimed:
                        # Else the round's commit takes the calls that finished late (`finish`).
                        await self._rounds.commit_late()
                    if self._commits.may_overlap(claimed) and not self._stopping:
                        # More is likely due: claim it while this round commits.
                        self._commits.start(self._rounds.finish(handled, started))
                    else:
                        await self._rounds.finish(handled, started)
                    if failures:
                        self._log.info("database.reconnected", failed_rounds=failures)
                    failures = 0
                except Exception as err:
                    if handled is not None:
                        await self._rounds.abandon(handled)  # when its commit never started
                    failures += 1
                    await self._store_failed(err, failures)
                    continue
                if claimed >= self.settings.batch_size or self._stopping:
                    continue  # more may be due right now
                # Woken during the round (a submission committed meanwhile): claim again at once,
                # without first asking the store when the next execution is due.
                if self.wakeup.take() or await self.wakeup.wait(await self._idle_delay()):
                    self._observer.woken()
        except BaseException:
            # Cancelled (the shutdown grace ran out): the round still committing goes too, and
            # hands its leases back.
            await self._commits.cancel()
            raise
        await self._commits.finish()

    async def _drain(self) -> None:
        """After `stop`: commit what the calls still running come to, as they finish."""
        if self._stragglers.waiting:
            self._log.info("loop.waiting_for_calls", calls=self._stragglers.pending)
        failures = 0
        while self._stragglers.waiting:
            try:
                await self._rounds.commit_late()
                failures = 0
            except Exception as err:
                failures += 1
                await self._store_failed(err, failures)
                continue
            if self._stragglers.pending:
                await self.wakeup.wait(self.settings.poll_interval.total_seconds())

    async def _store_failed(self, err: Exception, failures: int) -> None:
        """A store error: report it and back off; any other error is a bug, raised."""
        if not is_unavailable(err):
            raise err
        self._observer.store_error()
        delay = _backoff(failures, self.settings.poll_interval.total_seconds())
        self._log.error(
            "round.store_error",
            error=f"{type(err).__name__}: {err}",
            retry_in=round(delay, 3),
            attempt=failures,
        )
        await self.wakeup.wait(delay)

    async def _renew_leases(self) -> None:
        """Extend every lease this replica holds, in one statement per tick, well before it
        expires; a call whose lease was lost meanwhile is cancelled and its outcome dropped."""
        interval = self.settings.effective_lease_renew_interval.total_seconds()
        ttl = self.settings.lease_ttl.total_seconds()
        while True:
            await anyio.sleep(interval)
            held = self._leases.held()
            if not held:
                continue
            try:
                renewed = await self.store.renew_leases(held, lease_ttl=ttl)
            except Exception as err:
                if not is_unavailable(err):
                    raise
                self._log.warning("lease.renew_failed", error=f"{type(err).__name__}: {err}")
                continue
            for token, ids in held.items():
                lost = [i for i in ids if i not in renewed and self._leases.holds(token, i)]
                if lost:
                    self._log.warning("lease.lost", count=len(lost), ids=sorted(lost))
                    self._stragglers.drop(lost)
                    self._leases.forget(token, lost)

    async def _idle_delay(self) -> float:
        poll = self.settings.poll_interval.total_seconds()
        try:
            due_in = await self.store.due_in(self.clock())
        except Exception as err:
            if not is_unavailable(err):
                raise
            return poll  # the database went away after the round: the next round reports it
        return poll if due_in is None else min(poll, due_in)

    @property
    def in_flight(self) -> int:
        """Executions this replica holds: of the rounds under way, and of the calls that outlived
        their round (what `executor replicas` shows)."""
        return self._leases.count

    def calls_in_flight(self) -> dict[str, tuple[int, float]]:
        """Per plugin, the calls that outlived their round: how many, and the oldest's age (s)."""
        return self._stragglers.by_plugin()

    async def release_in_flight(self) -> None:
        """After a cancelled round: hand its leases back so another replica need not wait the TTL."""
        await self._leases.release_all()

    # -- one round ----------------------------------------------------------------------------

    async def run_round(self) -> RoundStats:
        """One whole round, claim to commit, its slow calls included: what the loop does in one
        turn, except that the calls that outlive the round's budget are waited for and their
        outcomes committed before it returns (tests and tools step the loop with it)."""
        stats = await self._rounds.finish(await self._rounds.claim_and_handle(), time.perf_counter())
        while self._stragglers.waiting:
            await self._stragglers.settled()
            late = await self._rounds.commit_late()
            if late is not None:
                stats = RoundStats(
                    stats.number,
                    stats.claimed,
                    stats.committed + late.committed,
                    stats.lost + late.lost,
                    stats.finalized + late.finalized,
                )
        return stats


def _backoff(failures: int, poll: float) -> float:
    """Exponential from 0.1 s, capped at the larger of the poll interval and 5 s, with jitter so
    that replicas which lost the database together do not all come back in the same instant."""
    return float(min(0.1 * 2**failures, max(poll, 5.0)) * random.uniform(0.5, 1.0))
