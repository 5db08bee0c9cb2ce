"""Wake-ups across replicas on PostgreSQL: NOTIFY in the writing transaction, LISTEN in each daemon.

A submission or an abort request sends `NOTIFY executor_wakeup` inside its own transaction, so the
notification is delivered when, and only if, the rows it announces are committed: a woken replica
always finds them. Each daemon keeps one connection listening. Notifications are hints, never
the only way work is found: a lost one (a dropped connection) costs at most the poll interval,
and the listener wakes the loop after every reconnect in case it missed some.

A burst of notifications (thousands of single submissions a second) must not become a burst of
claims: `Coalescer` passes on at most one wake-up per `min_interval`, and the loop's own
`Wakeup` folds those that arrive during a round into one.

A second channel, `executor_finished`, tells waiters (`executor wait`, `Client.wait`, the API's
long-poll) which executions reached a final phase: the round's commit sends it, in the same
transaction, only when it finished some, its payloads the ids. It is a channel of its own so
that finishing work never wakes an idle replica's loop.
"""

from __future__ import annotations

import asyncio
import functools
import random
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from executor.logging import get_logger

CHANNEL = "executor_wakeup"
NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', '')")

FINISHED_CHANNEL = "executor_finished"
#: PostgreSQL refuses a payload of 8000 bytes or more; ids are joined by commas up to this many.
MAX_PAYLOAD = 7900

#: Longest pause between two attempts to get the listening connection back.
MAX_BACKOFF = 5.0
#: How often an idle listening connection is checked (a silently dead one receives nothing).
KEEPALIVE = 10.0


async def send(conn: AsyncConnection) -> None:
    """Queue a wake-up on `conn`'s transaction; PostgreSQL delivers it at commit, or never."""
    await conn.execute(NOTIFY)


def finished_payloads(ids: Sequence[str]) -> list[str]:
    """`ids` joined by commas into payloads PostgreSQL accepts (each under `MAX_PAYLOAD` bytes)."""
    payloads: list[str] = []
    chunk: list[str] = []
    size = 0
    for execution_id in ids:
        length = len(execution_id.encode()) + 1
        if chunk and size + length > MAX_PAYLOAD:
            payloads.append(",".join(chunk))
            chunk, size = [], 0
        chunk.append(execution_id)
        size += length
    if chunk:
        payloads.append(",".join(chunk))
    return payloads


@functools.cache
def with_finished(insert_events: str) -> str:
    """The round's INSERT of its events (`$1`..`$n`, an INSERT ... SELECT), which also notifies
    `executor_finished` with the payloads of parameter `$n+1`: the commit's announcement costs
    no round trip of its own. Only for a commit that finished some executions, so that has events
    (each final phase is reached with one).

    A SELECT in WITH runs only as far as the outer statement reads it; the condition reads it
    once, as an init plan, whatever the number of events, and holds for every row.
    """
    count = len(re.findall(r"\$\d+", insert_events))
    notifying = (
        f"WITH finished AS (SELECT pg_notify('{FINISHED_CHANNEL}', payload) FROM "
        f"unnest(${count + 1}::text[]) AS payload) "
    )
    return f"{notifying}{insert_events} WHERE (SELECT count(*) FROM finished) >= 0"


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
    coalescer = Coalescer(on_wake, min_interval)
    try:
        # After a (re)connect, and while disconnected: whatever was notified meanwhile is found
        # by the next claim.
        await listen_channel(engine, CHANNEL, coalescer, on_connected=coalescer, on_lost=coalescer)
    finally:
        coalescer.cancel()


async def listen_channel(
    engine: AsyncEngine,
    channel: str,
    on_notify: Callable[[str], None],
    *,
    on_connected: Callable[[], None],
    on_lost: Callable[[], None],
    announce: bool = True,
) -> None:
    """LISTEN on `channel` until cancelled, calling `on_notify(payload)` for each notification,
    `on_connected` once listening (again after every reconnect: notifications may have been
    missed) and `on_lost` when the connection is lost; reconnects with backoff. Each connect is
    logged at info when `announce` (the daemon's), else at debug (a CLI's wait says nothing)."""
    log = get_logger()
    failures = 0

    def received(_conn: Any, _pid: Any, _channel: Any, payload: Any) -> None:
        on_notify(str(payload))

    def connected() -> None:
        (log.info if announce else log.debug)("listener.connected", channel=channel)
        on_connected()

    while True:
        try:
            await _listen_once(engine, channel, received, connected)
        except Exception as err:
            failures += 1
            delay = min(0.1 * 2**failures, MAX_BACKOFF) * random.uniform(0.5, 1.0)
            log.warning(
                "listener.connection_lost",
                channel=channel,
                error=f"{type(err).__name__}: {err}",
                retry_in=round(delay, 3),
                attempt=failures,
            )
            on_lost()
            await anyio.sleep(delay)
        else:
            failures = 0


async def _listen_once(
    engine: AsyncEngine, channel: str, received: Callable[..., None], connected: Callable[[], None]
) -> None:
    """Hold one listening connection until it dies (raises) or the task is cancelled."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection  # the asyncpg connection under SQLAlchemy's adapter
        lost = anyio.Event()
        driver.add_termination_listener(lambda *_: lost.set())
        await driver.add_listener(channel, received)
        connected()
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
