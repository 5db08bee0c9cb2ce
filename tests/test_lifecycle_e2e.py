"""Every way an execution can end, through the real loop (`Reconciler.run`) on a real store.

The loop runs on the real clock with short durations (backoff of tens of milliseconds, timeouts
of a fraction of a second); tests wait by polling the store against a deadline, never by sleeping
a guessed time. The plugins are defined here, registered into a registry of the test's own, and
record every call they get, so the order of `handle`, `abort` and `finalize` can be checked.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from pydantic import BaseModel

from executor.client import Client, SubmissionError
from executor.core import (
    Phase,
    PhaseInfo,
    Plugin,
    PluginEntry,
    SetupContext,
    TaskExecutionContext,
    Transition,
    do_transition,
)
from executor.core.records import ExecutionRecord
from executor.logging import configure_logging, get_logger
from executor.plugin.registry import PluginRegistry, load_plugins
from executor.plugin.resources import InProcessResourceManager
from executor.runtime import Reconciler
from executor.settings import load_settings
from executor.store import Store, Submission
from executor.store.quotas import SqlResourceManager

pytestmark = pytest.mark.anyio

FAST = {
    "poll_interval": 0.05,
    "default_requeue": 0.02,
    "retry_backoff_base": 0.01,
    "retry_backoff_max": 0.05,
    "handle_timeout": 2,
}
SECRET = "s3cr3t-hunter2-value"


class Calls:
    def __init__(self) -> None:
        self.log: list[tuple[str, str, int]] = []

    def add(self, method: str, tctx: TaskExecutionContext) -> None:
        meta = tctx.task_execution_metadata
        self.log.append((method, meta.execution_id, meta.attempt))

    def of(self, execution_id: str) -> list[tuple[str, int]]:
        return [(method, attempt) for method, target, attempt in self.log if target == execution_id]


class Counter(BaseModel):
    rounds: int = 0


class Scripted(Plugin):
    """Behaviour by `inputs["mode"]`; every call recorded."""

    id = "scripted"

    def __init__(self, calls: Calls) -> None:
        self.calls = calls
        self.finalize_failures_left: dict[str, int] = {}

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        self.calls.add("handle", tctx)
        inputs = await tctx.input_reader.get()
        version, state = tctx.plugin_state_reader.get(Counter)
        tctx.plugin_state_writer.put(version + 1, Counter(rounds=state.rounds + 1))
        mode = inputs["mode"]
        if mode == "flaky":
            # Each attempt starts clean: no state, and the outputs of the failed one are gone.
            await tctx.output_writer.put(
                {"attempt": tctx.task_execution_metadata.attempt, "rounds": state.rounds}
            )
            return do_transition(PhaseInfo.retryable_failure("Flaky", "it failed again"))
        if mode == "raise":
            raise RuntimeError("remote call failed")
        if mode == "forever":
            return do_transition(PhaseInfo.running(0), requeue_after=3600)
        if mode == "ok":
            return do_transition(PhaseInfo.success())
        if mode == "bad-outputs":
            await tctx.output_writer.put({"total": "not a number"})
            return do_transition(PhaseInfo.success())
        raise AssertionError(mode)

    async def abort(self, tctx: TaskExecutionContext) -> None:
        self.calls.add("abort", tctx)

    async def finalize(self, tctx: TaskExecutionContext) -> None:
        self.calls.add("finalize", tctx)
        execution_id = tctx.task_execution_metadata.execution_id
        left = self.finalize_failures_left.get(execution_id, 0)
        if left:
            self.finalize_failures_left[execution_id] = left - 1
            raise RuntimeError("finalize could not reach the remote side")


class Slots(Plugin):
    """Takes a unit of the `slots` quota, holds it for three rounds, succeeds and forgets to
    release it (the finalize of the daemon releases it)."""

    id = "slots"

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        token = tctx.task_execution_metadata.generated_name
        if not await tctx.resource_manager.allocate("slots", token):
            return do_transition(PhaseInfo.waiting_for_resources("quota of slots used up"))
        version, state = tctx.plugin_state_reader.get(Counter)
        if state.rounds >= 3:
            return do_transition(PhaseInfo.success())
        tctx.plugin_state_writer.put(version + 1, Counter(rounds=state.rounds + 1))
        return do_transition(PhaseInfo.running(state.rounds), requeue_after=0.01)


class Secretive(Plugin):
    """Reads a secret, then leaks it every way a plugin can: a log line, an exception, a failure."""

    id = "secretive"

    def __init__(self) -> None:
        self.raised: set[str] = set()

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        value = tctx.secret_manager.get("api_key")
        tctx.logger.info("using the key", key=value, note=f"key is {value}")
        execution_id = tctx.task_execution_metadata.execution_id
        if execution_id not in self.raised:
            self.raised.add(execution_id)
            raise RuntimeError(f"auth failed with key {value}")
        return do_transition(PhaseInfo.failure("AuthFailed", f"the server refused key {value}"))


class Sum(BaseModel):
    a: int
    b: int = 0


class Total(BaseModel):
    total: int


def registry(calls: Calls) -> PluginRegistry:
    reg = PluginRegistry()
    scripted = Scripted(calls)
    reg.register_core_plugin(
        PluginEntry(id="scripted", registered_task_types=["scripted"], load_plugin=lambda setup: scripted)
    )
    reg.register_core_plugin(
        PluginEntry(
            id="totals",
            registered_task_types=["totals"],
            load_plugin=lambda setup: scripted,
            output_model=Total,
        )
    )

    def load_slots(setup: SetupContext) -> Plugin:
        setup.resource_registrar.register_resource_quota("slots", 2)
        return Slots()

    reg.register_core_plugin(PluginEntry(id="slots", registered_task_types=["slots"], load_plugin=load_slots))
    reg.register_core_plugin(
        PluginEntry(
            id="secretive", registered_task_types=["secretive"], load_plugin=lambda setup: Secretive()
        )
    )
    reg.register_core_plugin(
        PluginEntry(
            id="sum", registered_task_types=["sum"], load_plugin=lambda setup: Secretive(), input_model=Sum
        )
    )
    return reg


Running = Callable[..., Any]


@asynccontextmanager
async def running_loop(
    store: Store, database_url: str, calls: Calls, **overrides: Any
) -> AsyncIterator[Reconciler]:
    """The real loop over `store`, running until the block ends."""
    settings = load_settings(database_url=database_url, **{**FAST, **overrides})
    resources = InProcessResourceManager(settings.resource_quotas)
    setup = SetupContext(settings=settings, logger=get_logger(), resource_registrar=resources)
    plugins = await load_plugins(registry(calls), setup)
    reconciler = Reconciler(store, plugins, settings, resource_manager=resources)
    async with anyio.create_task_group() as group:
        group.start_soon(reconciler.run)
        try:
            yield reconciler
        finally:
            reconciler.stop()


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 15.0) -> None:
    with anyio.fail_after(seconds):
        # Polling the rows the loop writes: there is no event to await across the store.
        while not await check():  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def finished(store: Store, execution_id: str) -> ExecutionRecord:
    async def done() -> bool:
        record = await store.get(execution_id)
        return record is not None and record.finalized

    await until(done)
    record = await store.get(execution_id)
    assert record is not None
    return record


async def submit(store: Store, **fields: Any) -> str:
    mode = fields.pop("mode", None)
    task_type = fields.pop("task_type", "scripted")
    inputs = {"mode": mode} if mode else fields.pop("inputs", {})
    return await store.submit(Submission(task_type, inputs, **fields), now=anyio_now())


def anyio_now() -> float:
    import time

    return time.time()


# -- retries -----------------------------------------------------------------------------------


async def test_max_retries_exceeded_aborts_and_finalizes_every_attempt_before_the_next(
    store: Store, database_url: str
) -> None:
    calls = Calls()
    async with running_loop(store, database_url, calls):
        execution_id = await submit(store, mode="flaky", max_attempts=3)
        record = await finished(store, execution_id)

    assert (record.phase, record.reason, record.attempt) == (Phase.PERMANENT_FAILURE, "MaxRetriesExceeded", 3)
    assert record.error is not None and "Flaky: it failed again" in record.error.message
    # Each attempt: handled, then aborted, then finalized, before the next one starts.
    assert calls.of(execution_id) == [
        ("handle", 1), ("abort", 1), ("finalize", 1),
        ("handle", 2), ("abort", 2), ("finalize", 2),
        ("handle", 3), ("abort", 3), ("finalize", 3),
    ]  # fmt: skip
    # Every attempt started from a clean state: the plugin saw rounds == 0 each time.
    assert record.outputs == {"attempt": 3, "rounds": 0}
    timeline = [(e.attempt, e.phase, e.reason) for e in await store.events(execution_id)]
    assert timeline == [
        (1, Phase.QUEUED, "Submitted"),
        (1, Phase.RETRYABLE_FAILURE, "Flaky"),
        (2, Phase.QUEUED, "Retrying after Flaky"),
        (2, Phase.RETRYABLE_FAILURE, "Flaky"),
        (3, Phase.QUEUED, "Retrying after Flaky"),
        (3, Phase.PERMANENT_FAILURE, "MaxRetriesExceeded"),
    ]
    events = await store.events(execution_id)
    # Never a tight loop: each new attempt waited at least the backoff base before its first round.
    records_gap = [b.occurred_at - a.occurred_at for a, b in zip(events[2::2], events[3::2], strict=False)]
    assert all(gap >= FAST["retry_backoff_base"] - 1e-3 for gap in records_gap)


async def test_max_system_failures_exceeded_then_abort_and_finalize(store: Store, database_url: str) -> None:
    calls = Calls()
    async with running_loop(store, database_url, calls, max_system_failures=3):
        execution_id = await submit(store, mode="raise", max_attempts=5)
        record = await finished(store, execution_id)
    assert (record.phase, record.reason, record.attempt) == (
        Phase.PERMANENT_FAILURE,
        "MaxSystemFailuresExceeded",
        1,
    )
    assert record.system_failures == 3
    assert record.error is not None and "RuntimeError: remote call failed" in record.error.message
    assert calls.of(execution_id) == [("handle", 1)] * 3 + [("abort", 1), ("finalize", 1)]


# -- timeouts ------------------------------------------------------------------------------------


async def test_timeout_expired_is_retried_and_each_attempt_is_aborted(
    store: Store, database_url: str
) -> None:
    calls = Calls()
    async with running_loop(store, database_url, calls):
        execution_id = await submit(store, mode="forever", max_attempts=2, timeout=0.2)
        record = await finished(store, execution_id)
    assert (record.phase, record.reason, record.attempt) == (Phase.PERMANENT_FAILURE, "MaxRetriesExceeded", 2)
    assert record.error is not None and "TimeoutExpired" in record.error.message
    reasons = [(e.attempt, e.phase, e.reason) for e in await store.events(execution_id)]
    assert (1, Phase.RETRYABLE_FAILURE, "TimeoutExpired") in reasons
    assert calls.of(execution_id) == [
        ("handle", 1), ("abort", 1), ("finalize", 1), ("handle", 2), ("abort", 2), ("finalize", 2)
    ]  # fmt: skip


async def test_deadline_exceeded_is_permanent_and_aborts(store: Store, database_url: str) -> None:
    calls = Calls()
    async with running_loop(store, database_url, calls):
        execution_id = await submit(store, mode="forever", max_attempts=5, deadline=0.3)
        record = await finished(store, execution_id)
    assert (record.phase, record.reason, record.attempt) == (Phase.PERMANENT_FAILURE, "DeadlineExceeded", 1)
    assert calls.of(execution_id) == [("handle", 1), ("abort", 1), ("finalize", 1)]
    assert record.finished_at is not None and record.finished_at - record.created_at >= 0.3


# -- abort and finalize ---------------------------------------------------------------------------


async def test_aborted_before_running_and_while_running(store: Store, database_url: str) -> None:
    calls = Calls()
    async with running_loop(store, database_url, calls):
        waiting = await submit(store, mode="forever", not_before=anyio_now() + 3600)
        running = await submit(store, mode="forever")

        async def handled() -> bool:
            return ("handle", 1) in calls.of(running)

        await until(handled)
        client = Client(store)
        await client.abort(waiting, "not needed")
        await client.abort(running, "stop it")
        before = await finished(store, waiting)
        during = await finished(store, running)
        assert (await client.abort(running)).value == "already_finished"
    assert (before.phase, before.reason) == (Phase.ABORTED, "not needed")
    assert calls.of(waiting) == [("finalize", 1)]  # never handled, nothing to abort
    assert (during.phase, during.reason) == (Phase.ABORTED, "stop it")
    assert calls.of(running) == [("handle", 1), ("abort", 1), ("finalize", 1)]


async def test_finalize_raising_is_retried_until_it_succeeds(store: Store, database_url: str) -> None:
    calls = Calls()
    async with running_loop(
        store, database_url, calls, retry_backoff_base=0.1, retry_backoff_max=0.2
    ) as loop:
        plugin = loop.plugins.by_id["scripted"]
        assert isinstance(plugin, Scripted)
        execution_id = await submit(store, mode="ok")
        plugin.finalize_failures_left[execution_id] = 2

        async def flagged() -> bool:
            return any(r.id == execution_id for r in await store.list_executions(unfinalized=True))

        await until(flagged)
        record = await finished(store, execution_id)
    assert (record.phase, record.finalized, record.finalize_failures, record.system_failures) == (
        Phase.SUCCESS,
        True,
        2,
        0,
    )
    assert record.finalize_error is None
    assert calls.of(execution_id) == [("handle", 1)] + [("finalize", 1)] * 3
    assert not await store.list_executions(unfinalized=True)


# -- quotas ----------------------------------------------------------------------------------------


async def test_a_quota_of_two_is_never_exceeded_by_five_executions(store: Store, database_url: str) -> None:
    calls = Calls()
    quotas = SqlResourceManager(store)
    most = 0
    async with running_loop(store, database_url, calls, batch_size=10):
        ids = [await submit(store, task_type="slots", inputs={}) for _ in range(5)]

        async def all_done() -> bool:
            nonlocal most
            most = max(most, await quotas.in_use("slots"))
            records = [await store.get(i) for i in ids]
            return all(r is not None and r.finalized for r in records)

        await until(all_done, 30)
    assert most == 2  # the quota was used to the full, never beyond
    assert await quotas.in_use("slots") == 0  # finalize released what the plugin forgot
    for execution_id in ids:
        record = await store.get(execution_id)
        assert record is not None and record.phase is Phase.SUCCESS
    waited = [
        e
        for execution_id in ids
        for e in await store.events(execution_id)
        if e.phase is Phase.WAITING_FOR_RESOURCES
    ]
    assert waited, "some executions had to wait for the quota"


async def test_allocation_is_idempotent_per_token_and_overridable(store: Store) -> None:
    quotas = SqlResourceManager(store)
    registrar = InProcessResourceManager({"gpu": 1})
    registrar.register_resource_quota("gpu", 5)
    await quotas.register(registrar.quotas)
    assert await quotas.quotas() == {"gpu": 1}  # EXECUTOR_RESOURCE_QUOTAS wins
    assert await quotas.allocate("gpu", "t1", execution_id="e1")
    assert await quotas.allocate("gpu", "t1", execution_id="e1")  # again: still granted, one unit
    assert not await quotas.allocate("gpu", "t2", execution_id="e2")
    assert await quotas.in_use("gpu") == 1
    assert await quotas.release_execution("e1") == 1
    assert await quotas.allocate("gpu", "t2", execution_id="e2")


# -- secrets --------------------------------------------------------------------------------------


async def test_a_secret_is_absent_from_every_log_line_event_and_error(
    store: Store, database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EXECUTOR_SECRET_API_KEY", SECRET)
    configure_logging("debug", "json")
    buffer = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buffer))
    try:
        calls = Calls()
        async with running_loop(store, database_url, calls):
            execution_id = await submit(store, task_type="secretive", inputs={})
            record = await finished(store, execution_id)
    finally:
        structlog.reset_defaults()
    lines = buffer.getvalue().splitlines()
    assert any("using the key" in line for line in lines)
    assert any("[REDACTED]" in line for line in lines), "the leaks were logged, masked"
    assert any("auth failed with key" in line for line in lines)  # the traceback, masked
    assert not [line for line in lines if SECRET in line]
    assert (record.phase, record.reason) == (Phase.PERMANENT_FAILURE, "AuthFailed")
    stored = json.dumps([repr(e) for e in await store.events(execution_id)]) + repr(record)
    assert SECRET not in stored
    assert record.error is not None and "[REDACTED]" in record.error.message


# -- submission ------------------------------------------------------------------------------------


async def test_inputs_are_validated_at_submit_and_outputs_after_handle(
    store: Store, database_url: str
) -> None:
    calls = Calls()
    resolver = registry(calls).resolver()
    client = Client(store, task_types=resolver, max_payload_bytes=200)
    with pytest.raises(SubmissionError, match=r"a: Input should be a valid integer"):
        await client.submit("sum", {"a": "x"})
    with pytest.raises(SubmissionError, match="EXECUTOR_MAX_PAYLOAD_BYTES"):
        await client.submit("scripted", {"blob": "x" * 300})
    assert await store.list_executions() == []  # nothing stored
    stored = await client.submit("sum", {"a": 1})
    record = await store.get(stored)
    assert record is not None and record.inputs == {"a": 1, "b": 0}  # validated, defaults filled in

    async with running_loop(store, database_url, calls):
        bad = await submit(store, task_type="totals", mode="bad-outputs")
        failed = await finished(store, bad)
    assert (failed.phase, failed.reason) == (Phase.PERMANENT_FAILURE, "InvalidOutputs")
    assert failed.error is not None and "total: Input should be a valid integer" in failed.error.message


async def test_idempotency_key_priority_and_not_before(store: Store) -> None:
    client = Client(store)
    first = await client.submit("scripted", {"mode": "ok"}, idempotency_key="order-42")
    again = await client.submit("scripted", {"mode": "ok"}, idempotency_key="order-42")
    assert first == again
    assert len(await store.list_executions()) == 1
    low = await client.submit("scripted", {"mode": "ok"}, priority=-5)
    high = await client.submit("scripted", {"mode": "ok"}, priority=10)
    import datetime as dt

    later = await client.submit(
        "scripted", {"mode": "ok"}, priority=100, not_before=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    )
    claimed = await store.claim(owner="o", token="t", limit=2, lease_ttl=30, now=anyio_now() + 1)
    assert [r.id for r in claimed] == [high, first]  # highest priority first; `later` is not due
    rest = await store.claim(owner="o", token="t2", limit=10, lease_ttl=30, now=anyio_now() + 1)
    assert [r.id for r in rest] == [low]
    assert later not in {r.id for r in claimed + rest}


async def test_a_quota_holds_across_replicas_allocating_at_once(store: Store, database_url: str) -> None:
    """Two stores (two replicas' connection pools) race 20 allocations against a quota of 3."""
    other = Store.from_url(database_url)
    try:
        replicas = [SqlResourceManager(store), SqlResourceManager(other)]
        await replicas[0].register({"licences": 3})
        granted: list[str] = []

        async def take(index: int) -> None:
            if await replicas[index % 2].allocate("licences", f"token-{index}", execution_id=f"e{index}"):
                granted.append(f"token-{index}")

        async with anyio.create_task_group() as group:
            for index in range(20):
                group.start_soon(take, index)
        assert len(granted) == 3
        assert await replicas[1].in_use("licences") == 3
    finally:
        await other.close()
