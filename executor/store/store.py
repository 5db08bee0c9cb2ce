"""The store: every query the daemon, the client and the CLI make, behind one object.

`Store` is the facade; its parts live by concern: `submissions.py` (new executions), `rounds.py`
(claim and commit), `reads.py` (reads and abort requests). The SQL is in `statements.py`, the row
codecs in `columns.py`, and every public call raises the store's own errors (`errors.py`).
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from executor.core.records import ExecutionRecord
from executor.store import notify, postgres, sqlite
from executor.store.base import create_engine, dialect_for
from executor.store.guard import guarded
from executor.store.reads import AbortResult, ReadQueries
from executor.store.rounds import CommitResult, RoundQueries
from executor.store.submissions import Submission, SubmissionQueries, new_execution_id
from executor.store.waits import FinishWatch

__all__ = [
    "AbortResult",
    "CommitResult",
    "Store",
    "Submission",
    "create_engine",
    "dialect_for",
    "new_execution_id",
]


class Store(SubmissionQueries, RoundQueries, ReadQueries):
    #: Made by the first `wait_final`: one per store, whatever the number of waiters.
    _finish_watch: FinishWatch | None = None

    @classmethod
    def from_url(cls, url: str, *, application_name: str | None = None) -> Store:
        """The store at `url`; `application_name` names its connections on PostgreSQL (a role:
        the daemon's, a client's), so that `pg_stat_activity` tells them apart."""
        return cls(create_engine(url, application_name=application_name))

    async def close(self) -> None:
        await self.drain_submissions()
        if self._finish_watch is not None:
            await self._finish_watch.close()
        await self.engine.dispose()

    @property
    def finish_watch(self) -> FinishWatch:
        """What every waiter of this store waits through (see waits.py)."""
        if self._finish_watch is None:
            self._finish_watch = FinishWatch(self)
        return self._finish_watch

    async def wait_final(self, execution_id: str, timeout: float | None) -> ExecutionRecord | None:  # noqa: ASYNC109
        """The execution once its phase is final; None when no execution has the id; TimeoutError
        when it is not final within `timeout` seconds. However many wait, the database sees one
        listener and one read per wake-up (waits.py)."""
        return await self.finish_watch.wait(execution_id, timeout)

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    async def ping(self) -> None:
        with guarded:
            async with self.engine.connect() as conn:
                await conn.execute(self.sql.ping)

    async def watch_changes(
        self,
        on_change: Callable[[], None],
        interval: float = 0.02,
        *,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        """Call `on_change` whenever another connection commits (runs until cancelled).

        SQLite has no LISTEN/NOTIFY; `PRAGMA data_version` changes when any other connection,
        in this process or another, commits. Polling it costs no disk I/O, so submissions from
        the CLI wake an idle daemon within `interval`. On PostgreSQL it LISTENs for the NOTIFY
        that submissions and abort requests send (see notify.py). `on_ready` is called once
        watching (on SQLite: the first version read), from when no commit goes unnoticed.
        """
        if self.dialect is postgres.DIALECT:
            await notify.listen(self.engine, on_change)
            return
        if self.dialect is not sqlite.DIALECT:
            return
        with guarded:
            conn = await self.engine.connect()
            try:
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection  # aiosqlite, in autocommit: no transaction is held open
                assert driver is not None
                last = None
                while True:
                    async with driver.execute(sqlite.DATA_VERSION) as cursor:
                        row = await cursor.fetchone()
                    version = row[0] if row else None
                    if last is not None and version != last:
                        on_change()
                    elif last is None and on_ready is not None:
                        on_ready()
                    last = version
                    await anyio.sleep(interval)
            finally:
                # This task is cancelled at shutdown. Closing the connection must not be cancelled
                # in turn: a half-closed aiosqlite connection left SQLAlchemy a clean-up task that
                # hung the process's exit.
                with anyio.CancelScope(shield=True):
                    await conn.close()
