"""The plugin calls that outlived their round's budget, going on in the background.

A round commits the calls that finished within its budget and leaves the others here: each keeps
its execution's lease (renewed by the loop), and when it finishes its outcome waits in `finished`
for the next commit, which wakes the loop. A call whose lease was lost is cancelled and its outcome
dropped: the execution belongs to whoever holds the lease now.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from executor.core.records import ExecutionRecord
from executor.runtime.invoker import Call
from executor.runtime.tasks import cancel_and_wait


class CallKind(Enum):
    HANDLE = "handle"
    #: An ended attempt's `abort` and `finalize`: its outcome is the clean-up's record.
    CLEAN_UP = "clean-up"


@dataclass(slots=True)
class Straggler:
    call: Call
    record: ExecutionRecord
    token: str
    kind: CallKind
    #: The round that started the call.
    number: int
    #: What runs the call when it has no task of its own (the round's carrier).
    carrier: asyncio.Task[Any] | None = None


@dataclass(slots=True)
class _Carriers:
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def add(self, task: asyncio.Task[Any]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class Stragglers:
    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._pending: dict[str, Straggler] = {}
        self._finished: list[Straggler] = []
        self._carriers = _Carriers()
        #: Set whenever a call finishes: `settled` waits for it.
        self._changed = asyncio.Event()

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def waiting(self) -> bool:
        """Whether anything is still running or waiting for its commit."""
        return bool(self._pending or self._finished)

    def keep(
        self,
        number: int,
        token: str,
        kind: CallKind,
        calls: Collection[tuple[Call, ExecutionRecord]],
        carrier: asyncio.Task[Any] | None = None,
    ) -> None:
        """Go on with `calls` (pending, leased under `token`) after their round moved on."""
        if carrier is not None:
            self._carriers.add(carrier)
        for call, record in calls:
            straggler = Straggler(call, record, token, kind, number, carrier if call.task is None else None)
            self._pending[record.id] = straggler
            call.sink = functools.partial(self._finished_one, record.id)

    def _finished_one(self, execution_id: str, call: Call) -> None:
        straggler = self._pending.pop(execution_id, None)
        if straggler is None:
            return
        self._finished.append(straggler)
        self._changed.set()
        self._wake()

    async def settled(self) -> None:
        """Return once a call has finished since the last take (at once if one has)."""
        if not self._finished:
            self._changed.clear()
            await self._changed.wait()

    def take_finished(self) -> list[Straggler]:
        """The calls finished since the last take, for the commit about to run."""
        finished, self._finished = self._finished, []
        return finished

    def drop(self, ids: Collection[str]) -> list[Straggler]:
        """The leases of `ids` were lost: cancel their calls, forget their outcomes."""
        dropped = []
        for execution_id in ids:
            straggler = self._pending.pop(execution_id, None)
            if straggler is None:
                continue
            dropped.append(straggler)
            straggler.call.dropped = True
            runner = straggler.call.task or straggler.carrier
            if runner is not None:
                runner.cancel()
        self._finished = [s for s in self._finished if s.record.id not in ids]
        return dropped

    async def cancel_all(self) -> None:
        """Shutdown past its grace: every call still running is cancelled, its outcome dropped."""
        tasks = set(self._carriers.tasks)
        for straggler in self._pending.values():
            straggler.call.dropped = True
            if straggler.call.task is not None:
                tasks.add(straggler.call.task)
        self._pending.clear()
        self._finished.clear()
        if tasks:
            await cancel_and_wait(tasks)

    def by_plugin(self) -> dict[str, tuple[int, float]]:
        """Per plugin: how many calls are in flight, and the age in seconds of the oldest."""
        now = time.monotonic()
        found: dict[str, tuple[int, float]] = {}
        for straggler in self._pending.values():
            plugin = straggler.call.plugin.id
            count, oldest = found.get(plugin, (0, 0.0))
            found[plugin] = (count + 1, max(oldest, now - straggler.call.started))
        return found
