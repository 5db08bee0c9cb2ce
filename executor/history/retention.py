"""Retention: finished executions deleted once they are older than their phase's retention.

Each final phase has its own period (`EXECUTOR_RETAIN_SUCCESS`, `_FAILED`, `_ABORTED`; unset or 0
keeps that phase forever). Every daemon runs a `Pruner`, but on PostgreSQL only the one holding the
pruning lock works at a time (`HistoryQueries.prune_lease`); the others find it taken and wait for
their next interval. A pass deletes in batches of `EXECUTOR_PRUNE_BATCH`, each its own short
transaction, and rests between two batches nine times as long as the last one took: pruning holds
the store (SQLite's one write lock, above all) at most a tenth of the time, and rounds are never
queued behind a long transaction. Bench scenario 11 measures what that costs the rounds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import anyio

from executor.core import Phase
from executor.logging import get_logger
from executor.settings import Settings
from executor.store import Store, StoreUnavailable
from executor.store.history import HistoryQueries

#: The final phases, by the name their setting and the CLI's `--phase` use.
PHASE_SETTINGS = {
    Phase.SUCCESS: "retain_success",
    Phase.PERMANENT_FAILURE: "retain_failed",
    Phase.ABORTED: "retain_aborted",
}

#: The share of the time a pass may spend deleting: it rests (1 - DUTY) / DUTY times as long as
#: each batch took. At a half, the rounds on SQLite ran at about 0.55 of their pace (bench 11).
DUTY = 0.1
#: Longest rest between two batches.
MAX_PAUSE = 5.0


def retention_of(settings: Settings) -> dict[Phase, float]:
    """Seconds each final phase is kept after it finished; a phase kept forever is absent."""
    kept: dict[Phase, float] = {}
    for phase, name in PHASE_SETTINGS.items():
        period = getattr(settings, name)
        if period is not None and period.total_seconds() > 0:
            kept[phase] = period.total_seconds()
    return kept


@dataclass
class PruneReport:
    """What a pass deleted (or, dry, would delete), per phase; `busy`: another replica was pruning."""

    deleted: dict[Phase, int] = field(default_factory=dict)
    busy: bool = False

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


async def prune(
    store: Store,
    cutoffs: Mapping[Phase, float],
    *,
    batch: int,
    dry_run: bool = False,
    rest: bool = True,
    report: PruneReport | None = None,
) -> PruneReport:
    """Delete the executions of each phase in `cutoffs` that finished before its cutoff (seconds
    since the epoch), a batch per transaction; with `dry_run`, count them instead. `report`, when
    given, is filled batch by batch (a pass cancelled midway still says what it deleted)."""
    history = HistoryQueries(store)
    report = report if report is not None else PruneReport()
    if dry_run:
        for phase, cutoff in cutoffs.items():
            report.deleted[phase] = await history.count_prunable(phase, cutoff)
        return report
    async with history.prune_lease() as held:
        if not held:
            report.busy = True
            return report
        for phase, cutoff in cutoffs.items():
            report.deleted.setdefault(phase, 0)
            while True:
                started = time.monotonic()
                deleted = len(await history.prune_batch(phase, cutoff, batch))
                report.deleted[phase] += deleted
                if deleted < batch:
                    break
                if rest:
                    took = time.monotonic() - started
                    await anyio.sleep(min(took * (1 - DUTY) / DUTY, MAX_PAUSE))
    return report


class Pruner:
    """The daemon's part that applies the retention settings, every `EXECUTOR_PRUNE_INTERVAL`."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.retention = retention_of(settings)
        self.interval = settings.prune_interval.total_seconds()
        self.batch = settings.prune_batch
        self.log = get_logger(replica=settings.replica_id)
        #: Executions deleted by this replica since it started.
        self.deleted = 0

    async def run(self) -> None:
        """Prune, then wait an interval, until cancelled; does nothing when every phase is kept."""
        if not self.retention:
            return
        while True:
            await self.prune_once()
            await anyio.sleep(self.interval)

    async def prune_once(self) -> PruneReport | None:
        """One pass; None when the database did not answer (logged; the next interval tries again)."""
        now = time.time()
        cutoffs = {phase: now - seconds for phase, seconds in self.retention.items()}
        try:
            report = await prune(self.store, cutoffs, batch=self.batch)
        except StoreUnavailable as err:
            self.log.warning("prune.failed", error=str(err))
            return None
        self.deleted += report.total
        if report.total:
            self.log.info("prune.done", deleted={phase.name: n for phase, n in report.deleted.items() if n})
        return report
