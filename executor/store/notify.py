"""Wake-ups across replicas on PostgreSQL: NOTIFY in the writing transaction, LISTEN in each daemon.

A submission or an abort request sends `NOTIFY executor_wakeup` inside its own transaction, so the
notification is delivered when, and only if, the rows it announces are committed: a woken replica
always finds them. Each daemon keeps one connection listening. Notifications are hints, never
the only way work is found: a lost one (a dropped connection) costs at most the poll interval,
and the listener wakes the loop after every reconnect in case it missed some.

A burst of notifications (thousands of single submissions a second) must not become a burst of
claims: `Coalescer` passes on at most one wake-up per `min_interval`, and the loop's own
`Wakeup` folds those that arrive during a round into one.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import anyio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from executor.logging import get_logger
from executor.store.guard import guarded

CHANNEL = "executor_wakeup"
NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', '')")

#: Longest pause between two attempts to get the listening connection back.
MAX_BACKOFF = 5.0
#: How often an idle listening connection is checked (a silently dead one receives nothing).
KEEPALIVE = 10.0


async def send(conn: AsyncConnection) -> None:
    """Queue a wake-up on `conn`'s transaction; PostgreSQL delivers it at commit, or never."""
    await conn.execute(NOTIFY)


class Coalescer:
    """Passes wake-ups on to `wake`, at most one per `min_interval`; the rest fold into one later."""

    def __init__(self, wake: Callable[[], None], min_interval: float = 0.05) -> None:
        self._wake = wake
        self._min_interval = min_interval
        self._last = float("-inf")
        self._pending: asyncio.TimerHandle | None = None
        #: Notifications received and wake-ups passed on (for tests and metrics).
        self.received = 0
        self.delivered = 0

    def __call__(self, *_: Any) -> None:
        self.received += 1
        if self._pending is not None:
            return  # one wake-up is already on its way
        wait = self._last + self._min_interval - time.monotonic()
        if wait <= 0:
            self._fire()
        else:
            self._pending = asyncio.get_running_loop().call_later(wait, self._fire)

    def _fire(self) -> None:
        self._pending = None
        self._last = time.monotonic()
        self.delivered += 1
        self._wake()

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None


async def listen(engine: AsyncEngine, on_wake: Callable[[], None], *, min_interval: float = 0.05) -> None:
    """LISTEN for wake-ups until cancelled, reconnecting with backoff when the connection is lost."""
    log = get_logger()
    coalescer = Coalescer(on_wake, min_interval)
    failures = 0

    def connected() -> None:
        nonlocal failures
        failures = 0  # the back-off starts over: killed sessions must not push it to its maximum
        log.info("listener.connected")

    try:
        while True:
            try:
                with guarded:  # logged as the store's errors, not the driver's
                    await _listen_once(engine, coalescer, connected=connected)
            except Exception as err:
                failures += 1
                delay = min(0.1 * 2**failures, MAX_BACKOFF) * random.uniform(0.5, 1.0)
                log.warning(
                    "listener.connection_lost",
                    error=f"{type(err).__name__}: {err}",
                    retry_in=round(delay, 3),
                    attempt=failures,
                )
                coalescer()  # whatever was notified meanwhile is found by the next claim
                await anyio.sleep(delay)
    finally:
        coalescer.cancel()


async def _listen_once(engine: AsyncEngine, coalescer: Coalescer, connected: Callable[[], None]) -> None:
    """Hold one listening connection until it dies (raises) or the task is cancelled."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection  # the asyncpg connection under SQLAlchemy's adapter
        lost = anyio.Event()
        driver.add_termination_listener(lambda *_: lost.set())
        await driver.add_listener(CHANNEL, coalescer)
        connected()
        coalescer()  # anything submitted while we were not listening
        try:
            while True:
                with anyio.move_on_after(KEEPALIVE):
                    await lost.wait()
                if lost.is_set():
                    raise ConnectionError("the listening connection was closed")
                with anyio.fail_after(KEEPALIVE):
                    await driver.execute("SELECT 1")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await conn.invalidate()  # never hand a listening or broken connection back to the pool
            raise
