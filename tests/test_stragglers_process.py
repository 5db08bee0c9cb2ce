"""No execution waits for another (issue 12), with the real daemon as a process: SIGKILL and
SIGTERM while a slow call is in flight, and two replicas on PostgreSQL where the one holding the
slow call dies. The slow call is `tests/plugins/gated.py`, held until the test creates its gate.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from executor.core import Phase
from tests.test_daemon_process import BUILTIN_PLUGINS, Daemon, daemon_env, executor, poll, read_store

pytestmark = pytest.mark.process


GATED_PLUGIN = Path(__file__).resolve().parent / "plugins" / "gated.py"


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    """The built-in plugins and the gated one, as a deployment's plugins directory."""
    directory = tmp_path / "plugins"
    directory.mkdir()
    for path in [*BUILTIN_PLUGINS.glob("*.py"), GATED_PLUGIN]:
        shutil.copyfile(path, directory / path.name)
    return directory


class Gate:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "gate"
        self.log = directory / "gate.log"
        self.log.touch()

    def inputs(self, wait_in: str = "handle") -> str:
        return json.dumps({"gate": str(self.path), "log": str(self.log), "wait_in": wait_in})

    def open(self) -> None:
        self.path.touch()

    def calls(self) -> list[str]:
        return [line.split()[0] for line in self.log.read_text().splitlines()]


def submit(env: dict[str, str], cwd: Path, task_type: str, inputs: str) -> str:
    result = executor(env, cwd, "submit", task_type, "--inputs", inputs)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 20) -> None:
    poll(what, lambda: True if condition() else None, timeout)


def is_finalized(database_url: str, execution_id: str) -> bool:
    return read_store(database_url, execution_id)[0].finalized


@pytest.mark.parametrize("task_type", ["gated", "gated-blocking"])
def test_sigkill_with_a_slow_call_in_flight_runs_it_again_once_the_lease_expires(
    database_url: str,
    tmp_path: Path,
    plugins_dir: Path,
    start_daemon: Callable[[dict[str, str]], Daemon],
    task_type: str,
) -> None:
    env = daemon_env(
        database_url, plugins_dir, EXECUTOR_LEASE_TTL="2s", EXECUTOR_LEASE_RENEW_INTERVAL="500ms"
    )
    gate = Gate(tmp_path)
    first = start_daemon(env)
    first.wait_for_log("daemon.started")
    slow = submit(env, tmp_path, task_type, gate.inputs())
    fast = submit(env, tmp_path, "echo", "{}")
    wait_until("the slow call to start", lambda: gate.calls() == ["handle"])
    wait_until("the fast execution to finish", lambda: is_finalized(database_url, fast))

    first.process.send_signal(signal.SIGKILL)
    first.wait()
    gate.open()
    second = start_daemon(env)
    second.wait_for_log("daemon.started")
    wait_until("the slow execution to finish", lambda: is_finalized(database_url, slow), timeout=30)

    record, events = read_store(database_url, slow)
    assert record.phase is Phase.SUCCESS
    assert gate.calls().count("handle") == 2  # the killed call's outcome was never committed
    assert [event.phase for event in events] == [Phase.QUEUED, Phase.SUCCESS]  # one set of events
    second.process.send_signal(signal.SIGTERM)
    assert second.wait() == 0


def test_sigterm_lets_a_call_in_flight_finish_within_the_grace(
    database_url: str, tmp_path: Path, plugins_dir: Path, start_daemon: Callable[[dict[str, str]], Daemon]
) -> None:
    env = daemon_env(database_url, plugins_dir, EXECUTOR_SHUTDOWN_GRACE="20s")
    gate = Gate(tmp_path)
    daemon = start_daemon(env)
    daemon.wait_for_log("daemon.started")
    slow = submit(env, tmp_path, "gated", gate.inputs())
    wait_until("the slow call to start", lambda: gate.calls() == ["handle"])

    daemon.process.send_signal(signal.SIGTERM)
    daemon.wait_for_log("daemon.stopping")
    assert daemon.process.poll() is None, "the daemon left before its call in flight returned"
    gate.open()
    assert daemon.wait() == 0

    record, _ = read_store(database_url, slow)
    assert (record.phase, record.finalized) == (Phase.SUCCESS, True)
    assert gate.calls() == ["handle", "handle-done", "finalize"]


def test_sigterm_cancels_a_call_past_the_grace_and_hands_its_lease_back(
    database_url: str, tmp_path: Path, plugins_dir: Path, start_daemon: Callable[[dict[str, str]], Daemon]
) -> None:
    env = daemon_env(database_url, plugins_dir, EXECUTOR_SHUTDOWN_GRACE="1s")
    gate = Gate(tmp_path)
    daemon = start_daemon(env)
    daemon.wait_for_log("daemon.started")
    slow = submit(env, tmp_path, "gated", gate.inputs())
    wait_until("the slow call to start", lambda: gate.calls() == ["handle"])

    started = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.wait() == 0
    assert time.monotonic() - started < 10

    record, events = read_store(database_url, slow)
    assert record.phase is Phase.QUEUED and not record.finalized
    assert record.lease_owner is None, "the lease was not handed back: another replica waits the TTL"
    assert [event.phase for event in events] == [Phase.QUEUED]
    assert gate.calls() == ["handle", "handle-cancelled"]

    gate.open()
    again = start_daemon(env)
    wait_until("the execution to run again at once", lambda: is_finalized(database_url, slow), timeout=15)
    assert read_store(database_url, slow)[0].phase is Phase.SUCCESS
    again.process.send_signal(signal.SIGTERM)
    assert again.wait() == 0


@pytest.mark.postgres
def test_two_replicas_the_one_holding_a_slow_call_is_killed_and_the_other_finishes_it(
    postgres_url: str, tmp_path: Path, plugins_dir: Path, start_daemon: Callable[[dict[str, str]], Daemon]
) -> None:
    # The handle timeout is far off: on a loaded machine the five CLI submissions below took more
    # than the default 30 s, and the holder timed its call out before it was killed.
    common: dict[str, Any] = {
        "EXECUTOR_LEASE_TTL": "2s",
        "EXECUTOR_LEASE_RENEW_INTERVAL": "500ms",
        "EXECUTOR_HANDLE_TIMEOUT": "10m",
    }
    replicas = {
        name: start_daemon(daemon_env(postgres_url, plugins_dir, EXECUTOR_REPLICA_ID=name, **common))
        for name in ("one", "two")
    }
    for replica in replicas.values():
        replica.wait_for_log("daemon.started")
    env = daemon_env(postgres_url, plugins_dir)
    gate = Gate(tmp_path)
    slow = submit(env, tmp_path, "gated", gate.inputs())
    wait_until("the slow call to start", lambda: gate.calls() == ["handle"])
    holder = read_store(postgres_url, slow)[0].lease_owner
    assert holder in replicas
    fast = [submit(env, tmp_path, "echo", json.dumps({"i": i})) for i in range(5)]
    wait_until("the fast ones to finish", lambda: all(is_finalized(postgres_url, f) for f in fast))

    replicas[holder].process.send_signal(signal.SIGKILL)
    replicas[holder].wait()
    gate.open()
    wait_until("the survivor to finish it", lambda: is_finalized(postgres_url, slow), timeout=30)

    record, events = read_store(postgres_url, slow)
    assert record.phase is Phase.SUCCESS
    assert [event.phase for event in events] == [Phase.QUEUED, Phase.SUCCESS]
    assert gate.calls().count("handle") == 2
    [survivor] = [replica for name, replica in replicas.items() if name != holder]
    survivor.process.send_signal(signal.SIGTERM)
    assert survivor.wait() == 0
