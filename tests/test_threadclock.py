"""`executor.threadclock`: where a thread's time went. A sleep is time blocked, not on a CPU; a busy
loop is time on a CPU. Starvation (run-queue wait) is made deterministically by the daemon-process
test (tests/test_loop_diagnostics_process.py)."""

from __future__ import annotations

import time

from executor import threadclock


def measure(work: object) -> threadclock.Spent:
    before = threadclock.snapshot()
    started = time.perf_counter()
    assert callable(work)
    work()
    return threadclock.spent(before, time.perf_counter() - started)


def test_a_sleep_is_time_blocked_not_on_a_cpu() -> None:
    spent = measure(lambda: time.sleep(0.05))
    assert spent.wall >= 0.05
    assert spent.cpu < 0.02
    # Whatever part of it the thread waited for a CPU after waking, the rest it held, blocked.
    assert spent.held == max(spent.wall - spent.waiting, spent.cpu)
    assert spent.blocked >= 0.05 - spent.waiting - spent.cpu - 1e-6


def test_a_busy_loop_is_time_on_a_cpu() -> None:
    def burn() -> None:
        until = time.thread_time() + 0.05
        while time.thread_time() < until:
            pass

    spent = measure(burn)
    assert spent.cpu >= 0.05
    assert spent.held >= spent.cpu  # time on a CPU is never taken for waiting
