"""An execution's local log file, for `executor logs`, the API and the dashboard.

The convention is one key: a plugin whose work writes a log file on the daemon's host keeps the
file's absolute path as `log_path` at the top of its plugin state (the `shell` plugin does). The
doors read it from there, so they need to know nothing of the plugin. The file is on the host that
runs the work: the API of the daemon there can serve it, a CLI on another host cannot.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from executor.core.records import ExecutionRecord

#: The plugin-state key that holds the log file's path.
LOG_PATH_KEY = "log_path"
#: The most one read returns; a follower asks again from the offset it got.
MAX_CHUNK = 1024 * 1024


class NoLogError(Exception):
    """The execution has no log file (yet, or its plugin keeps none), or it is not on this host."""


@dataclass(frozen=True, slots=True)
class LogChunk:
    data: bytes
    #: Where the next read starts.
    next_offset: int
    #: The file's size when it was read.
    size: int


def log_path(record: ExecutionRecord) -> Path:
    """The log file `record`'s plugin state names; `NoLogError` when it names none."""
    try:
        state = json.loads(record.plugin_state) if record.plugin_state else None
    except ValueError:
        state = None
    path = state.get(LOG_PATH_KEY) if isinstance(state, dict) else None
    if not isinstance(path, str) or not path:
        raise NoLogError(
            f"execution {record.id} has no log file (its plugin keeps none, or it has not started yet)"
        )
    return Path(path)


def read_log(path: Path, offset: int = 0, limit: int = MAX_CHUNK) -> LogChunk:
    """Up to `limit` bytes of `path` from `offset` (a negative offset counts from the end)."""
    try:
        with path.open("rb") as log:
            size = os.fstat(log.fileno()).st_size
            start = max(0, size + offset) if offset < 0 else min(offset, size)
            log.seek(start)
            data = log.read(max(0, min(limit, MAX_CHUNK)))
    except FileNotFoundError:
        raise NoLogError(f"the log file {path} is not on this host (or was removed)") from None
    except OSError as err:
        raise NoLogError(f"the log file {path} cannot be read: {err.strerror}") from None
    return LogChunk(data=data, next_offset=start + len(data), size=size)
