"""The status cache one remote-service plugin shares between all its executions.

`handle` never calls `get`: it reads the resource this cache last fetched. A background task
refreshes every resource in the cache once per resync interval, in batches handed to a bounded
pool of workers, each call under the plugin's read limit. So the calls made to the remote are
bounded by (resources x refreshes), however often the loop runs `handle`, and a thousand
executions polling one service cost it at most a thousand `get`s per resync interval.

Resources the plugin says are terminal (`AsyncPlugin.is_terminal`) are not fetched again; the
item leaves the cache when the execution's round reads it, or when it ends.

The refresher is `run`: the plugin starts it in the daemon's task group when the daemon starts
the plugin (`WebApiPlugin.start`), and it ends when the daemon cancels that group at shutdown.
It waits (without polling) while the cache is empty.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio

from executor.core import Logger
from executor.webapi.config import WebApiConfig
from executor.webapi.errors import RateLimitedError, describe
from executor.webapi.ratelimit import Clock, RateLimits


@dataclass(slots=True)
class CacheItem:
    """What the cache knows of one remote resource."""

    key: str
    meta: Any
    last_accessed: float
    resource: Any = None
    synced: bool = False
    #: The resource will not change any more: no further `get` for it.
    terminal: bool = False
    #: Consecutive failed `get`s, and the error of the last one.
    sync_failures: int = 0
    last_error: str | None = None
    last_synced_at: float | None = None
    gets: int = field(default=0)


class StatusCache:
    def __init__(
        self,
        get: Callable[[Any], Awaitable[Any]],
        limits: RateLimits,
        config: WebApiConfig,
        *,
        is_terminal: Callable[[Any], bool] = lambda resource: False,
        logger: Logger | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._get = get
        self._is_terminal = is_terminal
        self._limits = limits
        self._config = config
        self._log = logger
        self._clock = clock
        self._items: dict[str, CacheItem] = {}
        #: True while `run` runs: `handle` tells "not fetched yet" from "nobody will fetch it".
        self.running = False
        self._not_empty: anyio.Event | None = None
        self._pass_done: anyio.Event | None = None
        #: Refresh passes completed, and `get` calls made, since the cache was built.
        self.passes = 0
        self.gets = 0

    # -- what handle, abort and finalize use ---------------------------------------------------

    def get_or_create(
        self, key: str, meta: Any, *, sync_failures: int = 0, last_error: str | None = None
    ) -> CacheItem:
        """The item for `key`, added (with the counts persisted in plugin state) when new."""
        now = self._clock()
        item = self._items.get(key)
        if item is None:
            item = CacheItem(key, meta, now, sync_failures=sync_failures, last_error=last_error)
            self._items[key] = item
            if self._not_empty is not None:
                self._not_empty.set()
        item.last_accessed = now
        return item

    def discard(self, key: str | None) -> None:
        if key is not None:
            self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    # -- the refresher ----------------------------------------------------------------------------

    async def wait_for_pass(self, after: int) -> int:
        """Wait until more than `after` refresh passes have completed; returns the count."""
        while self.passes <= after:
            if self._pass_done is None:
                self._pass_done = anyio.Event()
            await self._pass_done.wait()
        return self.passes

    async def run(self) -> None:
        """Refresh every resource once per resync interval, until cancelled. One runner at a time."""
        if self.running:
            raise RuntimeError("the status cache's refresher is running already")
        self.running = True
        try:
            await self._refresh_forever()
        finally:
            self.running = False

    async def _refresh_forever(self) -> None:
        interval = self._config.resync_interval
        while True:
            if not self._items:
                self._not_empty = anyio.Event()
                await self._not_empty.wait()
            started = self._clock()
            self._evict(started)
            await self.refresh([item for item in self._items.values() if not item.terminal])
            self.passes += 1
            done, self._pass_done = self._pass_done, None
            if done is not None:
                done.set()
            await anyio.sleep(max(started + interval - self._clock(), 0.0))

    def _evict(self, now: float) -> None:
        horizon = now - self._config.cache_idle_evict
        for key in [key for key, item in self._items.items() if item.last_accessed < horizon]:
            del self._items[key]

    async def refresh(self, items: list[CacheItem]) -> None:
        """One pass: `items` in batches, `workers` batches at a time, each `get` under the read limit."""
        size = self._config.batch_size
        batches: Iterator[list[CacheItem]] = iter([items[i : i + size] for i in range(0, len(items), size)])

        async def worker() -> None:
            for batch in batches:  # one shared iterator: each batch goes to exactly one worker
                for item in batch:
                    if self._items.get(item.key) is item:  # skip what finished meanwhile
                        await self._sync(item)

        workers = min(self._config.workers, -(-len(items) // size))
        async with anyio.create_task_group() as group:
            for _ in range(workers):
                group.start_soon(worker)

    async def _sync(self, item: CacheItem) -> None:
        await self._limits.read.acquire()
        self.gets += 1
        item.gets += 1
        try:
            resource = await self._get(item.meta)
        except RateLimitedError as err:
            pause = err.retry_after if err.retry_after is not None else self._config.default_retry_after
            self._limits.slow_down(pause)
            if self._log is not None:
                self._log.info("webapi.rate_limited", call="get", key=item.key, pause_seconds=pause)
            return  # not the resource's fault: it is simply looked at again next pass
        except Exception as err:
            item.sync_failures += 1
            item.last_error = describe(err)
            # Past the limit the execution fails on its next round: no point asking again.
            item.terminal = item.sync_failures >= self._config.max_sync_failures
            if self._log is not None:
                self._log.warning(
                    "webapi.get_failed", key=item.key, failures=item.sync_failures, error=item.last_error
                )
        else:
            item.resource = resource
            item.synced = True
            item.terminal = self._is_terminal(resource)
            item.sync_failures = 0
            item.last_error = None
        item.last_synced_at = self._clock()
