"""Honest loop diagnostics (issue 21), with the real daemon as a process: a plugin that holds the
event loop is named; a step that was slow only because the process waited for a CPU names no
plugin and is reported as starvation. The plugins are `tests/plugins/loop_diagnostics.py`.

Starvation is made, not hoped for: the test keeps a busy process on one CPU and the plugin's step
runs its short CPU work pinned to that CPU at the lowest priority, so its wall time is many times
its CPU time whatever else the machine does. It needs Linux's per-thread scheduler statistics.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from executor.core import Phase
from tests.test_daemon_process import BUILTIN_PLUGINS, Daemon, daemon_env, executor, poll, read_store

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(not Path("/proc/thread-self/schedstat").exists(), reason="needs Linux schedstat"),
]

PLUGIN = Path(__file__).resolve().parent / "plugins" / "loop_diagnostics.py"


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "plugins"
    directory.mkdir()
    for path in [*BUILTIN_PLUGINS.glob("*.py"), PLUGIN]:
        shutil.copyfile(path, directory / path.name)
    return directory


@pytest.fixture
def hog() -> Iterator[Callable[[], int]]:
    """Starts a process spinning on one CPU (the last this test may use) until the test ends, and
    returns that CPU. Started only once the daemon runs, whose start it would slow down."""
    spinning: list[subprocess.Popen[bytes]] = []

    def start() -> int:
        cpu = max(os.sched_getaffinity(0))
        code = f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"
        spinning.append(subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL))
        return cpu

    try:
        yield start
    finally:
        for process in spinning:
            process.kill()
            process.wait()


def handled(
    database_url: str,
    tmp_path: Path,
    plugins_dir: Path,
    start_daemon: Callable[[dict[str, str]], Daemon],
    task_type: str,
    inputs: Callable[[], dict[str, Any]],
) -> Daemon:
    """Run one `task_type` execution through a fresh daemon, with the `inputs` made once it has
    started; the daemon, once the execution succeeded."""
    env = daemon_env(database_url, plugins_dir)
    daemon = start_daemon(env)
    daemon.wait_for_log("daemon.started", timeout=60)
    result = executor(env, tmp_path, "submit", task_type, "--inputs", json.dumps(inputs()))
    assert result.returncode == 0, result.stderr
    execution_id = result.stdout.strip()

    def succeeded() -> bool | None:
        return True if read_store(database_url, execution_id)[0].phase is Phase.SUCCESS else None

    poll(f"{task_type} to succeed", succeeded, 60)
    return daemon


def events(daemon: Daemon, name: str) -> list[dict[str, Any]]:
    return [line for line in daemon.lines() if line.get("event") == name]


def test_a_plugin_that_sleeps_on_the_loop_is_named(
    database_url: str, tmp_path: Path, plugins_dir: Path, start_daemon: Callable[[dict[str, str]], Daemon]
) -> None:
    daemon = handled(
        database_url, tmp_path, plugins_dir, start_daemon, "sleeps-on-loop", lambda: {"seconds": 0.3}
    )
    [warning] = events(daemon, "plugin.blocked_event_loop")
    assert warning["plugin"] == "sleeps-on-loop"
    # It held the thread, off the CPU: blocked in a call it made, not busy and not waiting for a CPU.
    assert warning["seconds"] >= 0.25
    assert warning["blocked_seconds"] >= 0.25
    assert warning["cpu_seconds"] < 0.1
    assert not events(daemon, "event_loop.starved")


def test_a_step_that_waited_for_a_cpu_names_no_plugin(
    database_url: str,
    tmp_path: Path,
    plugins_dir: Path,
    start_daemon: Callable[[dict[str, str]], Daemon],
    hog: Callable[[], int],
) -> None:
    def inputs() -> dict[str, Any]:
        return {"cpu": hog(), "cpu_seconds": 0.005}

    daemon = handled(database_url, tmp_path, plugins_dir, start_daemon, "starved-step", inputs)
    assert not events(daemon, "plugin.blocked_event_loop")
    [starved] = events(daemon, "event_loop.starved")
    # The step took long (over the 0.1 s limit) but held the thread for less than the limit.
    assert starved["seconds"] > 0.1
    assert starved["held_seconds"] < 0.1
    assert starved["waiting_for_cpu_seconds"] > starved["held_seconds"]
    assert "plugin" not in starved
