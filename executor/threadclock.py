"""Where the calling thread's time went: on a CPU, waiting for one, or neither (blocked).

The loop's diagnostics must tell a plugin that holds the event loop from a process that was not
scheduled (issue 21: under a load average of 6, a plugin whose only synchronous work was a
100-byte file write was blamed for 0.1 s, and the loop "lagged" while nothing blocked it). The
wall time of a step cannot tell them apart; Linux's per-thread scheduler statistics can:
`/proc/thread-self/schedstat` holds the thread's CPU time (the clock `time.thread_time` reads) and
its run-queue wait, the time it was runnable but not running. What is left of the wall time is
time the thread spent blocked in a call it made (`time.sleep`, synchronous I/O, a lock) or
stopped (SIGSTOP; the kernel counts that as neither).

So the time a step *held* the thread is its wall time less its run-queue wait: a plugin is named
only when that exceeds the limit; a step that was slow only because it waited for a CPU is
starvation, reported as such. Where the file is missing (not Linux), the run-queue wait is unknown
and counted as zero: the step is judged on its wall time, as before.

Reading is one `pread` of a file kept open per thread (about a microsecond, its text parsed only
for a step found slow); it imports nothing of executor, so the loop and the HTTP edge share it.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

_SCHEDSTAT = "/proc/thread-self/schedstat"


class _PerThread(threading.local):
    fd: int | None = None
    missing = False


_local = _PerThread()


def snapshot() -> bytes | float:
    """The calling thread's raw scheduler statistics, or its CPU time where there are none."""
    local = _local
    fd = local.fd
    if fd is None:
        if local.missing:
            return time.thread_time()
        try:
            fd = local.fd = os.open(_SCHEDSTAT, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            local.missing = True
            return time.thread_time()
    return os.pread(fd, 96, 0)


@dataclass(frozen=True, slots=True)
class Spent:
    """Where the calling thread's time went between two snapshots."""

    wall: float
    #: On a CPU.
    cpu: float
    #: Runnable, waiting for a CPU (0.0 where the platform does not say).
    waiting: float

    @property
    def held(self) -> float:
        """The wall time less the run-queue wait: running, or blocked in a call it made (never less
        than the CPU time: the statistics are read just outside the wall clock's interval)."""
        return max(self.wall - self.waiting, self.cpu)

    @property
    def blocked(self) -> float:
        """Neither running nor waiting for a CPU: sleeping or waiting in a system call (or stopped)."""
        return max(self.wall - self.waiting - self.cpu, 0.0)


def spent(before: bytes | float, wall: float) -> Spent:
    """What the calling thread did since `before` (a `snapshot`), over `wall` seconds."""
    if isinstance(before, float):
        return Spent(wall, max(time.thread_time() - before, 0.0), 0.0)
    after = snapshot()
    if isinstance(after, float):  # the file went away meanwhile: nothing to compare
        return Spent(wall, 0.0, 0.0)
    cpu_before, wait_before = _parse(before)
    cpu_after, wait_after = _parse(after)
    return Spent(wall, max(cpu_after - cpu_before, 0.0), max(wait_after - wait_before, 0.0))


def _parse(raw: bytes) -> tuple[float, float]:
    """(CPU seconds, run-queue wait seconds) from schedstat's "<cpu ns> <wait ns> <slices>"."""
    fields = raw.split()
    return int(fields[0]) / 1e9, int(fields[1]) / 1e9
