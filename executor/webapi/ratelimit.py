"""Token buckets for a plugin's remote calls, with the pause a 429 or `Retry-After` asks for.

One bucket for reads (`get`) and one for writes (`create`, `delete`), per plugin. `handle` never
waits on a bucket: it asks `try_acquire`, and when no token is free it answers the round with the
wait as `requeue_after` (the loop owns the waiting, as in controller-runtime). The background
refresher and `abort`/`finalize`, which must make their call, `acquire` and wait.

Time is `time.monotonic` unless a clock is given (the tests give one).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

Clock = Callable[[], float]

_EPSILON = 1e-9


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; `pause` empties it until a given time."""

    def __init__(self, rate: float, burst: int, *, clock: Clock = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.rate = float(rate)
        self.burst = int(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._paused_until = 0.0
        self._lock = anyio.Lock()

    def _refill(self, now: float) -> None:
        start = max(self._updated, self._paused_until)
        if now > start:
            self._tokens = min(float(self.burst), self._tokens + (now - start) * self.rate)
        self._updated = max(now, self._updated)

    def try_acquire(self) -> float:
        """Take a token now and return 0, or take none and return the seconds until one is free."""
        now = self._clock()
        if now < self._paused_until:
            return self._paused_until - now + (0.0 if self._tokens >= 1 else 1.0 / self.rate)
        self._refill(now)
        if self._tokens >= 1.0 - _EPSILON:  # refills are sums of floats: 0.9999999999999 is a token
            self._tokens = max(self._tokens - 1.0, 0.0)
            return 0.0
        return (1.0 - self._tokens) / self.rate

    async def acquire(self) -> None:
        """Wait for a token. Waiters are served one at a time, in the order they came."""
        async with self._lock:
            # The wait is computed from the bucket, not a condition polled: sleeping it is exact.
            while (wait := self.try_acquire()) > 0:  # noqa: ASYNC110
                await anyio.sleep(wait)

    def pause(self, seconds: float) -> None:
        """The remote said "slow down" (429 / Retry-After): no token for `seconds`, then a trickle.

        The saved-up burst is dropped, so the calls that resume do so at `rate`, not all at once.
        """
        now = self._clock()
        self._refill(now)
        self._tokens = 0.0
        self._paused_until = max(self._paused_until, now + max(seconds, 0.0))

    @property
    def paused_for(self) -> float:
        return max(self._paused_until - self._clock(), 0.0)


class RateLimits:
    """The read and write buckets of one plugin."""

    def __init__(
        self,
        *,
        read_rate: float,
        read_burst: int,
        write_rate: float,
        write_burst: int,
        clock: Clock = time.monotonic,
    ) -> None:
        self.read = TokenBucket(read_rate, read_burst, clock=clock)
        self.write = TokenBucket(write_rate, write_burst, clock=clock)

    def slow_down(self, seconds: float) -> None:
        """A remote that answers 429 to one kind of call is usually overloaded for both."""
        self.read.pause(seconds)
        self.write.pause(seconds)
