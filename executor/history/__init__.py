"""History: what happens to executions once they have ended.

`retention.py` deletes them when their retention runs out (the daemon's `Pruner`, and
`executor prune`); `requeue.py` decides what a failed or aborted execution looks like when it runs
again (pure); `service.py` is what every door (the CLI, the Python API, HTTP) calls: requeue one
or many, the failures view, pruning by hand; `commands.py` holds the CLI's commands.
"""

from executor.history.retention import Pruner, retention_of
from executor.history.service import History

__all__ = ["History", "Pruner", "retention_of"]
