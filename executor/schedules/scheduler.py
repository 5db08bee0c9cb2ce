"""The scheduler: every replica runs one; the store's key makes each slot one execution.

Each round reads the due schedules (a range of the next-slot index, on the database's clock),
plans each one's slots under its misfire policy (`model.plan`), and fires them in one transaction
per schedule (`ScheduleStore.fire`). Replicas race freely: a lost race costs a rolled-back
transaction, never a second execution. Between rounds it sleeps until the earliest next slot, at
most `max_sleep`, so that schedules declared or resumed elsewhere are seen within it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import pydantic

from executor.client import Client, SubmissionError
from executor.logging import get_logger
from executor.schedules.model import ScheduleSpec, plan
from executor.schedules.service import submission_for
from executor.store import StoreRefused, StoreUnavailable
from executor.store.schedules import Decision, ScheduleRow, ScheduleStore

#: Schedule names a log line lists at most.
LOGGED_NAMES = 20


class Scheduler:
    def __init__(
        self,
        client: Client,
        *,
        replica_id: str = "",
        batch: int = 500,
        max_sleep: float = 1.0,
        clock: Callable[[], Awaitable[float]] | None = None,
    ) -> None:
        self.client = client
        self.store = ScheduleStore(client.store)
        self.batch = batch
        self.max_sleep = max_sleep
        self._clock = clock or self.store.now
        self._log = get_logger(replica=replica_id, part="scheduler")
        self.wakeup = anyio.Event()
        #: Slots this replica turned into executions since start.
        self.fired = 0

    async def run(self) -> None:
        """Rounds until cancelled; a store outage backs off and tries again."""
        backoff = 0.0
        while True:
            try:
                more = await self.round()
                backoff = 0.0
                if more:
                    continue
                wait = await self._until_next()
            except (StoreUnavailable, StoreRefused) as err:
                backoff = min(max(backoff * 2, 0.5), 10.0)
                self._log.warning("schedules.round_failed", error=str(err), retry_in=backoff)
                wait = backoff
            except Exception:
                # A scheduler's fault must not stop the daemon's executions: logged, retried.
                backoff = min(max(backoff * 2, 0.5), 10.0)
                self._log.exception("schedules.round_crashed", retry_in=backoff)
                wait = backoff
            with anyio.move_on_after(wait):
                await self.wakeup.wait()
            self.wakeup = anyio.Event()

    async def round(self) -> bool:
        """Fire every due slot, a batch per transaction; whether a full batch was due (then
        another round follows at once)."""
        now = await self._clock()
        fired = await self.store.fire_due(now, self.batch, lambda rows: [self._decide(r, now) for r in rows])
        if fired.executions:
            # One line per batch: ten thousand schedules due in one second are not ten thousand lines.
            made = sum(len(ids) for ids in fired.executions.values())
            self.fired += made
            self._log.info(
                "schedules.fired", executions=made, schedules=sorted(fired.executions)[:LOGGED_NAMES]
            )
        if fired.overlapped:
            self._log.info("schedules.overlap_skipped", schedules=sorted(fired.overlapped)[:LOGGED_NAMES])
        return fired.schedules == self.batch

    def _decide(self, row: ScheduleRow, now: float) -> Decision:
        """The slots `row` runs now, under its misfire policy, each submission validated."""
        assert row.next_slot_at is not None
        try:
            spec = ScheduleSpec.model_validate(row.spec)
        except pydantic.ValidationError as err:
            # Stored by another version: it stops (no next slot) rather than fail every round.
            self._log.error("schedules.unreadable", schedule=row.name, error=str(err))
            return Decision(row, None, [], False)
        decided = plan(spec, row.next_slot_at, now)
        if decided.missed:
            self._log.info(
                "schedules.misfired", schedule=spec.name, missed=decided.missed, policy=spec.misfire
            )
        try:
            slots = [(slot, submission_for(self.client, spec, slot)) for slot in decided.fire]
        except SubmissionError as err:
            # The plugin changed since the schedule was declared: the slot is passed over, loudly.
            self._log.error("schedules.slot_refused", schedule=spec.name, error=str(err))
            slots = []
        return Decision(row, decided.next_slot, slots, spec.overlap == "skip")

    async def _until_next(self) -> float:
        following = await self.store.next_due()
        if following is None:
            return self.max_sleep
        return min(max(following - await self._clock(), 0.0), self.max_sleep)
