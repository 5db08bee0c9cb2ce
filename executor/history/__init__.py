"""History: what happens to executions once they have ended.

`retention.py` deletes them when their retention runs out (the daemon's `Pruner`, and
`executor prune`); `requeue.py` decides what a failed or aborted execution looks like when it runs
again (pure); `service.py` is what every door (the CLI, the Python API, HTTP) calls: requeue one
or many, the failures view, pruning by hand; `commands.py` holds the CLI's commands.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from executor.history.retention import Pruner, retention_of
    from executor.history.service import History

__all__ = ["History", "Pruner", "retention_of"]

#: Imported on first use: `executor.history.commands` is imported by every command line, which must
#: not pay for the service and the store when it runs `executor --help` (tests/test_cli_speed.py).
_LAZY = {
    "History": "executor.history.service",
    "Pruner": "executor.history.retention",
    "retention_of": "executor.history.retention",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'executor.history' has no attribute {name!r}")
