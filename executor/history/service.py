"""Requeue, failures and pruning for every door: the CLI, the Python API and HTTP call these, so
they refuse the same filters with the same words (`SubmissionError`, naming the field) and answer
alike.

    history = History(client)
    result = await history.retry(execution_id, by="alice")
    bulk = await history.retry_many(history.selection(phases=["ABORTED"], labels={"team": "a"}))
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from executor.client import Client, SubmissionError
from executor.core import Phase
from executor.core.records import ExecutionRecord
from executor.history.requeue import REQUEUEABLE, refusal, requeued
from executor.history.retention import PruneReport, prune
from executor.limits import MAX_DURATION_SECONDS, MAX_REASON, name_problem, time_problem
from executor.store.filters import ExecutionFilter
from executor.store.history import FailureCount, HistoryQueries

#: Executions read per page of a bulk requeue (each then requeued in a transaction of its own).
PAGE = 500
#: Executions a failures listing may return at once.
MAX_LIMIT = 500


class RetryOutcome(enum.Enum):
    REQUEUED = "requeued"
    REFUSED = "refused"
    NOT_FOUND = "not_found"


@dataclass(frozen=True, slots=True)
class RetryResult:
    id: str
    outcome: RetryOutcome
    message: str
    #: The record as it stands after the request (None when there is none).
    record: ExecutionRecord | None = None


@dataclass
class BulkRetry:
    """What a bulk requeue matched and did (`dry_run`: would do)."""

    dry_run: bool
    matched: int = 0
    requeued: int = 0
    #: Executions matched but left as they are, by id, with the reason.
    refused: dict[str, str] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Failures:
    counts: list[FailureCount]
    executions: list[ExecutionRecord]


def phase_named(name: str | Phase) -> Phase:
    """A phase by its name (any case, `-` for `_`), refused naming the phases there are."""
    if isinstance(name, Phase):
        return name
    try:
        return Phase[name.strip().upper().replace("-", "_")]
    except (KeyError, AttributeError):
        phases = ", ".join(p.name for p in Phase)
        raise SubmissionError(f"unknown phase {name!r}; phases: {phases}", "phase") from None


class History:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.store = client.store
        self.queries = HistoryQueries(client.store)

    # -- the filter every door builds ----------------------------------------------------------

    def selection(
        self,
        *,
        phases: Iterable[str | Phase] = (),
        task_type: str | None = None,
        labels: Mapping[str, str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        error_code: str | None = None,
        reason: str | None = None,
    ) -> ExecutionFilter:
        """The filter these options describe, refused (`SubmissionError`) when no execution could
        match it: unknown phases, text no column holds, times no calendar holds."""
        chosen = tuple(dict.fromkeys(phase_named(p) for p in phases))
        for name, value in (("task_type", task_type), ("error_code", error_code)):
            if value is not None:
                _check_text(name, value)
        if reason is not None:
            _check_text("reason", reason, MAX_REASON)
        checked = self.client.checked_labels(labels)
        after, before = _time("since", since), _time("until", until)
        if after is not None and before is not None and after >= before:
            raise SubmissionError("since must be earlier than until", "since")
        return ExecutionFilter(chosen, task_type, checked, after, before, error_code, reason)

    # -- requeue -------------------------------------------------------------------------------

    async def retry(self, execution_id: str, *, by: str) -> RetryResult:
        """Run an execution that ended PERMANENT_FAILURE or ABORTED again, as a new attempt of
        the same execution; refused, with the reason, for one that is running or succeeded."""
        _check_text("by", by)
        record = await self.client.get(execution_id)
        if record is None:
            return RetryResult(execution_id, RetryOutcome.NOT_FOUND, f"no execution with id {execution_id}")
        problem = refusal(record)
        if problem is not None:
            return RetryResult(execution_id, RetryOutcome.REFUSED, f"not retried: {problem}", record)
        after, event = requeued(record, time.time(), by)
        if not await self.queries.write_requeue(record, after, event):
            current = await self.client.get(execution_id)
            message = "not retried: it changed meanwhile (retried or pruned by someone else)"
            return RetryResult(execution_id, RetryOutcome.REFUSED, message, current)
        return RetryResult(
            execution_id,
            RetryOutcome.REQUEUED,
            f"requeued as attempt {after.attempt}; the daemon runs it in its next round",
            await self.client.get(execution_id),
        )

    async def retry_many(self, selection: ExecutionFilter, *, by: str, dry_run: bool = False) -> BulkRetry:
        """Requeue every execution `selection` matches (PERMANENT_FAILURE and ABORTED ones only:
        asking for other phases is refused); with `dry_run`, count them and list their ids."""
        _check_text("by", by)
        if not selection.phases:
            selection = replace(selection, phases=tuple(sorted(REQUEUEABLE)))
        others = [p.name for p in selection.phases if p not in REQUEUEABLE]
        if others:
            raise SubmissionError(
                f"only PERMANENT_FAILURE or ABORTED executions are retried, not {', '.join(others)}", "phase"
            )
        result = BulkRetry(dry_run=dry_run)
        after: tuple[float, str] | None = None
        while True:
            page = await self.queries.ids(selection, limit=PAGE, after=after)
            if not page:
                return result
            after = page[-1]
            result.matched += len(page)
            for _, execution_id in page:
                if dry_run:
                    result.ids.append(execution_id)
                    continue
                outcome = await self.retry(execution_id, by=by)
                if outcome.outcome is RetryOutcome.REQUEUED:
                    result.requeued += 1
                    result.ids.append(execution_id)
                else:
                    result.refused[execution_id] = outcome.message

    # -- the failures view -----------------------------------------------------------------------

    async def failures(self, selection: ExecutionFilter, *, limit: int = 50) -> Failures:
        """Executions that ended PERMANENT_FAILURE or ABORTED (or the failed phases asked for),
        newest first, with how many there are per phase and error code."""
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
            raise SubmissionError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}", "limit")
        if not selection.phases:
            selection = replace(selection, phases=tuple(sorted(REQUEUEABLE)))
        counts = await self.queries.failure_counts(selection)
        return Failures(counts, await self.queries.matching(selection, limit=limit))

    # -- pruning by hand -------------------------------------------------------------------------

    async def prune(
        self,
        cutoffs: Mapping[Phase, float],
        *,
        batch: int,
        dry_run: bool = False,
    ) -> PruneReport:
        """Delete (or count, `dry_run`) finished executions older than each phase's cutoff."""
        for phase in cutoffs:
            if not phase.is_final:
                raise SubmissionError(
                    f"{phase.name} is not a final phase: only finished ones are pruned", "phase"
                )
        return await prune(self.store, cutoffs, batch=batch, dry_run=dry_run, rest=False)


def older_than_cutoffs(seconds: float, phases: Iterable[Phase], now: float) -> dict[Phase, float]:
    """Cutoffs for `executor prune --older-than`: every phase given, all final ones by default."""
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_DURATION_SECONDS:
        raise SubmissionError("older_than must be a duration of at most 100 years", "older_than")
    chosen = list(phases) or [Phase.SUCCESS, Phase.PERMANENT_FAILURE, Phase.ABORTED]
    return {phase: now - seconds for phase in chosen}


def _check_text(name: str, value: object, limit: int = 255) -> None:
    if not isinstance(value, str):
        raise SubmissionError(f"{name} must be text, not {type(value).__name__}", name)
    problem = name_problem(value, limit)
    if problem is not None:
        raise SubmissionError(f"{name} {problem}", name)


def _time(name: str, value: datetime | None) -> float | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise SubmissionError(f"{name} must be a timezone-aware time", name)
    try:
        seconds = value.timestamp()
    except (OverflowError, ValueError):
        seconds = math.inf
    problem = time_problem(seconds)
    if problem is not None:
        raise SubmissionError(f"{name} {problem}", name)
    return seconds
