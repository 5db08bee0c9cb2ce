"""Function tasks (issue 15) in the real daemon process: `@task` on sync, async and CPU-bound
functions in tests/function_plugins/functions.py, submitted with their typed `submit`.

Each test starts `executor run` (about a second, more on a loaded machine); every wait is a poll
with a deadline. The SIGKILL test kills the worker process under a CPU-bound call, as the issue asks.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from executor.client import Client, SubmissionError
from executor.core import ErrorKind, Phase
from executor.core.records import ExecutionRecord
from executor.store import Store
from tests.function_plugins import functions
from tests.test_daemon_process import Daemon, daemon_env, executor

pytestmark = [pytest.mark.process, pytest.mark.anyio]

FUNCTION_PLUGINS = Path(functions.__file__).resolve().parent
CONFIG = {"fn-config": {"bucket": "photos"}}


def function_env(database_url: str, **extra: str) -> dict[str, str]:
    return daemon_env(
        database_url,
        FUNCTION_PLUGINS,
        EXECUTOR_PLUGIN_CONFIG=json.dumps(CONFIG),
        EXECUTOR_PROCESS_WORKERS="1",
        EXECUTOR_RETRY_BACKOFF_BASE="50ms",
        EXECUTOR_RETRY_BACKOFF_MAX="100ms",
        EXECUTOR_POLL_INTERVAL="50ms",
        **extra,
    )


async def poll(what: str, probe: Callable[[], Awaitable[Any]], within: float = 60.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        found = await probe()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await anyio.sleep(0.05)


async def all_finalized(store: Store, ids: list[str]) -> list[ExecutionRecord] | None:
    records = [await store.get(execution_id) for execution_id in ids]
    if all(record is not None and record.finalized and record.phase.is_final for record in records):
        return [record for record in records if record is not None]
    return None


async def test_sync_async_and_cpu_function_tasks_run_where_they_should_and_fail_as_declared(
    store: Store, database_url: str, start_daemon: Callable[[dict[str, str]], Daemon]
) -> None:
    client = Client(store)  # knows no task types: the typed submit validates and fills defaults itself
    with pytest.raises(SubmissionError, match=r"inputs do not fit Greeting for task type 'fn-async': name: "):
        await functions.greet.submit(client, nam="typo")
    with pytest.raises(SubmissionError, match=r"FnSyncInputs.*repeat: Input should be a valid integer"):
        await functions.shout.submit(client, word="x", repeat="many")
    assert await store.list_executions() == [], "a refused submission stored something"

    ids = {
        "async": await functions.greet.submit(client, name="ada", times=2),
        "sync": await functions.shout.submit(client, word="hey"),
        "cpu": await functions.crunch.submit(client, n=1000),
        "declared": await functions.refuse.submit(client, kind="declared"),
        "permanent": await functions.refuse.submit(client, kind="raise"),
        "flaky": await functions.flaky.submit(client),
        "slow": await functions.slow.submit(client, seconds=30),
        "config": await functions.where.submit(client, key="cat.png"),
    }
    daemon = start_daemon(function_env(database_url))
    daemon.wait_for_log("daemon.started", timeout=60)
    records = await poll("every execution to finish", lambda: all_finalized(store, list(ids.values())))
    got = dict(zip(ids, records, strict=True))
    daemon_pid = daemon.process.pid

    assert got["async"].phase is Phase.SUCCESS
    assert got["async"].outputs == {"text": "hello ada hello ada", "thread": "MainThread"}  # on the loop
    sync = got["sync"]
    assert sync.phase is Phase.SUCCESS and sync.outputs is not None
    assert sync.outputs["text"] == "HEY!HEY!" and sync.outputs["thread"] != "MainThread"  # a pool thread
    assert (sync.max_attempts, sync.timeout) == (2, 30.0)  # the task's defaults
    cpu = got["cpu"]
    assert cpu.phase is Phase.SUCCESS and cpu.outputs is not None
    assert cpu.outputs["sum"] == sum(i * i for i in range(1000))
    assert cpu.outputs["pid"] not in (daemon_pid, os.getpid())  # a worker process

    for name, code, text in [
        ("declared", "BadInputError", "BadInputError: width must be positive"),
        ("permanent", "PermanentError", "PermanentError: the image is corrupt"),
    ]:
        record = got[name]
        assert record.phase is Phase.PERMANENT_FAILURE, name
        assert record.attempt == 1 and record.max_attempts == 3, f"{name} was retried"
        assert record.error is not None and record.error.code == code and record.error.kind is ErrorKind.USER
        assert record.error.message.startswith(text), record.error.message
        assert "functions.py:" in record.error.message  # where it raised

    flaky = got["flaky"]
    assert (flaky.phase, flaky.attempt, flaky.outputs) == (Phase.SUCCESS, 2, {"result": 2})
    retried = [e.error for e in await store.events(flaky.id) if e.phase is Phase.RETRYABLE_FAILURE]
    assert [(e.code, e.kind) for e in retried if e is not None] == [("RuntimeError", ErrorKind.USER)]

    slow = got["slow"]
    assert slow.phase is Phase.PERMANENT_FAILURE and slow.error is not None
    assert slow.error.code == "MaxRetriesExceeded"
    assert "TimeoutExpired: the call ran past the task's timeout of 1s" in slow.error.message

    assert got["config"].outputs == {"url": "s3://photos/cat.png", "region": "eu-west-1"}
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0


async def test_a_worker_killed_mid_task_fails_only_that_execution_and_the_pool_recovers(
    sqlite_url: str, tmp_path: Path, start_daemon: Callable[[dict[str, str]], Daemon]
) -> None:
    gate, pid_file = tmp_path / "gate", tmp_path / "worker.pid"
    store = Store.from_url(sqlite_url)
    from executor.store.migrate import upgrade

    await upgrade(store.engine)
    try:
        client = Client(store)
        daemon = start_daemon(function_env(sqlite_url, EXECUTOR_MAX_SYSTEM_FAILURES="2"))
        daemon.wait_for_log("daemon.started", timeout=60)
        victim = await functions.crunch.submit(client, n=10, gate=str(gate), pid_file=str(pid_file))
        killed = int(await poll("the worker to start the call", lambda: _read(pid_file)))
        beside = [await functions.greet.submit(client, name=f"n{i}") for i in range(20)]
        await poll("the executions beside it to finish", lambda: all_finalized(store, beside))
        os.kill(killed, signal.SIGKILL)
        await poll("a new worker to take the retry", lambda: _read_other(pid_file, killed))
        gate.touch()
        [record] = await poll("the killed execution to finish", lambda: all_finalized(store, [victim]))
        after = await functions.crunch.submit(client, n=100)
        [later] = await poll("a later cpu task", lambda: all_finalized(store, [after]))
        assert daemon.process.poll() is None, "the daemon died with its worker"
    finally:
        await store.close()

    faults = [e.error for e in await _events(sqlite_url, victim) if e.error is not None]
    assert [(f.code, f.kind) for f in faults] == [("WorkerProcessDied", ErrorKind.SYSTEM)]
    assert (
        faults[0].message
        == f"handle did not finish: the worker process (pid {killed}) died (killed by SIGKILL)"
    )
    assert record.phase is Phase.SUCCESS and record.attempt == 1  # a system failure, retried in its attempt
    assert record.outputs is not None and record.outputs["pid"] != killed
    assert later.phase is Phase.SUCCESS and later.outputs is not None
    assert later.outputs["pid"] == record.outputs["pid"]  # the replacement worker serves on
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0


async def _read(path: Path) -> str | None:
    text = await anyio.Path(path).read_text() if await anyio.Path(path).exists() else ""
    return text or None


async def _read_other(path: Path, pid: int) -> bool:
    text = await _read(path)
    return text is not None and int(text) != pid


async def _events(url: str, execution_id: str) -> list[Any]:
    store = Store.from_url(url)
    try:
        return await store.events(execution_id)
    finally:
        await store.close()


def test_a_bad_plugin_config_stops_the_start_up_in_one_line(sqlite_url: str, tmp_path: Path) -> None:
    """The same line for a function task's config model as for the kit's (tests/test_webapi_kit.py)."""
    cases = [
        (
            {},
            "plugin 'fn-config' ({}) failed to load: PluginConfigError: invalid configuration for "
            "plugin 'fn-config': bucket: Field required",
        ),
        (
            {"fn-config": {"bucket": "b", "region": 5}},
            "invalid configuration for plugin 'fn-config': region: Input should be a valid string",
        ),
        (
            CONFIG | {"fn-confg": {}},
            "EXECUTOR_PLUGIN_CONFIG configures 'fn-confg', but no plugin has "
            "that id (known: fn-async, fn-config, fn-cpu, fn-flaky, fn-permanent, fn-slow, fn-sync)",
        ),
    ]
    for config, expected in cases:
        env = daemon_env(sqlite_url, FUNCTION_PLUGINS, EXECUTOR_PLUGIN_CONFIG=json.dumps(config))
        done = executor(env, tmp_path, "run")
        assert done.returncode == 2, done.stderr
        [line] = [line for line in done.stderr.splitlines() if line.startswith("executor: ")]
        assert expected.format(FUNCTION_PLUGINS / "functions.py") in line, line
