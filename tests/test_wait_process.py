"""Waiting, with the real daemon process (`executor run`) and the real CLI, on both stores.

1,000 waiters of one process, registered while no daemon runs, are all released by one daemon
started afterwards, with their outputs, at the cost of a handful of reads (one listener, one read
per wake-up); `executor wait` and `executor submit --wait` exit 0 on SUCCESS, 1 on failure or an
unknown id, 124 when their time runs out, and 2 for a bad timeout, submitting nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from http_support import poll
from test_daemon_process import Daemon, daemon_env, executor

from executor.app.parts import client_for
from executor.core import Phase
from executor.settings import load_settings
from executor.store import Store, Submission
from executor.store.migrate import upgrade

pytestmark = [pytest.mark.anyio, pytest.mark.process]

WAITERS = 1000


async def test_a_thousand_waiters_are_released_by_one_daemon(
    database_url: str, tmp_path: Path, start_daemon: Callable[[dict[str, str]], Daemon]
) -> None:
    store = Store.from_url(database_url)
    await upgrade(store.engine)
    client = client_for(load_settings(database_url=database_url), store, None)
    watch = store.finish_watch
    try:
        ids = await client.submit_many([Submission("echo", {"n": n}) for n in range(WAITERS)])
        outputs: dict[str, dict[str, object] | None] = {}
        phases: dict[str, Phase] = {}

        async def wait(execution_id: str) -> None:
            record = await client.wait(execution_id, timeout=120)
            phases[execution_id] = record.phase
            outputs[execution_id] = record.outputs

        async def waiting() -> int:
            return watch.waiting if watch.unread == 0 else 0

        async with anyio.create_task_group() as group:
            for execution_id in ids:
                group.start_soon(wait, execution_id)
            await poll(waiting, lambda found: found == WAITERS, within=30)
            # Waiting, with nothing finishing, reads nothing more (the safety net aside, every 5 s).
            reads_registered = watch.reads
            await anyio.sleep(0.5)
            assert watch.reads <= reads_registered + 1, (reads_registered, watch.reads)
            assert not phases
            daemon = start_daemon(daemon_env(database_url, EXECUTOR_BATCH_SIZE="256"))
            started = time.monotonic()
            reads_before = watch.reads
        released_in = time.monotonic() - started
        reads = watch.reads - reads_before
        daemon.process.terminate()
        assert daemon.wait() == 0
    finally:
        await store.close()
    assert len(phases) == WAITERS and set(phases.values()) == {Phase.SUCCESS}
    assert all(outputs[execution_id] == {"n": n} for n, execution_id in enumerate(ids))
    # One read per wake-up, at most one per 50 ms, for all 1,000: a handful, not a thousand.
    print(f"\n{WAITERS} waiters released in {released_in:.2f}s (daemon start included) with {reads} reads")
    assert reads <= 2 + 2 * released_in / 0.05, (reads, released_in)
    assert reads < 100, reads


def test_cli_wait_exit_codes(
    database_url: str, tmp_path: Path, start_daemon: Callable[[dict[str, str]], Daemon]
) -> None:
    env = daemon_env(database_url)
    assert executor(env, tmp_path, "migrate").returncode == 0
    queued = executor(env, tmp_path, "submit", "echo", "--inputs", '{"a": 1}').stdout.strip()

    # No daemon yet: the time runs out, and the message says where the execution stands.
    done = executor(env, tmp_path, "wait", queued, "--timeout", "300ms")
    assert done.returncode == 124, done.stderr
    assert done.stderr == f"executor: execution {queued} did not finish within 0.3s (still QUEUED)\n"
    assert done.stdout == ""

    # A bad timeout is a usage error, and `submit --wait` then stores nothing.
    bad = executor(env, tmp_path, "wait", queued, "--timeout", "soon")
    assert bad.returncode == 2 and "--timeout: timeout: invalid duration 'soon'" in bad.stderr, bad.stderr
    bad = executor(env, tmp_path, "submit", "echo", "--wait", "--wait-timeout", "0s")
    assert bad.returncode == 2, bad.stderr
    assert "executor: --wait-timeout: timeout must be a positive duration, got 0s" in bad.stderr
    listed = executor(env, tmp_path, "list", "--json")
    assert [row["id"] for row in json.loads(listed.stdout)] == [queued]

    start_daemon(env)
    done = executor(env, tmp_path, "wait", queued)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"{queued} SUCCESS"
    assert 'outputs         {"a": 1}' in done.stdout

    done = executor(env, tmp_path, "submit", "echo", "--inputs", '{"b": 2}', "--wait")
    assert done.returncode == 0, done.stderr
    execution_id, outcome, *rest = done.stdout.splitlines()
    assert outcome == f"{execution_id} SUCCESS" and 'outputs         {"b": 2}' in rest

    done = executor(
        env, tmp_path, "submit", "core-sleep", "--inputs", '{"duration": "nope"}', "--wait", "--json"
    )
    assert done.returncode == 1, done.stderr
    shown = json.loads(done.stdout)
    assert shown["phase"] == "PERMANENT_FAILURE" and shown["error"]["code"] == "InvalidInput"

    sleeping = executor(
        env, tmp_path, "submit", "core-sleep", "--inputs", '{"duration": "1h"}'
    ).stdout.strip()
    done = executor(env, tmp_path, "wait", sleeping, "--timeout", "1s")
    assert done.returncode == 124 and "did not finish within 1s (still" in done.stderr, done.stderr
    assert executor(env, tmp_path, "abort", sleeping).returncode == 0
    done = executor(env, tmp_path, "wait", sleeping, "--timeout", "30s")
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[0] == f"{sleeping} ABORTED"

    done = executor(env, tmp_path, "wait", "no-such-id")
    assert done.returncode == 1 and done.stderr == "executor: no execution with id no-such-id\n"
