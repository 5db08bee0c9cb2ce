"""Committing rounds: inline where the database has one writer (SQLite), pipelined where a commit
may run while the next round claims (PostgreSQL).

A commit is one transaction that writes only the rows whose lease the round still holds; nothing a
plugin returned is visible before it. The committer knows nothing of plugins: it is handed the
records the lifecycle decided and what to release with them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Coroutine, Mapping
from typing import Any

from executor.core.records import RecordUpdate
from executor.runtime.observer import RoundStats
from executor.runtime.tasks import cancel_and_wait
from executor.store import CommitResult, Store
from executor.store.errors import is_unavailable


class Committer:
    """Writes what the lifecycle decided, fenced by a round's lease, and logs what it wrote."""

    def __init__(self, store: Store, log: Any) -> None:
        self._store = store
        self._log = log

    async def write(
        self,
        number: int,
        token: str,
        updates: list[RecordUpdate],
        *,
        now: float,
        release_allocations_of: Collection[str],
        warn_lost: bool = False,
        held: Mapping[str, str] | None = None,
    ) -> CommitResult:
        """Commit `updates` under the lease `token` of round `number` (or of the earlier round
        `held` names for an id), releasing the quota tokens still held by the executions in
        `release_allocations_of`; with `warn_lost`, name the rows whose lease another replica
        took meanwhile."""
        result = await self._store.commit_round(
            token, updates, now=now, release_allocations_of=release_allocations_of, held=held
        )
        if warn_lost and result.lost:
            self._log.warning(
                "round.leases_lost", round=number, count=len(result.lost), ids=sorted(result.lost)
            )
        self._log_transitions(number, updates, result.committed)
        self._log_released(number, updates, result)
        return result

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


class CommitPipeline:
    """Runs each round's commit inline, or, where the store lets a commit run while the next round
    claims (PostgreSQL), runs the commit of a full round in the background while the next round
    claims and calls its plugins: the database works on one round while Python works on the next.

    The two rounds' executions differ (a round's rows stay leased until its commit), and a round
    commits only after the one before it (`previous`), so commits stay in order and at most one is
    in flight.
    """

    def __init__(self, store: Store, *, batch_size: int, log: Any) -> None:
        self._store = store
        self._batch_size = batch_size
        self._log = log
        self._committing: asyncio.Task[RoundStats] | None = None

    def may_overlap(self, claimed: int) -> bool:
        """Whether a round that claimed `claimed` commits in the background: a full one, where
        more is likely due, on a store that lets writes overlap."""
        return claimed >= self._batch_size and self._store.overlaps_writes

    def start(self, commit: Coroutine[Any, Any, RoundStats]) -> None:
        """Run `commit` in the background; `previous` must have been awaited first."""
        assert self._committing is None, "at most one commit in flight"
        self._committing = asyncio.get_running_loop().create_task(commit)

    async def previous(self) -> None:
        """Wait for the commit in flight, if any: its error is the caller's."""
        if self._committing is not None:
            task, self._committing = self._committing, None
            await task

    async def finish(self) -> None:
        """On `stop`, the round still committing finishes. The database failing it is logged, as
        the loop would have; the round hands its leases back, so its executions run again."""
        if self._committing is None:
            return
        task, self._committing = self._committing, None
        try:
            await task
        except Exception as err:
            if not is_unavailable(err):
                raise
            self._log.error("round.store_error", error=f"{type(err).__name__}: {err}")

    async def cancel(self) -> None:
        """Cancelled (the shutdown grace ran out): the round still committing goes too, and hands
        its leases back."""
        if self._committing is not None:
            task, self._committing = self._committing, None
            await cancel_and_wait([task])
