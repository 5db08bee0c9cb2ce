"""`Coalescer`, the rule between PostgreSQL's notifications and the loop's wake-ups (issue 21): each
wake-up at once under a light load (a submission is picked up the moment it commits), at most one
per `min_interval` under a storm. Driven with a clock of the test's own, so no timing is hoped for;
tests/test_replicas.py sends a real storm through a real listener."""

from __future__ import annotations

import pytest

from executor.store.notify import Coalescer

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_stream_of_200_a_second_wakes_the_loop_at_once_every_time() -> None:
    clock, woken = Clock(), []
    coalescer = Coalescer(lambda: woken.append(clock.now), clock=clock)
    for number in range(1, 1001):
        clock.now += 0.005
        coalescer()
        assert len(woken) == number  # passed on synchronously, within the notification's callback
    assert not coalescer.under_load


async def test_a_storm_is_coalesced_and_a_quiet_spell_ends_it() -> None:
    clock, woken = Clock(), []
    coalescer = Coalescer(lambda: woken.append(clock.now), min_interval=0.05, clock=clock)
    try:
        for _ in range(2000):
            clock.now += 0.0001  # 10,000 a second
            coalescer()
        assert coalescer.under_load
        assert coalescer.received == 2000
        # The first few dozen passed before the rate was known; then one wake-up is pending at most.
        assert len(woken) < 100
        coalescer.cancel()

        clock.now += 1.0  # the storm is over
        before = len(woken)
        coalescer()
        assert not coalescer.under_load
        assert len(woken) == before + 1
    finally:
        coalescer.cancel()


async def test_a_short_burst_in_a_light_stream_does_not_start_coalescing() -> None:
    """Ten submissions at once (a batch from one client) in a stream of 100 a second."""
    clock, woken = Clock(), []
    coalescer = Coalescer(lambda: woken.append(clock.now), clock=clock)
    for second in range(3):
        for _ in range(90):
            clock.now += 0.01
            coalescer()
        for _ in range(10):
            clock.now += 0.00001
            coalescer()
        assert not coalescer.under_load, second
    assert len(woken) == coalescer.received == 300
