"""Local processes that outlive the daemon: start one, find it again after a restart, stop its group.

The machinery every plugin that runs a local command needs, written once (issue 15 counted 106
lines of it in a hand-written plugin):

- Each process runs under a tiny Python wrapper in a session and process group of its own, with
  stdout and stderr appended to one log file. The wrapper waits for the command and writes its
  exit status to a file, because a daemon that restarted is no longer the command's parent and
  cannot `waitpid` for it. The wrapper survives the group's SIGTERM (it only records the end); a
  SIGKILL of the group takes it too, and then there is no exit file.
- `ProcessHandle` is what a plugin keeps in its state to find the process again: its pid, the
  start time the kernel gives that pid (so that a pid reused by another process is never taken
  for ours), the host's boot id (so that a command that died with the host is told apart), and
  the two files.
- Nothing here blocks the event loop for long: starting is a fork and exec (call it through
  `asyncio.to_thread` when that matters), reading `/proc` is a small read, and `terminate` is a
  coroutine that polls between TERM and KILL.

Linux only (`/proc`); the daemon's images are.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel

#: Runs `argv` as its child, waits, writes the exit status (negative: the signal) atomically.
#: A handler, not SIG_IGN, for TERM/INT/HUP: handlers are reset by exec, ignored signals are not,
#: so the command itself still gets the group's TERM. Exit 127: not found; 126: not executable.
WRAPPER = r"""
import os, signal, subprocess, sys
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, lambda *_: None)
exit_file, argv = sys.argv[1], sys.argv[2:]
try:
    code = subprocess.call(argv, stdin=subprocess.DEVNULL)
except FileNotFoundError as err:
    print(f"executor: cannot run {argv[0]!r}: {err.strerror}", file=sys.stderr, flush=True)
    code = 127
except OSError as err:
    print(f"executor: cannot run {argv[0]!r}: {err.strerror}", file=sys.stderr, flush=True)
    code = 126
with open(exit_file + ".tmp", "w") as out:
    out.write(str(code))
    out.flush()
    os.fsync(out.fileno())
os.replace(exit_file + ".tmp", exit_file)
"""

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class ProcessHandle(BaseModel):
    """What finds a started process again, in this daemon or the next (JSON in plugin state)."""

    pid: int
    #: The pid's start time in clock ticks since boot (`/proc/PID/stat` field 22).
    start_ticks: int
    boot_id: str
    log_file: str
    exit_file: str
    #: Wall-clock time it started (seconds since the epoch): for time limits.
    started_at: float


def spawn(
    argv: Sequence[str], *, cwd: str | None, env: Mapping[str, str], log_file: Path, exit_file: Path
) -> tuple[ProcessHandle, subprocess.Popen[bytes]]:
    """Start `argv` under the wrapper, in a new session, its output appended to `log_file`.

    `argv` is passed as a list to exec: no shell ever sees it. The returned `Popen` is this
    daemon's to reap (`poll()` it), so that the wrapper never lingers as a zombie.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        popen = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", WRAPPER, str(exit_file), *argv],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    ticks = start_ticks(popen.pid)
    handle = ProcessHandle(
        pid=popen.pid,
        start_ticks=ticks if ticks is not None else -1,
        boot_id=boot_id(),
        log_file=str(log_file),
        exit_file=str(exit_file),
        started_at=time.time(),
    )
    return handle, popen


def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def start_ticks(pid: int) -> int | None:
    """The start time of `pid`, or None when no such process runs (a zombie counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the command name may hold spaces and ')'
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_running(handle: ProcessHandle) -> bool:
    """True while the wrapper of `handle` (not another process that got its pid) is alive."""
    return handle.boot_id == boot_id() and start_ticks(handle.pid) == handle.start_ticks


def same_boot(handle: ProcessHandle) -> bool:
    return handle.boot_id == boot_id()


def exit_status(handle: ProcessHandle) -> int | None:
    """The command's exit status as the wrapper recorded it; None before it ended (or when the
    wrapper was killed with it). Negative: killed by that signal."""
    try:
        return int(Path(handle.exit_file).read_text().strip())
    except (OSError, ValueError):
        return None


def signal_group(handle: ProcessHandle, sig: signal.Signals) -> bool:
    """Send `sig` to the process's group, only while the wrapper is the process we started."""
    if not is_running(handle):
        return False
    try:
        os.killpg(handle.pid, sig)
    except ProcessLookupError:
        return False
    return True


async def terminate(
    handle: ProcessHandle, grace: float, popen: subprocess.Popen[bytes] | None = None, interval: float = 0.05
) -> bool:
    """TERM the group, then KILL it when the wrapper has not ended within `grace` seconds.

    Returns True when a KILL was needed. Awaits (never blocks) between the two.
    """
    if not signal_group(handle, signal.SIGTERM):
        _reap(popen)
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(popen)
        if not is_running(handle):
            return False
        await asyncio.sleep(interval)
    killed = signal_group(handle, signal.SIGKILL)
    settle = time.monotonic() + 5  # a KILL is delivered asynchronously: see it land (and reap)
    while is_running(handle) and time.monotonic() < settle:
        _reap(popen)
        await asyncio.sleep(interval)
    _reap(popen)
    return killed


def _reap(popen: subprocess.Popen[bytes] | None) -> None:
    if popen is not None:
        popen.poll()


def tail(path: str | Path, max_bytes: int) -> str:
    """The last `max_bytes` of a log file as text, fit for the store (see below)."""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(0, size - max_bytes))
            data = log.read()
    except OSError:
        return ""
    # A cut or invalid character becomes U+FFFD, and so does NUL: PostgreSQL stores no NUL in text.
    return data.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
