"""CPU-bound plugins in worker processes (issue 12): `PluginProperties(cpu_bound=True)`.

The loop runs in process on real stores and real time; the `cpu-primes` plugin
(tests/plugins/cpu_bound.py) runs in the daemon's worker processes, which load the plugins the
settings name (here, the test plugins). Each test starts one or two workers (about a second each).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from executor import lifecycle
from executor.core import ErrorKind, Phase, SetupContext
from executor.core.records import ExecutionRecord
from executor.logging import get_logger
from executor.plugin.loader import load_directory
from executor.plugin.registry import PluginRegistry, load_plugins
from executor.plugin.resources import InProcessResourceManager
from executor.runtime import Reconciler
from executor.runtime.processes import WORKER_DIED, Calls, Request
from executor.settings import load_settings
from executor.store import Store
from executor.store.migrate import upgrade
from tests.test_stragglers import TEST_PLUGINS, finalized, make_reconciler, poll, running, submit
from tests.webapi_support import EXAMPLES

pytestmark = pytest.mark.anyio

BELOW = 100_000
PRIMES_BELOW = 9592  # the number of primes below 100 000
FAST = 40

#: The workers load the plugins the settings name: the test plugins, `cpu-primes` among them.
WORKER_SETTINGS: dict[str, Any] = {
    "plugins_dir": str(TEST_PLUGINS),
    "process_workers": 1,
    "retry_backoff_base": "50ms",
    "retry_backoff_max": "100ms",
}


async def record_of(store: Store, execution_id: str) -> ExecutionRecord:
    record = await store.get(execution_id)
    assert record is not None
    return record


async def test_a_cpu_bound_plugin_runs_in_a_worker_process_while_the_executions_beside_it_finish(
    store: Store, database_url: str, tmp_path: Path
) -> None:
    gate, log = tmp_path / "gate", tmp_path / "calls.log"
    [slow] = await submit(store, ("cpu-primes", {"below": BELOW, "gate": str(gate), "log": str(log)}))
    fast = await submit(store, *[("echo", {"i": i}) for i in range(FAST)])
    reconciler = await make_reconciler(store, database_url, **WORKER_SETTINGS)

    async with running(reconciler):
        await poll("the cpu-bound call to start", lambda: _true(log.exists()))
        await poll("the fast executions to finish", lambda: finalized(store, fast))
        assert not (await record_of(store, slow)).phase.is_terminal, "the cpu-bound call returned early"
        gate.touch()
        await poll("the cpu-bound execution to finish", lambda: finalized(store, [slow]))

    record = await record_of(store, slow)
    assert record.phase is Phase.SUCCESS
    assert record.outputs is not None
    worker = record.outputs["pid"]
    assert worker != os.getpid()
    # The state the first call wrote in the worker was stored, and read back there by the second.
    assert record.outputs == {"primes": PRIMES_BELOW, "pid": worker, "first_pid": worker}
    assert record.plugin_state is not None and f'"pid":{worker}' in record.plugin_state
    # handle twice and finalize once, all in the one worker, which the pool kept between calls.
    assert log.read_text().split("\n") == [f"handle {worker}", f"handle {worker}", f"finalize {worker}", ""]


async def test_a_worker_killed_mid_call_fails_that_call_as_a_system_failure_and_is_replaced(
    store: Store, database_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "calls.log"
    inputs = {"below": 1000, "die_unless": str(tmp_path / "died"), "log": str(log)}
    [execution] = await submit(store, ("cpu-primes", inputs))
    reconciler = await make_reconciler(store, database_url, **WORKER_SETTINGS)

    async with running(reconciler):
        await poll("the execution to finish", lambda: finalized(store, [execution]))

    record = await record_of(store, execution)
    assert record.phase is Phase.SUCCESS
    assert record.system_failures == 1
    dead = int(log.read_text().split("\n")[0].split()[1])
    faults = [e.error for e in await store.events(execution) if e.error is not None]
    assert [(f.code, f.kind) for f in faults] == [(WORKER_DIED, ErrorKind.SYSTEM)]
    assert (
        faults[0].message
        == f"handle did not finish: the worker process (pid {dead}) died (killed by SIGKILL)"
    )
    assert record.outputs is not None and record.outputs["pid"] not in (dead, os.getpid())


async def test_a_call_past_the_handle_timeout_ends_its_worker_and_the_pool_goes_on(
    store: Store, database_url: str, tmp_path: Path
) -> None:
    """With one worker, the retry can only run if the timed-out call gave its worker up."""
    log = tmp_path / "calls.log"
    inputs = {"below": 1000, "spin_unless": str(tmp_path / "spun"), "log": str(log)}
    [execution] = await submit(store, ("cpu-primes", inputs))
    reconciler = await make_reconciler(store, database_url, handle_timeout="4s", **WORKER_SETTINGS)

    async with running(reconciler):
        await poll("the execution to finish", lambda: finalized(store, [execution]))

    record = await record_of(store, execution)
    assert record.phase is Phase.SUCCESS
    faults = [e.error.code for e in await store.events(execution) if e.error is not None]
    assert faults == ["HandleTimeout"]
    spinner = int(log.read_text().split("\n")[0].split()[1])
    assert record.outputs is not None and record.outputs["pid"] != spinner
    with pytest.raises(ProcessLookupError):  # killed, not left spinning for its minute
        os.kill(spinner, 0)


async def test_the_readme_example_counts_primes_in_a_worker_process(sqlite_url: str) -> None:
    """plugins/examples/primes.py, loaded as the README says: from the plugins directory."""
    settings = load_settings(database_url=sqlite_url, plugins_dir=str(EXAMPLES), poll_interval="50ms")
    registry = PluginRegistry()
    load_directory(registry, EXAMPLES)
    resources = InProcessResourceManager()
    setup = SetupContext(settings=settings, logger=get_logger(), resource_registrar=resources)
    store = Store.from_url(sqlite_url)
    await upgrade(store.engine)
    try:
        reconciler = Reconciler(
            store, await load_plugins(registry, setup), settings, resource_manager=resources
        )
        [execution] = await submit(store, ("example-primes", {"below": BELOW}))
        async with running(reconciler):
            await poll("the example to finish", lambda: finalized(store, [execution]))
        record = await record_of(store, execution)
    finally:
        await store.close()
    assert record.phase is Phase.SUCCESS
    assert record.outputs is not None
    assert record.outputs["primes"] == PRIMES_BELOW
    assert record.outputs["worker_pid"] != os.getpid()


# -- what a worker does with one call, run here, without a process -----------------------------


def worker_calls(tmp_path: Path, **settings: Any) -> tuple[Calls, asyncio.Runner]:
    runner = asyncio.Runner()
    loaded = load_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/unused.db", **WORKER_SETTINGS, **settings
    )
    return Calls(loaded, runner), runner


def cpu_record(**inputs: Any) -> ExecutionRecord:
    now = time.time()
    return ExecutionRecord("e-1", "cpu-primes", inputs, Phase.QUEUED, 0, now, now)


def test_a_worker_refuses_quota_allocations_with_a_clear_error(tmp_path: Path) -> None:
    calls, runner = worker_calls(tmp_path)
    with runner:
        reply = calls.run(Request("cpu-primes", "handle", cpu_record(below=10, allocate=True), {}))
    assert isinstance(reply.result, lifecycle.SystemFault)
    assert reply.result.code == "HandleRaised"
    assert "QuotasUnavailableError" in reply.result.message
    assert "resource quotas are kept in the store" in reply.result.message


def test_a_worker_hands_back_the_secrets_a_call_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECUTOR_SECRET_PRIMES_TOKEN", "s3cret-value")
    calls, runner = worker_calls(tmp_path)
    state = '{"primes":4,"pid":1}'
    record = cpu_record(below=10, secret="primes_token")
    record = ExecutionRecord(**{**_fields(record), "plugin_state": state, "plugin_state_version": 0})
    with runner:
        reply = calls.run(Request("cpu-primes", "handle", record, {}))
    assert isinstance(reply.result, lifecycle.Handled)
    assert reply.result.outputs is not None and reply.result.outputs["secret"] == "s3cret-value"
    assert reply.secrets == ("s3cret-value",)  # the daemon masks it in what it stores and logs


def test_a_worker_names_a_plugin_it_did_not_load(tmp_path: Path) -> None:
    calls, runner = worker_calls(tmp_path)
    with runner:
        reply = calls.run(Request("echo", "finalize", cpu_record(), {}))
    assert isinstance(reply.result, str)
    assert reply.result.startswith(
        "finalize raised LookupError: plugin 'echo' is not loaded in the worker process"
    )


def _fields(record: ExecutionRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


async def _true(value: bool) -> bool:
    return value
