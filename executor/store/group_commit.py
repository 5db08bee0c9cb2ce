"""Group commit of single submissions: those that arrive together share one transaction.

Fifty HTTP clients submitting one execution each made fifty transactions, each waiting for the
write lock (SQLite) or a commit of its own (PostgreSQL): 235 submissions/s, p99 1.3 s. Here a
submission joins the group that is waiting to be written; one writer at a time stores a whole
group with the bulk path (`SubmissionQueries.submit_many`), and every caller is answered only
when the transaction holding its row has committed. While a group is being written the next one
gathers, so a submission waits for at most the commit under way and its own, never behind a
queue of one transaction per caller.

A group's write runs as a task of its own: a caller that gives up (is cancelled) does not cancel
the transaction of the others; a caller cancelled before its group is written is left out of it.
If the group's transaction fails, each of its submissions is tried alone, so that a caller gets
the error of its own row and not of another's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from executor.store.errors import SubmissionFailed

if TYPE_CHECKING:
    from executor.store.submissions import Submission

#: Most submissions written in one group's transaction; the rest form the next group.
MAX_GROUP: Final = 1000

StoreMany = Callable[[Sequence["Submission"], Sequence[float]], Awaitable[list[str]]]


@dataclass(slots=True)
class _Waiting:
    submission: Submission
    now: float
    answer: asyncio.Future[str]


class GroupCommit:
    """Stores single submissions in groups through `store_many(submissions, times)`."""

    def __init__(self, store_many: StoreMany, *, writers: int = 1, max_group: int = MAX_GROUP) -> None:
        """`writers`: groups written at once. One for SQLite, which writes one transaction at a
        time anyway; on PostgreSQL a few, so that the next group need not wait for the commit
        (the flush of the WAL to disk) of the one before."""
        self._store_many = store_many
        self._max_group = max_group
        self._most_writers = writers
        self._pending: list[_Waiting] = []
        self._writers: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, submission: Submission, now: float) -> str:
        """The id of the stored execution, once its row has committed."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a store used from a new event loop starts afresh
            self._loop, self._pending, self._writers = loop, [], set()
        waiting = _Waiting(submission, now, loop.create_future())
        self._pending.append(waiting)
        if len(self._writers) < self._most_writers and len(self._pending) == 1:
            writer = loop.create_task(self._write_groups(), name="executor-group-commit")
            self._writers.add(writer)
        return await waiting.answer

    async def drain(self) -> None:
        """Wait for the groups being written and those gathered behind them (at close)."""
        if self._writers and self._loop is asyncio.get_running_loop():
            await asyncio.shield(asyncio.gather(*self._writers, return_exceptions=True))

    async def _write_groups(self) -> None:
        """Write groups until none is gathering. Leaves `_writers` as it stops, with no await
        between the last look at `_pending` and leaving: a submission arriving after it starts
        a writer of its own."""
        try:
            while self._pending:
                group = self._pending[: self._max_group]
                del self._pending[: self._max_group]
                await self._write(group)
        except BaseException:
            if len(self._writers) <= 1:  # no other writer will take them
                for waiting in self._pending:
                    waiting.answer.cancel()
                self._pending.clear()
            raise
        finally:
            this = asyncio.current_task()
            if this is not None:
                self._writers.discard(this)

    async def _write(self, group: list[_Waiting]) -> None:
        live = [waiting for waiting in group if not waiting.answer.done()]
        if not live:
            return
        try:
            ids = await self._store_many([w.submission for w in live], [w.now for w in live])
        except SubmissionFailed as err:
            # The connection kept dying: trying each alone with new ids might store one twice
            # (the group's commit may have happened). Each caller gets the verdict with its own id.
            for index, waiting in enumerate(live):
                _answer(waiting, error=err.of_one(index))
        except Exception as err:
            if len(live) == 1:
                _answer(live[0], error=err)
                return
            for waiting in live:  # each alone: a caller gets its own row's error, not another's
                try:
                    [execution_id] = await self._store_many([waiting.submission], [waiting.now])
                except Exception as own:
                    _answer(waiting, error=own)
                else:
                    _answer(waiting, execution_id)
        except BaseException:
            for waiting in live:
                waiting.answer.cancel()
            raise
        else:
            for waiting, execution_id in zip(live, ids, strict=True):
                _answer(waiting, execution_id)


def _answer(waiting: _Waiting, execution_id: str = "", *, error: Exception | None = None) -> None:
    if waiting.answer.done():  # its caller was cancelled meanwhile
        return
    if error is not None:
        waiting.answer.set_exception(error)
    else:
        waiting.answer.set_result(execution_id)
