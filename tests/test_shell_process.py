"""The `shell` plugin in the real daemon process: declared commands only, their outputs and logs
(CLI and API), abort and time limits that terminate the whole process group, and a daemon
SIGKILLed mid-command that, restarted, follows the command to its real exit code (or says that it
died with its wrapper).

Commands are small Python programs run by this interpreter; they wait on files the test creates,
never on time, so a loaded machine changes how long a test takes, not what it sees.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from executor.core import Phase
from executor.core.records import ExecutionRecord
from tests.http_support import free_port
from tests.test_daemon_process import Daemon, daemon_env, executor, poll, read_store

pytestmark = [pytest.mark.process, pytest.mark.slow]

#: Prints its first argument, waits until the file named by the second exists, exits with the third.
WAIT_THEN_EXIT = (
    "import os, sys, time\n"
    "print('started', sys.argv[1], flush=True)\n"
    "while not os.path.exists(sys.argv[2]):\n"
    "    time.sleep(0.02)\n"
    "print('finishing', sys.argv[1], flush=True)\n"
    "sys.exit(int(sys.argv[3]))\n"
)
#: Starts a grandchild in its group, ignores SIGTERM, writes both pids to the file it is given.
STUBBORN = (
    "import os, signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "with open(sys.argv[1] + '.tmp', 'w') as out: out.write(f'{os.getpid()} {child.pid}')\n"
    "os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "print('stubborn', flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.fixture(autouse=True)
def no_command_left_behind(tmp_path: Path) -> Iterator[None]:
    """Whatever a failing test left running is killed: every group a daemon started here."""
    yield
    for record in (tmp_path / "logs").glob("*/*/process.json"):
        pid = json.loads(record.read_text())["pid"]
        if alive(pid):
            os.killpg(pid, signal.SIGKILL)


def shell_config(tmp_path: Path, **extra: Any) -> str:
    py = sys.executable
    commands = {
        "greet": {"argv": [py, "-c", "import sys; print('hello', sys.argv[1])", "{name}"]},
        "fail": {"argv": [py, "-c", "import sys; print('bad things'); sys.exit(3)"]},
        "wait": {
            "argv": [py, "-c", WAIT_THEN_EXIT, "{label}", "{gate}", "{code}"],
            "defaults": {"code": "0"},
        },
        "stubborn": {"argv": [py, "-c", STUBBORN, "{pids}"]},
        "slow": {
            "argv": [py, "-c", "import time; print('slow', flush=True); time.sleep(600)"],
            "timeout": "1s",
        },
        "where": {
            "argv": [py, "-c", "import os; print(os.getcwd(), os.environ.get('GREETING'))"],
            "cwd": "/",
            "env": {"GREETING": "hi"},
        },
    }
    config = {
        "commands": commands,
        "log_dir": str(tmp_path / "logs"),
        "kill_grace": "0.5s",
        "poll_interval": "0.1s",
        **extra,
    }
    return json.dumps({"shell": config})


def finished(database_url: str, execution_id: str, timeout: float = 30) -> ExecutionRecord:
    def probe() -> ExecutionRecord | None:
        record, _ = read_store(database_url, execution_id)
        return record if record.phase.is_final and record.finalized else None

    return poll(f"execution {execution_id} to finish", probe, timeout)


def submit(env: dict[str, str], cwd: Path, inputs: dict[str, Any], *extra: str) -> str:
    done = executor(env, cwd, "submit", "shell", "--inputs", json.dumps(inputs), *extra)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def running_pid(database_url: str, execution_id: str) -> int:
    def probe() -> int | None:
        record, _ = read_store(database_url, execution_id)
        state = json.loads(record.plugin_state) if record.plugin_state else {}
        return state["process"]["pid"] if record.phase is Phase.RUNNING and state.get("process") else None

    return poll("the command to run", probe, 20)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def test_declared_commands_run_with_outputs_logs_and_limits(
    sqlite_url: str, tmp_path: Path, start_daemon: Callable[[dict[str, str]], Daemon]
) -> None:
    port = free_port()
    env = daemon_env(
        sqlite_url, EXECUTOR_PLUGIN_CONFIG=shell_config(tmp_path), EXECUTOR_HTTP_ADDR=f"127.0.0.1:{port}"
    )
    daemon = start_daemon(env)
    daemon.wait_for_log("http.listening")

    # Refused at submission, by the CLI and the API alike: undeclared, missing or unknown params.
    for inputs, words in (
        ({"command": "rm", "params": {}}, "no command 'rm' is declared"),
        ({"command": "greet"}, "needs the parameters name"),
        ({"command": "greet", "params": {"name": "x", "extra": "y"}}, "takes no parameters extra"),
        ({"command": "greet", "params": {"name": ["a"]}}, "strings or numbers"),
    ):
        refused = executor(env, tmp_path, "submit", "shell", "--inputs", json.dumps(inputs))
        assert refused.returncode == 1 and words in refused.stderr, refused.stderr
        answer = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/executions", json={"task_type": "shell", "inputs": inputs}
        )
        assert answer.status_code == 422 and words in answer.text, answer.text

    greet = submit(env, tmp_path, {"command": "greet", "params": {"name": "world; rm -rf /"}})
    fail = submit(env, tmp_path, {"command": "fail"})
    where = submit(env, tmp_path, {"command": "where"})
    slow = submit(env, tmp_path, {"command": "slow"})
    # The execution's own timeout (not the command's): finalize terminates the group.
    outlived = submit(
        env,
        tmp_path,
        {"command": "wait", "params": {"label": "t", "gate": str(tmp_path / "never")}},
        "--timeout",
        "2s",
    )
    pids = tmp_path / "stubborn.pids"
    stubborn = submit(env, tmp_path, {"command": "stubborn", "params": {"pids": str(pids)}})

    record = finished(sqlite_url, greet)
    assert record.phase is Phase.SUCCESS
    # The parameter reached the command as one argument, never through a shell.
    assert record.outputs == {"exit_code": 0, "output_tail": "hello world; rm -rf /\n"}
    logs = executor(env, tmp_path, "logs", greet)
    assert logs.returncode == 0 and logs.stdout == "hello world; rm -rf /\n", logs.stderr
    served = httpx.get(f"http://127.0.0.1:{port}/api/v1/executions/{greet}/logs", params={"offset": 6})
    assert served.status_code == 200 and served.text == "world; rm -rf /\n"
    assert served.headers["X-Log-Offset"] == str(len("hello world; rm -rf /\n"))
    _, events = read_store(sqlite_url, greet)
    links = [log for event in events if event.info for log in event.info["logs"]]
    assert {"name": "output", "uri": f"/api/v1/executions/{greet}/logs"} in links

    record = finished(sqlite_url, fail)
    assert record.phase is Phase.PERMANENT_FAILURE
    assert record.error is not None
    error = record.error
    assert "CommandFailed: " in error.message and "exited with 3" in error.message
    assert "bad things" in error.message

    record = finished(sqlite_url, where)
    assert record.outputs["output_tail"] == "/ hi\n"

    # The command's own time limit: the group is terminated and the attempt fails saying why.
    record = finished(sqlite_url, slow)
    assert record.error is not None
    error = record.error
    assert "TimeoutExpired: " in error.message and "slow" in error.message, error
    slow_pid = json.loads(record.plugin_state or "{}")["process"]["pid"]
    poll("the timed-out command to be gone", lambda: True if not alive(slow_pid) else None, 10)

    record = finished(sqlite_url, outlived)
    assert record.phase is Phase.PERMANENT_FAILURE and record.error is not None
    outlived_pid = json.loads(record.plugin_state or "{}")["process"]["pid"]
    poll(
        "the command that outlived its execution to be gone",
        lambda: True if not alive(outlived_pid) else None,
        10,
    )

    # Abort: TERM is ignored by the command, so KILL follows after the grace; its grandchild too.
    running_pid(sqlite_url, stubborn)
    poll("the stubborn command to write its pids", lambda: pids.exists() or None, 20)
    command_pid, grandchild_pid = map(int, pids.read_text().split())
    aborted = executor(env, tmp_path, "abort", stubborn)
    assert aborted.returncode == 0, aborted.stderr
    assert finished(sqlite_url, stubborn).phase is Phase.ABORTED
    poll(
        "the aborted group to be gone",
        lambda: True if not alive(command_pid) and not alive(grandchild_pid) else None,
        10,
    )

    missing = executor(env, tmp_path, "logs", "no-such-id")
    assert missing.returncode == 1 and "no execution" in missing.stderr

    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.wait() == 0


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_restarted_daemon_follows_the_command_to_its_exit_code(
    database_url: str, tmp_path: Path, start_daemon: Callable[[dict[str, str]], Daemon]
) -> None:
    env = daemon_env(database_url, EXECUTOR_PLUGIN_CONFIG=shell_config(tmp_path), EXECUTOR_LEASE_TTL="3s")
    first = start_daemon(env)
    first.wait_for_log("daemon.started")
    gate = tmp_path / "gate"
    follows = submit(
        env, tmp_path, {"command": "wait", "params": {"label": "a", "gate": str(gate), "code": 7}}
    )
    lost = submit(
        env, tmp_path, {"command": "wait", "params": {"label": "b", "gate": str(tmp_path / "never")}}
    )
    follows_pid = running_pid(database_url, follows)
    lost_pid = running_pid(database_url, lost)

    first.process.send_signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    assert alive(follows_pid) and alive(lost_pid), "the commands must outlive the daemon"
    os.killpg(lost_pid, signal.SIGKILL)  # the command and its wrapper die while no daemon watches

    second = start_daemon(env)
    second.wait_for_log("daemon.started")
    # `executor logs --follow` prints what the command writes until the execution ends.
    follow = executor_background(env, tmp_path, "logs", follows, "--follow", "--interval", "0.1")
    gate.touch()
    record = finished(database_url, follows)
    assert record.phase is Phase.PERMANENT_FAILURE
    assert record.error is not None
    error = record.error
    assert "CommandFailed: " in error.message and "exited with 7" in error.message, error
    assert record.outputs == {"exit_code": 7, "output_tail": "started a\nfinishing a\n"}
    out, _ = follow.communicate(timeout=30)
    assert follow.returncode == 0 and out == "started a\nfinishing a\n"

    record = finished(database_url, lost)
    assert record.error is not None
    error = record.error
    assert error.code == "ProcessLost" and "before it could record an exit code" in error.message
    assert error.kind == "SYSTEM"

    second.process.send_signal(signal.SIGTERM)
    assert second.wait() == 0


def executor_background(env: dict[str, str], cwd: Path, *args: str) -> Any:
    import subprocess

    return subprocess.Popen(
        [sys.executable, "-m", "executor", *args], env=env, cwd=cwd, stdout=subprocess.PIPE, text=True
    )
