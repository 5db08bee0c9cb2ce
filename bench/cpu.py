"""CPU used over a measured interval: the worker process plus the PostgreSQL backends serving it.

Throughput per CPU core used is what compares across machines of other sizes: a queue that keeps
24 backends busy on a 24-core desktop and one that keeps a single backend busy are not the same
thing at the same jobs/s. The figure counts the user and system time (`/proc/<pid>/stat`, utime +
stime) of the worker process (all its threads) and of every backend of the run's database, found by
its process title ("postgres: <cluster>: <user> <database> <host>(<port>) <state>"), between the
two ends of the clock. The server's shared processes (WAL writer, checkpointer, autovacuum) are not
counted, for any subject. This needs the server on this host with its titles visible in /proc; where
none of the database's backends is found the figure is not reported (`CpuUse.seen` is false).

`bench/node/run.js` does the same from inside the Node.js peers.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

#: A process, told apart from a later one with a reused pid by its start time.
Key = tuple[int, str]


@dataclass(frozen=True, slots=True)
class CpuUse:
    """CPU seconds over one run's clock, and how many of the database's backends were seen."""

    worker: float
    backends: float
    backend_count: int

    @property
    def total(self) -> float:
        return self.worker + self.backends

    @property
    def seen(self) -> bool:
        return self.backend_count > 0


def backend_pids(database: str) -> list[int]:
    """The PostgreSQL backends connected to `database`, from their process titles."""
    needle = f" {database} ".encode()
    found = []
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        try:
            title = (PROC / entry.name / "cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"postgres: ") and needle in title.replace(b"\0", b" "):
            found.append(int(entry.name))
    return found


def process_ticks(pids: list[int]) -> dict[Key, int]:
    """utime + stime, in clock ticks, of each of `pids` still alive."""
    ticks: dict[Key, int] = {}
    for pid in pids:
        try:
            stat = (PROC / str(pid) / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks[(pid, fields[19])] = int(fields[11]) + int(fields[12])
    return ticks


class CpuWindow:
    """This process and the backends of `database`, read at `start()` and at each `mark()`.

    `mark()` is cheap (a few /proc reads): call it where the clock may stop, and the last call
    counts. `finish()` adds the backends that connected after `start()` (all their CPU was spent
    since) and returns the use between `start()` and the last `mark()`.
    """

    def __init__(self, database: str) -> None:
        self.database = database
        self.pids: list[int] = []
        self._start: tuple[float, dict[Key, int]] = (0.0, {})
        self._end: tuple[float, dict[Key, int]] | None = None

    def start(self) -> None:
        self.pids = backend_pids(self.database)
        self._start = (time.process_time(), process_ticks(self.pids))

    def mark(self) -> None:
        self._end = (time.process_time(), process_ticks(self.pids))

    def finish(self) -> CpuUse:
        if self._end is None:
            self.mark()
        assert self._end is not None
        worker_end, ends = self._end
        late = [pid for pid in backend_pids(self.database) if pid not in self.pids]
        ends = ends | process_ticks(late)
        worker_start, starts = self._start
        backends = sum(ticks - starts.get(key, 0) for key, ticks in ends.items())
        return CpuUse(worker_end - worker_start, backends / TICKS, len(ends))
