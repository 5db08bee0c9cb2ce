"""Waiting for executions to finish: one watcher per store, fanning out to every waiter.

A thousand callers waiting for their executions must not cost a thousand polls. Each `Store` has
one `FinishWatch`: waiters register the id they wait for and sleep on a future of their own; one
task listens for what the daemons announce and, per wake-up, reads every waited id that may have
finished in one statement, then resolves the futures of those that did.

What wakes the watch is what wakes the daemon's loop, per dialect:

- PostgreSQL: LISTEN on `executor_finished`, which the round's commit notifies (in its own
  transaction, so a notified execution is final for every reader) with the ids it finished.
  Only waited ids among them are read; executions nobody waits for cost nothing.
- SQLite: `PRAGMA data_version`, which changes whenever another connection commits; then every
  waited id is read (still one statement).

Reads are rate-limited by a token bucket: a few at once (`burst`: a lone waiter's registration
read and the read that answers it both go at once), then at most one per `min_interval`, whatever
the number of waiters or of commits; what is notified meanwhile joins the next read.

Notifications are hints. A waiter's id is read once when it registers (it may be final, or not
exist: both answer at once), after every reconnect of the listener, and every `recheck` seconds
as a safety net, so a lost notification costs latency, never an answer. The watch starts with
its first waiter and stops `linger` seconds after its last one, closing its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio
from sqlalchemy import text

from executor.core.phase import FINAL_PHASES
from executor.core.records import ExecutionRecord
from executor.logging import get_logger
from executor.store import notify, postgres, sqlite
from executor.store.columns import decode_execution
from executor.store.errors import StoreUnavailable, is_unavailable
from executor.store.guard import guarded
from executor.store.statements import _FINAL, ALL_COLUMNS

if TYPE_CHECKING:
    from executor.store.store import Store

#: A waiter's future: the final record, or None when no execution has the id.
Answer = asyncio.Future[ExecutionRecord | None]


class FinishWatch:
    """Every waiter of one store: one task that listens and reads for all (see the module)."""

    def __init__(
        self,
        store: Store,
        *,
        min_interval: float = 0.1,
        burst: int = 8,
        recheck: float = 5.0,
        linger: float = 10.0,
        data_version_interval: float = 0.02,
    ) -> None:
        self._store = store
        self._min_interval = min_interval
        self._burst = burst
        #: Seconds between the safety net's reads of every waited id.
        self.recheck = recheck
        self._linger = linger
        self._data_version_interval = data_version_interval

        def in_list(name: str) -> str:
            return (
                f"= ANY(:{name})" if store.dialect.numbered else f"IN (SELECT value FROM json_each(:{name}))"
            )

        #: The final rows among `ids`, and the rows of `new` whatever their phase: a new id with
        #: no row names no execution. One statement per wake-up.
        self._rows = text(
            f"SELECT {ALL_COLUMNS} FROM executions WHERE id {in_list('ids')} "
            f"AND (phase IN ({_FINAL}) OR id {in_list('new')})"
        )
        self._waiters: dict[str, set[Answer]] = {}
        #: Registered since the last read: each is read once whatever was notified.
        self._new: set[str] = set()
        #: Notified as finished, or (`_all`) every waited id, since the last read.
        self._notified: set[str] = set()
        self._all = False
        self._kick = asyncio.Event()
        #: Set once the listener listens: no read of a new waiter's id happens before, or a
        #: finish committed between the read and the LISTEN would go unnoticed.
        self._listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: Reads of waited ids (one statement each), and wake-ups (for tests and the benchmark).
        self.reads = 0
        self.wakeups = 0

    @property
    def waiting(self) -> int:
        """Waiters registered now."""
        return sum(len(answers) for answers in self._waiters.values())

    @property
    def unread(self) -> int:
        """Waited ids registered since the last read (each is read once, whatever is notified)."""
        return len(self._new)

    async def wait(self, execution_id: str, timeout: float | None) -> ExecutionRecord | None:  # noqa: ASYNC109
        """The execution's record once its phase is final, or None when no execution has the id;
        raises TimeoutError when it is not final within `timeout` seconds (None: no limit)."""
        if self._closed:
            raise StoreUnavailable("the store was closed")
        answer: Answer = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(execution_id, set()).add(answer)
        self._new.add(execution_id)
        self._kick.set()
        self._start()
        try:
            with anyio.move_on_after(timeout):
                return await answer
            if answer.done() and not answer.cancelled():
                return answer.result()  # answered in the instant the time ran out
            raise TimeoutError(f"execution {execution_id} not finished within {timeout:g}s")
        finally:
            answers = self._waiters.get(execution_id)
            if answers is not None:
                answers.discard(answer)
                if not answers:
                    del self._waiters[execution_id]
            if not answer.done():
                answer.cancel()

    async def close(self) -> None:
        """Stop watching; waiters still waiting get `StoreUnavailable`."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_all(StoreUnavailable("the store was closed while waiting"))

    # -- the watch's task ---------------------------------------------------------------------

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        """Watch until `linger` seconds pass without waiters; again at once if one came while the
        watch was stopping (it saw the task not yet done and started none)."""
        while True:
            self._listening.clear()
            try:
                async with anyio.create_task_group() as group:
                    group.start_soon(self._listen)
                    await self._read_until_idle()
                    group.cancel_scope.cancel()
            except Exception as err:  # a bug: waiters must not hang on it (the next one starts anew)
                get_logger().error("waits.failed", error=f"{type(err).__name__}: {err}", exc_info=True)
                self._fail_all(err)
                return
            if not self._waiters or self._closed:
                return
            self._all = True  # nothing was listening for a moment

    async def _read_until_idle(self) -> None:
        """Read on every wake-up, within the token bucket (`burst`, one per `min_interval`);
        return after `linger` seconds without waiters."""
        await self._listening.wait()
        idle_since: float | None = None
        tokens, filled_at = float(self._burst), time.monotonic()
        failures = 0
        while True:
            if not self._waiters:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= self._linger:
                    return
            else:
                idle_since = None
            with anyio.move_on_after(self.recheck if self._waiters else self._linger):
                await self._kick.wait()
            if not self._kick.is_set():
                self._all = True  # the safety net: read every waited id now and then
            self._kick.clear()
            if not self._due():
                continue  # nothing waited for was notified: no read, no token spent
            now = time.monotonic()
            tokens = min(float(self._burst), tokens + (now - filled_at) / self._min_interval)
            filled_at = now
            if tokens < 1:
                await anyio.sleep((1 - tokens) * self._min_interval)  # what comes meanwhile joins in
                tokens, filled_at = 1.0, time.monotonic()
            tokens -= 1
            try:
                await self._read()
                failures = 0
            except Exception as err:
                if not is_unavailable(err):
                    raise
                failures += 1
                self._all = True
                delay = min(0.1 * 2**failures, 5.0)
                error = f"{type(err).__name__}: {err}"
                get_logger().warning("waits.read_failed", error=error, retry_in=delay)
                await anyio.sleep(delay)
                self._kick.set()

    def _due(self) -> bool:
        """Whether a read may answer someone: a waiter registered, notified, or all to be read."""
        return bool(self._waiters) and bool(self._all or self._new or self._notified)

    async def _read(self) -> None:
        """One read of the ids that may have finished, the new ones' whatever their phase."""
        registered = set(self._new)
        new = [i for i in registered if i in self._waiters]
        if self._all:
            ids = list(self._waiters)
        else:
            ids = [i for i in self._notified | registered if i in self._waiters]
        self._notified.clear()
        self._all = False
        if not ids:
            self._new -= registered
            return
        sql = self._store.sql
        with guarded:
            async with self._store.engine.connect() as conn:
                params = {"ids": sql.id_list(ids), "new": sql.id_list(new)}
                rows = (await conn.execute(self._rows, params)).all()
                self.reads += 1
        self._new -= registered  # those registered meanwhile are read next time
        found: set[str] = set()
        for row in rows:
            record = decode_execution(row)
            found.add(record.id)
            if record.phase in FINAL_PHASES:
                self._resolve(record.id, record)
        for execution_id in new:
            if execution_id not in found:
                self._resolve(execution_id, None)

    def _resolve(self, execution_id: str, record: ExecutionRecord | None) -> None:
        for answer in self._waiters.pop(execution_id, ()):
            if not answer.done():
                answer.set_result(record)

    def _fail_all(self, err: BaseException) -> None:
        waiters, self._waiters = self._waiters, {}
        for answers in waiters.values():
            for answer in answers:
                if not answer.done():
                    answer.set_exception(err)

    # -- what wakes it ------------------------------------------------------------------------

    def _woken(self, ids: Sequence[str] | None) -> None:
        """Some executions finished: `ids`, or (None) any of them."""
        self.wakeups += 1
        if ids is None:
            self._all = True
        else:
            self._notified.update(i for i in ids if i in self._waiters)
            if not self._notified:
                return
        self._kick.set()

    async def _listen(self) -> None:
        if self._store.dialect is postgres.DIALECT:
            await self._listen_postgres()
        elif self._store.dialect is sqlite.DIALECT:
            await self._watch_sqlite()

    async def _listen_postgres(self) -> None:
        def received(payload: str) -> None:
            self._woken(payload.split(",") if payload else None)

        def connected() -> None:
            self._woken(None)  # whatever finished while we were not listening
            self._listening.set()

        await notify.listen_channel(
            self._store.engine,
            notify.FINISHED_CHANNEL,
            received,
            on_connected=connected,
            on_lost=lambda: None,
            announce=False,
        )

    async def _watch_sqlite(self) -> None:
        """Poll `PRAGMA data_version` on a connection of its own (no disk I/O, no transaction)."""
        failures = 0
        while True:
            try:
                await self._store.watch_changes(
                    lambda: self._woken(None), self._data_version_interval, on_ready=self._listening.set
                )
                return
            except Exception as err:
                if not is_unavailable(err):
                    raise
                failures += 1
                await anyio.sleep(min(0.1 * 2**failures, 5.0))
