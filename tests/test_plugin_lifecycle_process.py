"""The plugins' lifecycle in the real daemon process: after a SIGTERM no task, connection or client
of a plugin is left, and a plugin whose `start` fails stops the daemon at startup, by name.

The plugins: the built-in `http-job` running a job on the local job service of
tests/webapi_support.py (its status cache refreshing, its httpx client holding a keep-alive
connection), and tests/lifecycle_plugins/probe.py, which journals its lifecycle in a file and,
from its `aclose`, what is still alive in the process once every other plugin was closed.
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from executor.core import Phase
from executor.core.records import ExecutionRecord
from tests.test_daemon_process import Daemon, daemon_env, executor, poll, read_store
from tests.webapi_support import PLUGINS, JobServer

pytestmark = pytest.mark.process

PROBE = Path(__file__).resolve().parent / "lifecycle_plugins" / "probe.py"


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(PLUGINS / "http_job.py", plugins / "http_job.py")
    shutil.copy(PROBE, plugins / "probe.py")
    return plugins


def journal(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_after_a_sigterm_no_task_connection_or_client_of_a_plugin_is_left(
    sqlite_url: str,
    tmp_path: Path,
    plugins_dir: Path,
    server: JobServer,
    start_daemon: Callable[[dict[str, str]], Daemon],
) -> None:
    server.knobs.complete_after = None  # the job runs on: the cache keeps polling it
    probe_file = tmp_path / "probe.journal"
    env = daemon_env(
        sqlite_url,
        plugins_dir,
        EXECUTOR_PLUGIN_CONFIG=json.dumps({"http-job": {"resync_interval": 0.1}}),
        LIFECYCLE_PROBE_FILE=str(probe_file),
        LIFECYCLE_PROBE_HOLD="1",
    )
    daemon = start_daemon(env)
    daemon.wait_for_log("daemon.started")
    assert journal(probe_file) == ["started", "task running"]  # started before the first round

    submitted = executor(env, tmp_path, "submit", "http-job", "--inputs", json.dumps({"url": server.url}))
    assert submitted.returncode == 0, submitted.stderr
    execution_id = submitted.stdout.strip()

    def running() -> ExecutionRecord | None:
        record, _ = read_store(sqlite_url, execution_id)
        return record if record.phase is Phase.RUNNING else None

    poll("the job to be RUNNING", running, timeout=15)  # RUNNING is what the cache's GET said
    gets = len(server.calls_of("GET"))
    poll("the cache to poll again", lambda: len(server.calls_of("GET")) > gets or None, timeout=10)
    poll("http-job's keep-alive connection", lambda: server.open_connections > 0 or None, timeout=10)

    daemon.process.send_signal(signal.SIGTERM)
    poll("the probe's aclose", lambda: "closing" in journal(probe_file) or None, timeout=20)
    # Every other plugin is closed (the closes run at once) while the daemon still runs: http-job's
    # client hung up, so the service sees no connection, and not because the process died.
    poll("the service to see its connections closed", lambda: server.open_connections == 0 or None, 5)
    assert daemon.process.poll() is None
    (tmp_path / "probe.journal.release").touch()

    assert daemon.wait() == 0
    lines = journal(probe_file)
    assert lines[:4] == ["started", "task running", "task ended", "closing"]  # the task ended first
    tasks = json.loads(lines[4].removeprefix("tasks "))
    assert [name for name in tasks if "plugin" in name or "cache" in name] == []
    assert len(tasks) == 1, tasks  # the daemon's own: nothing a plugin started outlives it
    assert lines[5:] == ["open httpx clients 0", "closed"]
    assert server.connections_opened >= 1
    assert [line["event"] for line in daemon.lines() if line.get("level") == "error"] == []
    record, _ = read_store(sqlite_url, execution_id)
    assert record.phase is Phase.RUNNING and record.lease_owner is None  # handed back, not ended


def test_a_plugin_whose_start_fails_stops_the_daemon_at_startup_naming_it(
    sqlite_url: str, tmp_path: Path, plugins_dir: Path
) -> None:
    (plugins_dir / "start_fails.py").write_text(
        '"""start-fails: cannot start."""\n\n'
        "from executor import plugin_registry\n"
        "from executor.core import PhaseInfo, Plugin, PluginEntry, do_transition\n\n\n"
        "class StartFails(Plugin):\n"
        "    async def handle(self, tctx):\n"
        "        return do_transition(PhaseInfo.success())\n\n"
        "    async def start(self, ctx):\n"
        "        raise ConnectionRefusedError('the licence server is down')\n\n\n"
        "plugin_registry().register_core_plugin(\n"
        "    PluginEntry(id='start-fails', registered_task_types=['x'], load_plugin=lambda s: StartFails())\n"
        ")\n"
    )
    probe_file = tmp_path / "probe.journal"
    env = daemon_env(sqlite_url, plugins_dir, LIFECYCLE_PROBE_FILE=str(probe_file))

    result = executor(env, tmp_path, "run")

    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if line.startswith("executor: ")]
    assert line == (
        "executor: plugins: plugin 'start-fails' failed to start: "
        "ConnectionRefusedError: the licence server is down"
    )
    assert "daemon.started" not in result.stderr
    lines = journal(probe_file)
    assert lines[:3] == ["started", "task running", "task ended"]  # the plugins started before ...
    assert lines[-1] == "closed"  # ... are closed all the same
