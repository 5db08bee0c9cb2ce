"""The README's remote-service plugin (plugins/examples/remote_job.py, a pydantic resource meta,
its types given only as `AsyncPlugin[Meta, Job]`) in the real daemon process, killed mid-job and
started again, against the local job service of tests/webapi_support.py.

The meta is persisted as JSON; the restarted daemon must hand `get`, `status` and `delete` a
`Meta` again, not the dict it read back (issue 11: `'dict' object has no attribute 'job_id'`).
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from executor.core import Phase
from executor.core.records import EventRecord, ExecutionRecord
from tests.test_daemon_process import Daemon, daemon_env, executor, poll, read_store
from tests.webapi_support import EXAMPLES, JobServer

pytestmark = pytest.mark.process

TASK_TYPE = "example-remote-job"
#: How long a job runs on the service: longer than a kill and a restart (about two seconds).
JOB_SECONDS = 5.0


@pytest.fixture
def env(sqlite_url: str, tmp_path: Path) -> dict[str, str]:
    """The example copied into a plugins directory of its own, exactly as the README says to."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(EXAMPLES / "remote_job.py", plugins / "remote_job.py")
    config = {TASK_TYPE: {"resync_interval": 0.2}}
    # A call in flight when the daemon is killed keeps its lease until the TTL: short, so that the
    # restarted daemon does not wait two minutes for an execution the kill caught mid-call.
    return daemon_env(sqlite_url, plugins, EXECUTOR_PLUGIN_CONFIG=json.dumps(config), EXECUTOR_LEASE_TTL="3s")


def submit_and_kill_mid_job(
    env: dict[str, str], tmp_path: Path, server: JobServer, start_daemon: Callable[[dict[str, str]], Daemon]
) -> tuple[str, Daemon]:
    """Submit a job, wait until the daemon says it runs, SIGKILL the daemon, start another one."""
    first = start_daemon(env)
    first.wait_for_log("daemon.started")
    submitted = executor(env, tmp_path, "submit", TASK_TYPE, "--inputs", json.dumps({"url": server.url}))
    assert submitted.returncode == 0, submitted.stderr
    execution_id = submitted.stdout.strip()

    def running() -> ExecutionRecord | None:
        record, _ = read_store(env["EXECUTOR_DATABASE_URL"], execution_id)
        return record if record.phase is Phase.RUNNING else None

    poll("the remote job to be RUNNING", running, timeout=15)
    first.process.send_signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    assert server.live_jobs() == 1, "the job ended before the kill: the test proved nothing"

    second = start_daemon(env)
    second.wait_for_log("daemon.started")
    return execution_id, second


def finished(
    database_url: str, execution_id: str
) -> Callable[[], tuple[ExecutionRecord, list[EventRecord]] | None]:
    def probe() -> tuple[ExecutionRecord, list[EventRecord]] | None:
        record, events = read_store(database_url, execution_id)
        return (record, events) if record.finalized else None

    return probe


def stop(daemon: Daemon) -> None:
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.wait() == 0
    assert [line for line in daemon.lines() if line.get("level") == "error"] == []


def test_a_job_running_across_a_kill_and_restart_ends_success(
    env: dict[str, str], tmp_path: Path, server: JobServer, start_daemon: Callable[[dict[str, str]], Daemon]
) -> None:
    server.knobs.complete_after = JOB_SECONDS
    execution_id, daemon = submit_and_kill_mid_job(env, tmp_path, server, start_daemon)

    record, events = poll(
        "the execution to finish", finished(env["EXECUTOR_DATABASE_URL"], execution_id), timeout=30
    )

    assert (record.phase, record.reason, record.attempt) == (Phase.SUCCESS, None, 1), record.error
    assert record.outputs == {"name": f"{execution_id}-1", "echo": {}}
    assert "RemoteStatusFailed" not in {event.reason for event in events}
    assert len(server.calls_of("POST")) == 1  # resumed, not created again
    assert server.calls_of("DELETE") == []  # it finished on its own: nothing to delete
    stop(daemon)


def test_an_abort_after_a_restart_deletes_the_job_once(
    env: dict[str, str], tmp_path: Path, server: JobServer, start_daemon: Callable[[dict[str, str]], Daemon]
) -> None:
    server.knobs.complete_after = None  # runs until deleted
    execution_id, daemon = submit_and_kill_mid_job(env, tmp_path, server, start_daemon)

    aborted = executor(env, tmp_path, "abort", execution_id)
    assert aborted.returncode == 0, aborted.stderr
    record, _ = poll("the abort to finish", finished(env["EXECUTOR_DATABASE_URL"], execution_id), timeout=30)

    assert record.phase is Phase.ABORTED
    assert len(server.calls_of("DELETE")) == 1
    assert [call.status for call in server.calls_of("DELETE")] == [200]
    assert server.live_jobs() == 0
    stop(daemon)
