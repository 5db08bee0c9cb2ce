"""The real daemon, as a process: `python -m executor run`, driven with the CLI and with signals.

Few and short on purpose (each start costs about a second): a crash mid-sleep and a restart that
resumes from the persisted plugin state, on SQLite and on PostgreSQL, ending with a graceful
SIGTERM; and the two ways startup refuses to begin (invalid settings, a broken plugin module).
Every wait is a poll with a deadline, never a sleep that hopes the daemon got there.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from executor.core import Phase
from executor.core.records import EventRecord, ExecutionRecord
from executor.store import Store

pytestmark = pytest.mark.process

BUILTIN_PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
T = TypeVar("T")


def daemon_env(database_url: str, plugins_dir: Path = BUILTIN_PLUGINS, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("EXECUTOR_")}
    env.update(
        EXECUTOR_DATABASE_URL=database_url,
        EXECUTOR_PLUGINS_DIR=str(plugins_dir),
        EXECUTOR_PLUGIN_ENTRY_POINTS="false",
        EXECUTOR_LOG_FORMAT="json",
        EXECUTOR_POLL_INTERVAL="0.2",
        EXECUTOR_HTTP_ADDR="",  # no listening socket: tests must not fight over a port
    )
    env.update(extra)
    return env


def executor(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "executor", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def poll(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T:
    """Call `probe` until it returns something other than None; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Daemon:
    """One `executor run` process, its JSON log lines in a file."""

    def __init__(self, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        with log.open("ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "executor", "run"],
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text().splitlines():
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a traceback: shown by `fail` below
        return found

    def wait_for_log(self, event: str, timeout: float = 20) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            for line in self.lines():
                if line.get("event") == event:
                    return line
            if self.process.poll() is not None:
                self.fail(f"exited with {self.process.returncode} before logging {event}")
            return None

        return poll(f"the daemon to log {event}", probe, timeout)

    def wait(self, timeout: float = 20) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self.fail(f"did not exit within {timeout}s")

    def fail(self, message: str) -> None:
        pytest.fail(f"daemon {message}; its log:\n{self.log.read_text()}")


def read_store(database_url: str, execution_id: str) -> tuple[ExecutionRecord, list[EventRecord]]:
    """The execution and its events, read straight from the store the daemon writes."""

    async def read() -> tuple[ExecutionRecord, list[EventRecord]]:
        store = Store.from_url(database_url)
        try:
            record = await store.get(execution_id)
            assert record is not None
            return record, await store.events(execution_id)
        finally:
            await store.close()

    return asyncio.run(read())


def start_time_of(record: ExecutionRecord) -> float:
    assert record.plugin_state is not None
    return datetime.fromisoformat(json.loads(record.plugin_state)["start_time"]).timestamp()


# -- crash and resume ---------------------------------------------------------------------------


def test_a_killed_daemon_restarts_and_the_sleep_resumes_from_its_persisted_start_time(
    database_url: str, tmp_path: Path, start_daemon: Callable[[dict[str, str]], Daemon]
) -> None:
    # Long enough that the execution is still sleeping when the kill comes, on a loaded machine too.
    duration = 6.0
    env = daemon_env(database_url)
    first = start_daemon(env)
    first.wait_for_log("daemon.started")

    submitted = executor(
        env, tmp_path, "submit", "core-sleep", "--inputs", json.dumps({"duration": f"{duration:g}s"})
    )
    assert submitted.returncode == 0, submitted.stderr
    execution_id = submitted.stdout.strip()

    def running() -> ExecutionRecord | None:
        record, _ = read_store(database_url, execution_id)  # a CLI call per poll costs ~0.5 s
        return record if record.phase is Phase.RUNNING else None

    poll("the execution to be RUNNING", running, timeout=15)
    before, _ = read_store(database_url, execution_id)
    started_at = start_time_of(before)

    first.process.send_signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    crashed, _ = read_store(database_url, execution_id)
    assert crashed.phase is Phase.RUNNING, "the sleep ended before the kill: the test proved nothing"

    second = start_daemon(env)
    second.wait_for_log("daemon.started")

    def finished() -> tuple[ExecutionRecord, list[EventRecord]] | None:
        record, events = read_store(database_url, execution_id)  # cheaper to poll than the CLI
        return (record, events) if record.finalized else None

    after, events = poll("the execution to finish", finished, timeout=duration + 20, interval=0.1)
    shown = executor(env, tmp_path, "get", "--json", execution_id)
    done = json.loads(shown.stdout)
    assert (done["phase"], done["reason"], done["attempt"], done["finalized"]) == ("SUCCESS", None, 1, True)

    assert start_time_of(after) == started_at  # resumed, not restarted
    assert after.plugin_state == before.plugin_state
    assert [event.phase for event in events] == [Phase.QUEUED, Phase.RUNNING, Phase.SUCCESS]
    succeeded_at = events[-1].occurred_at
    # Due at start + duration, as the first daemon stored it; a sleep that started over would
    # end after the restart plus a whole duration.
    assert started_at + duration <= succeeded_at < started_at + 2 * duration

    # And a graceful stop: SIGTERM finishes the round under way and exits 0.
    second.process.send_signal(signal.SIGTERM)
    assert second.wait() == 0
    stopped = second.wait_for_log("daemon.stopped")
    assert stopped["level"] == "info"
    assert second.wait_for_log("daemon.stopping")["signal"] == "SIGTERM"


# -- startup refusals ---------------------------------------------------------------------------


def test_invalid_settings_exit_2_with_one_line_naming_the_variable(sqlite_url: str, tmp_path: Path) -> None:
    result = executor(daemon_env(sqlite_url, EXECUTOR_BATCH_SIZE="abc"), tmp_path, "run")

    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("executor: ")
    assert "EXECUTOR_BATCH_SIZE='abc'" in line
    assert not (tmp_path / "executor.db").exists()  # refused before touching the store


def test_a_plugin_module_with_a_syntax_error_stops_the_daemon_at_startup(
    sqlite_url: str, tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "echo.py").write_text((BUILTIN_PLUGINS / "echo.py").read_text())
    broken = plugins / "broken.py"
    broken.write_text('"""A plugin that does not compile."""\n\n\ndef handle(tctx:\n    return 1\n')

    result = executor(daemon_env(sqlite_url, plugins_dir=plugins), tmp_path, "run")

    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert f"{broken}:4" in line
    assert "SyntaxError" in line


# -- started anywhere -----------------------------------------------------------------------------


def test_started_outside_the_checkout_the_daemon_and_the_cli_know_the_built_ins(
    sqlite_url: str, tmp_path: Path, start_daemon: Callable[[dict[str, str]], Daemon]
) -> None:
    """`make run` installs with `pip install -e .`; started from a directory with no `plugins/`,
    the daemon and the CLI used to know no task type at all."""
    env = daemon_env(sqlite_url)
    del env["EXECUTOR_PLUGINS_DIR"]  # the default: ./plugins, else the built-ins
    assert not (tmp_path / "plugins").exists()
    daemon = start_daemon(env)  # its working directory is tmp_path
    started = daemon.wait_for_log("daemon.started")
    assert {"core-sleep", "echo", "http-job"} <= set(started["task_types"])

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    submitted = executor(env, elsewhere, "submit", "echo", "--inputs", '{"greeting": "hi"}')
    assert submitted.returncode == 0, submitted.stderr
    execution_id = submitted.stdout.strip()

    def finished() -> ExecutionRecord | None:
        record, _ = read_store(sqlite_url, execution_id)
        return record if record.finalized else None

    done = poll("the echo to finish", finished, timeout=20, interval=0.1)
    assert (done.phase, done.outputs) == (Phase.SUCCESS, {"greeting": "hi"})
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.wait() == 0
