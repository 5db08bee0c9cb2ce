"""Wake-ups across replicas on PostgreSQL: NOTIFY in the writing transaction, LISTEN in each daemon.

A submission or an abort request sends `NOTIFY executor_wakeup` inside its own transaction, so the
notification is delivered when, and only if, the rows it announces are committed: a woken replica
always finds them. Each daemon keeps one connection listening. Notifications are hints, never
the only way work is found: a lost one (a dropped connection) costs at most the poll interval,
and the listener wakes the loop after every reconnect in case it missed some.

A burst of notifications (thousands of single submissions a second) must not become a burst of
claims, but a lone submission must not wait either: `Coalescer` passes a wake-up on at once while
notifications come no faster than `busy_rate` a second (an idle or lightly loaded daemon starts a
round the moment a submission commits), and folds them into one per `min_interval` only above that
rate. The loop's own `Wakeup` folds those that arrive during a round into one in any case.
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
    """Passes wake-ups on to `wake`: each at once under light load, at most one per `min_interval`
    under load (the rest fold into one later).

    Load is the rate of notifications, estimated from their spacing (an exponentially weighted mean
    of the gaps, so one burst neither starts nor ends coalescing on its own). Issue 21 measured what
    coalescing always cost: at 200 submissions a second, one wake-up per 50 ms made the median
    pickup 9-30 ms where a wake-up at once takes a few. Under load coalescing costs little latency
    (rounds run back to back) and saves claims that would each find a handful of rows.
    """

    def __init__(
        self,
        wake: Callable[[], None],
        min_interval: float = 0.05,
        busy_rate: float = 1000.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wake = wake
        self._clock = clock
        self._min_interval = min_interval
        #: Notifications a second above which wake-ups are coalesced.
        self._busy_gap = 1.0 / busy_rate if busy_rate > 0 else float("inf")
        self._last = float("-inf")
        self._received_at = float("-inf")
        #: Mean gap between notifications (s), weighted towards the latest; starts idle.
        self._mean_gap = _IDLE_GAP
        self._pending: asyncio.TimerHandle | None = None
        #: Notifications received and wake-ups passed on (for tests and metrics).
        self.received = 0
        self.delivered = 0

    @property
    def under_load(self) -> bool:
        return self._mean_gap < self._busy_gap

    def __call__(self, *_: Any) -> None:
        self.received += 1
        now = self._clock()
        gap = min(now - self._received_at, _IDLE_GAP)
        self._received_at = now
        self._mean_gap = _GAP_WEIGHT * gap + (1 - _GAP_WEIGHT) * self._mean_gap
        if self._pending is not None:
            return  # one wake-up is already on its way
        wait = self._last + self._min_interval - now if self.under_load else 0.0
        if wait <= 0:
            self._fire()
        else:
            self._pending = asyncio.get_running_loop().call_later(wait, self._fire)

    def _fire(self) -> None:
        self._pending = None
        self._last = self._clock()
        self.delivered += 1
        self._wake()

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None


#: Weight of the latest gap in the mean gap between notifications: about the last ten count. From
#: idle, some sixty notifications back to back start coalescing; at 200 a second it never starts.
_GAP_WEIGHT = 0.1
#: The gap an idle listener starts from, and the longest one counted (a quiet hour must not take
#: the mean thousands of notifications to forget).
_IDLE_GAP = 1.0


async def listen(engine: AsyncEngine, on_wake: Callable[[], None], *, min_interval: float = 0.05) -> None:
    """LISTEN for wake-ups until cancelled, reconnecting with backoff when the connection is lost."""
    log = get_logger()
    coalescer = Coalescer(on_wake, min_interval)
    failures = 0
    try:
        while True:
            try:
                await _listen_once(engine, coalescer, connected=lambda: log.info("listener.connected"))
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
            else:
                failures = 0
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
