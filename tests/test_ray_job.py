"""`ray-job` (plugins/ray_job.py) in the real daemon process against a real Ray head on this machine.

The head is started once for the module (`ray start --head --block`, dashboard and job server on
loopback, usage reporting off, every port chosen free) in a session of its own, and every process
of that session is killed at the end: nothing else on the machine is touched (never `ray stop`,
which stops every Ray on the host). Ray comes from the `ray` extra that `make setup` installs.

Jobs wait on files the test creates, never on time. Slow: Ray takes seconds to start and each job
a second or two to set up its driver.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
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

RAY = Path(sys.executable).parent / "ray"


def _session_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2 :].split()[3])


def _kill_session(session: int) -> None:
    """SIGKILL every process of `session` (Ray's workers make groups of their own, not sessions)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _session_of(int(entry.name)) == session:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """The URL of a Ray head's dashboard (its job REST API) started for this module."""
    if not RAY.exists():
        if os.environ.get("CI"):
            pytest.fail(f"Ray is not installed ({RAY} missing): `make setup` installs the `ray` extra")
        pytest.skip("Ray is not installed (pip install -e '.[ray]')")
    temp = tempfile.mkdtemp(prefix="rayt", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    dashboard = free_port()
    ports = [
        f"--port={free_port()}",
        f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
    ]
    low = 20000 + (os.getpid() % 400) * 100
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    log = open(Path(temp) / "ray-start.log", "wb")  # noqa: SIM115 (closed at teardown)
    head = subprocess.Popen(
        [
            str(RAY),
            "start",
            "--head",
            "--block",
            "--num-cpus=2",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            "--node-ip-address=127.0.0.1",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
            f"--min-worker-port={low}",
            f"--max-worker-port={low + 99}",
            *ports,
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/api/jobs/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"the Ray head did not start: {(Path(temp) / 'ray-start.log').read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        head.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(20)
        _kill_session(head.pid)
        head.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def finished(database_url: str, execution_id: str, timeout: float = 90) -> ExecutionRecord:
    def probe() -> ExecutionRecord | None:
        record, _ = read_store(database_url, execution_id)
        return record if record.phase.is_final and record.finalized else None

    return poll(f"execution {execution_id} to finish", probe, timeout, interval=0.2)


def phase_is(database_url: str, execution_id: str, phase: Phase) -> Callable[[], ExecutionRecord | None]:
    def probe() -> ExecutionRecord | None:
        record, _ = read_store(database_url, execution_id)
        return record if record.phase is phase else None

    return probe


def submit(env: dict[str, str], cwd: Path, inputs: dict[str, Any]) -> str:
    done = executor(env, cwd, "submit", "ray-job", "--inputs", json.dumps(inputs))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def python(code: str) -> str:
    """An entrypoint running `code` with this interpreter (Ray runs entrypoints through a shell)."""
    return f"{sys.executable} -c {shlex.quote(code)}"


def gated(gate: Path, then: str) -> str:
    return python(f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.05)\n{then}")


def jobs_of(url: str, execution_id: str) -> list[dict[str, Any]]:
    jobs = httpx.get(f"{url}/api/jobs/", timeout=10).json()
    return [job for job in jobs if (job.get("metadata") or {}).get("executor_execution_id") == execution_id]


def ray_env(database_url: str, url: str) -> dict[str, str]:
    config = {"ray-job": {"address": url, "resync_interval": 0.2}}
    return daemon_env(database_url, EXECUTOR_PLUGIN_CONFIG=json.dumps(config), EXECUTOR_LEASE_TTL="3s")


def test_ray_jobs_succeed_fail_and_stop(
    ray_head: str, sqlite_url: str, tmp_path: Path, start_daemon: Callable[[dict[str, str]], Daemon]
) -> None:
    env = ray_env(sqlite_url, ray_head)
    daemon = start_daemon(env)
    daemon.wait_for_log("daemon.started")

    refused = executor(env, tmp_path, "submit", "ray-job", "--inputs", json.dumps({"entrypoint": ""}))
    assert refused.returncode == 1 and "entrypoint" in refused.stderr, refused.stderr

    ok = submit(env, tmp_path, {"entrypoint": python("print('ray says', 6 * 7)"), "metadata": {"k": "v"}})
    bad = submit(env, tmp_path, {"entrypoint": python("import sys; print('oops'); sys.exit(3)")})
    gate = tmp_path / "never"
    stopped = submit(env, tmp_path, {"entrypoint": gated(gate, "print('unreachable')")})

    record = finished(sqlite_url, ok)
    assert record.phase is Phase.SUCCESS, record.error
    assert record.outputs is not None and record.outputs["status"] == "SUCCEEDED"
    assert "ray says 42" in record.outputs["output_tail"]
    (job,) = jobs_of(ray_head, ok)
    assert job["submission_id"] == record.outputs["submission_id"] and job["metadata"]["k"] == "v"
    _, events = read_store(sqlite_url, ok)
    links = [log["uri"] for event in events if event.info for log in event.info["logs"]]
    assert f"{ray_head}/#/jobs/{job['submission_id']}" in links

    record = finished(sqlite_url, bad)
    assert record.phase is Phase.PERMANENT_FAILURE and record.error is not None
    assert "RayJobFailed" in record.error.message and "oops" in record.error.message, record.error

    poll("the gated job to run", phase_is(sqlite_url, stopped, Phase.RUNNING), 90, interval=0.2)
    aborted = executor(env, tmp_path, "abort", stopped)
    assert aborted.returncode == 0, aborted.stderr
    record = finished(sqlite_url, stopped)
    assert record.phase is Phase.ABORTED, record.error
    # Ray itself says the job was stopped (it may take it a moment).
    poll(
        "Ray to report the job STOPPED",
        lambda: jobs_of(ray_head, stopped)[0]["status"] == "STOPPED" or None,
        60,
    )

    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_a_ray_job_survives_a_daemon_sigkill(
    ray_head: str, sqlite_url: str, tmp_path: Path, start_daemon: Callable[[dict[str, str]], Daemon]
) -> None:
    env = ray_env(sqlite_url, ray_head)
    first = start_daemon(env)
    first.wait_for_log("daemon.started")
    gate = tmp_path / "gate"
    execution_id = submit(env, tmp_path, {"entrypoint": gated(gate, "print('after the restart')")})
    poll("the job to run", phase_is(sqlite_url, execution_id, Phase.RUNNING), 90, interval=0.2)
    first.process.send_signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL

    second = start_daemon(env)
    second.wait_for_log("daemon.started")
    gate.touch()
    record = finished(sqlite_url, execution_id)
    assert record.phase is Phase.SUCCESS, record.error
    assert record.outputs is not None and "after the restart" in record.outputs["output_tail"]
    assert len(jobs_of(ray_head, execution_id)) == 1, "a restart must never submit a second job"
    second.process.send_signal(signal.SIGTERM)
    assert second.wait() == 0
