"""The runtime: the reconciliation loop, in parts.

    loop.py       run / stop / idle wait / back-off on store errors      (`Reconciler`, the entry point)
    round.py      one round: claim -> outcomes -> lifecycle -> commit -> clean-up
    invoker.py    starting and stepping plugin calls, deadlines, blocked-loop detection
    outcome.py    what a `handle` returned, checked and scrubbed (pure)
    cleanup.py    `abort` and `finalize` of every attempt that ended
    committer.py  the commit of a round: inline (SQLite) or pipelined (PostgreSQL)
    context.py    the context each plugin call gets
    leases.py     the leases of the rounds under way, handed back when a round never commits
    observer.py   what the loop reports (metrics hang off it)

Only this package, `loop` and `observer` are imported from outside (import-linter keeps it so).
"""

from executor.runtime.loop import Reconciler
from executor.runtime.observer import NullObserver, RoundObserver, RoundStats

__all__ = ["NullObserver", "Reconciler", "RoundObserver", "RoundStats"]
