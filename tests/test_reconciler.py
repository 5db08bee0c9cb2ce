"""The reconciliation loop, in process, round by round, against a real store (SQLite and PostgreSQL).

Every test drives `Reconciler.run_round()` itself with a fake clock, so nothing sleeps to wait for
the loop: a round is over when `run_round` returns, and time passes when the test says so.
The plugins are the built-in ones (`plugins/`) and the misbehaving ones of `tests/plugins/`, loaded
into a registry of the test's own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

import anyio
import pytest

from executor.core import ErrorKind, Phase, Plugin, SetupContext, TaskExecutionContext
from executor.core.records import ExecutionRecord
from executor.logging import get_logger
from executor.plugin.loader import load_directory
from executor.plugin.registry import LoadedPlugins, PluginRegistry, load_plugins
from executor.plugin.resources import InProcessResourceManager
from executor.runtime import NullObserver, Reconciler, RoundStats
from executor.settings import load_settings
from executor.store import Store, Submission

pytestmark = pytest.mark.anyio

BUILTIN_PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
TEST_PLUGINS = Path(__file__).resolve().parent / "plugins"


class FakeClock:
    """Seconds since the epoch that move only when a test moves them."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    # Start at the real time: the store stamps abort requests and submissions from the client
    # with the wall clock, and those must not look like the far future to the loop.
    return FakeClock(time.time())


Build = Callable[..., Awaitable[Reconciler]]


@pytest.fixture
def build(store: Store, database_url: str, clock: FakeClock) -> Build:
    """Builds a Reconciler over the test's store, the built-in and the test plugins, and `clock`."""

    async def make(**settings: Any) -> Reconciler:
        registry = PluginRegistry()
        load_directory(registry, BUILTIN_PLUGINS)
        load_directory(registry, TEST_PLUGINS)
        loaded_settings = load_settings(database_url=database_url, **settings)
        resources = InProcessResourceManager()
        setup = SetupContext(settings=loaded_settings, logger=get_logger(), resource_registrar=resources)
        plugins = await load_plugins(registry, setup)
        return Reconciler(store, plugins, loaded_settings, resource_manager=resources, clock=clock)

    return make


async def submit(store: Store, clock: FakeClock, *items: tuple[str, dict[str, Any]]) -> list[str]:
    return await store.submit_many(
        [Submission(task_type, inputs) for task_type, inputs in items], now=clock()
    )


async def get(store: Store, execution_id: str) -> ExecutionRecord:
    record = await store.get(execution_id)
    assert record is not None
    return record


def plugin(plugins: LoadedPlugins, task_type: str) -> Plugin:
    found = plugins.for_task_type(task_type)
    assert found is not None
    return found


def count_finalize(monkeypatch: pytest.MonkeyPatch, target: Plugin) -> list[str]:
    """Wrap a plugin instance's `finalize` to record the execution ids it was called for."""
    calls: list[str] = []
    original = target.finalize

    async def finalize(tctx: TaskExecutionContext) -> None:
        calls.append(tctx.task_execution_metadata.execution_id)
        await original(tctx)

    monkeypatch.setattr(target, "finalize", finalize)
    return calls


def drive_wall_clock(monkeypatch: pytest.MonkeyPatch, target: Plugin, wall: FakeClock) -> None:
    """core-sleep reads the time with `datetime.now`: make it read `wall` instead."""

    class FakeDatetime(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> FakeDatetime:
            moment = datetime.fromtimestamp(wall(), tz)
            return cls.combine(moment.date(), moment.timetz())

    monkeypatch.setitem(type(target).handle.__globals__, "datetime", FakeDatetime)


# -- core-sleep through the real loop ---------------------------------------------------------


async def test_core_sleep_runs_then_succeeds_across_rounds(
    build: Build, store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    reconciler = await build()
    sleep = plugin(reconciler.plugins, "core-sleep")
    # The plugin's wall clock is separate from the loop's so that a round can come early (as on a
    # replica whose clock runs ahead); normally both move together.
    wall = FakeClock(clock())
    drive_wall_clock(monkeypatch, sleep, wall)
    finalized = count_finalize(monkeypatch, sleep)
    start = clock()
    [execution_id] = await submit(store, clock, ("core-sleep", {"duration": "10s"}))

    stats = await reconciler.run_round()
    assert (stats.claimed, stats.committed) == (1, 1)
    record = await get(store, execution_id)
    assert record.phase is Phase.RUNNING
    assert record.plugin_state is not None
    started = datetime.fromisoformat(json.loads(record.plugin_state)["start_time"])
    assert started.timestamp() == pytest.approx(start)
    assert record.next_round_at == pytest.approx(start + 10)
    assert record.lease_token is None  # handed back after the commit

    # Time passes, but less than the duration: no round is due, and it stays RUNNING.
    clock.advance(4)
    wall.advance(4)
    assert (await reconciler.run_round()).claimed == 0
    assert (await get(store, execution_id)).phase is Phase.RUNNING

    # A round that comes early: the plugin sees the duration has not passed and asks for the rest.
    clock.advance(6)
    stats = await reconciler.run_round()
    assert stats.claimed == 1
    early = await get(store, execution_id)
    assert early.phase is Phase.RUNNING
    assert early.plugin_state == record.plugin_state  # start_time is never rewritten
    assert early.next_round_at == pytest.approx(clock() + 6)
    assert finalized == []

    # The duration has passed on the plugin's clock too.
    clock.advance(6)
    wall.advance(6)
    stats = await reconciler.run_round()
    assert (stats.claimed, stats.finalized) == (1, 1)
    done = await get(store, execution_id)
    assert done.phase is Phase.SUCCESS
    assert done.finalized
    assert done.lease_token is None
    assert finalized == [execution_id]

    clock.advance(3600)
    assert (await reconciler.run_round()).claimed == 0
    assert finalized == [execution_id]  # finalize ran once, and the row is out of the claimable set
    timeline = [(event.phase, event.phase_version) for event in await store.events(execution_id)]
    assert timeline == [(Phase.QUEUED, 0), (Phase.RUNNING, 0), (Phase.SUCCESS, 0)]


async def test_state_put_in_a_round_is_read_back_only_in_the_next(
    build: Build, store: Store, clock: FakeClock
) -> None:
    reconciler = await build()
    [execution_id] = await submit(store, clock, ("state-probe", {"rounds": 2}))

    await reconciler.run_round()
    record = await get(store, execution_id)
    assert record.phase is Phase.RUNNING
    assert record.outputs == {
        "before": {"version": 0, "count": 0},
        "after_put": {"version": 0, "count": 0},  # not what it had just put
    }
    assert json.loads(record.plugin_state or "null") == {"count": 1}
    assert record.plugin_state_version == 1

    await reconciler.run_round()
    record = await get(store, execution_id)
    assert record.phase is Phase.SUCCESS
    assert record.outputs == {
        "before": {"version": 1, "count": 1},
        "after_put": {"version": 1, "count": 1},
    }
    assert json.loads(record.plugin_state or "null") == {"count": 2}
    assert record.plugin_state_version == 2


# -- plugins that misbehave, next to ones that do not ------------------------------------------


async def test_each_bad_outcome_fails_its_own_execution_and_the_rest_of_the_round_succeeds(
    build: Build, store: Store, clock: FakeClock
) -> None:
    reconciler = await build(handle_timeout=0.2, max_plugin_state_bytes=1024, max_system_failures=2)
    submissions = {
        "echo-1": ("echo", {"n": 1}),
        "raising": ("raising", {}),
        "hanging": ("hanging", {}),
        "garbage": ("garbage", {}),
        "oversized": ("oversized-state", {"bytes": 2000}),
        "unknown": ("no-such-type", {}),
        "bad-duration": ("core-sleep", {"duration": "soon"}),
        "no-duration": ("core-sleep", {}),
        "echo-2": ("echo", {"n": 2}),
    }
    ids = dict(zip(submissions, await submit(store, clock, *submissions.values()), strict=True))

    stats = await reconciler.run_round()
    assert (stats.claimed, stats.committed) == (9, 9)
    after = {name: await get(store, execution_id) for name, execution_id in ids.items()}

    for name, n in (("echo-1", 1), ("echo-2", 2)):
        assert after[name].phase is Phase.SUCCESS
        assert after[name].outputs == {"n": n}
        assert after[name].finalized

    def failed(name: str, reason: str, kind: ErrorKind) -> str:
        record = after[name]
        assert (record.phase, record.reason) == (Phase.PERMANENT_FAILURE, reason), name
        assert record.error is not None
        assert (record.error.code, record.error.kind) == (reason, kind)
        assert record.finalized
        return record.error.message

    assert "handle returned a dict, expected a Transition" in failed(
        "garbage", "InvalidTransition", ErrorKind.SYSTEM
    )
    message = failed("oversized", "PluginStateTooLarge", ErrorKind.SYSTEM)
    assert "over the limit of 1024 bytes" in message
    assert "EXECUTOR_MAX_PLUGIN_STATE_BYTES" in message
    assert after["oversized"].plugin_state is None  # the oversized state was not stored
    message = failed("unknown", "UnknownTaskType", ErrorKind.SYSTEM)
    assert "'no-such-type'" in message
    assert "known task types: " in message
    assert "core-sleep" in message
    assert "echo" in message
    assert "'soon'" in failed("bad-duration", "InvalidInput", ErrorKind.USER)
    assert "duration" in failed("no-duration", "InvalidInput", ErrorKind.USER)

    # A raise and a timeout are system failures: the execution keeps its phase and tries again.
    for name, reason, detail in (
        ("raising", "HandleRaised", "RuntimeError: the plugin broke on purpose"),
        ("hanging", "HandleTimeout", "EXECUTOR_HANDLE_TIMEOUT"),
    ):
        record = after[name]
        assert (record.phase, record.reason, record.system_failures) == (Phase.QUEUED, reason, 1)
        assert record.error is not None
        assert record.error.kind is ErrorKind.SYSTEM
        assert detail in record.error.message
        assert not record.finalized

    # Before its backoff has passed, nothing is retried.
    assert (await reconciler.run_round()).claimed == 0

    # EXECUTOR_MAX_SYSTEM_FAILURES=2: the second failure of the attempt is the last.
    clock.advance(60)
    stats = await reconciler.run_round()
    assert (stats.claimed, stats.committed, stats.finalized) == (2, 2, 2)
    for name, reason in (("raising", "HandleRaised"), ("hanging", "HandleTimeout")):
        record = await get(store, ids[name])
        assert (record.phase, record.reason) == (Phase.PERMANENT_FAILURE, "MaxSystemFailuresExceeded")
        assert record.system_failures == 2
        assert record.error is not None
        assert record.error.kind is ErrorKind.SYSTEM
        assert f"2 system failures in attempt 1; last: {reason}" in record.error.message
        assert record.finalized
        reasons = [event.reason for event in await store.events(ids[name])]
        assert reasons == ["Submitted", reason, "MaxSystemFailuresExceeded"]

    clock.advance(3600)
    assert (await reconciler.run_round()).claimed == 0


async def test_a_malformed_transition_fails_its_own_execution_not_the_round(
    build: Build, store: Store, clock: FakeClock
) -> None:
    kinds = ["requeue-number", "version-text", "info-unserialisable", "error-message-object"]
    reconciler = await build()
    ids = await submit(
        store, clock, *[("bad-transition", {"kind": kind}) for kind in kinds], ("echo", {"ok": True})
    )

    stats = await reconciler.run_round()

    assert (stats.claimed, stats.committed, stats.finalized) == (5, 5, 5)
    records = [await get(store, execution_id) for execution_id in ids]
    for kind, record in zip(kinds, records[:-1], strict=True):
        assert (record.phase, record.reason) == (Phase.PERMANENT_FAILURE, "InvalidTransition"), kind
    messages = [record.error.message for record in records[:-1] if record.error is not None]
    assert "requeue_after 5 is not a timedelta" in messages[0]
    assert "phase version '1' is not an int" in messages[1]
    assert "cannot be stored as JSON" in messages[2]
    assert "cannot be stored as JSON" in messages[3]
    assert (records[-1].phase, records[-1].outputs) == (Phase.SUCCESS, {"ok": True})


async def test_a_timeout_error_the_plugin_raises_itself_is_not_a_handle_timeout(
    build: Build, store: Store, clock: FakeClock
) -> None:
    reconciler = await build(handle_timeout=30)
    [execution_id] = await submit(store, clock, ("raising", {"error": "TimeoutError"}))

    await reconciler.run_round()

    record = await get(store, execution_id)
    assert record.reason == "HandleRaised"
    assert record.error is not None
    assert "handle raised TimeoutError: the plugin broke on purpose" in record.error.message


async def test_a_blocking_plugin_runs_off_the_event_loop(
    build: Build, store: Store, clock: FakeClock
) -> None:
    reconciler = await build()
    ids = await submit(store, clock, ("blocking-wait", {}), ("gate-open", {}), ("echo", {"x": 1}))

    await reconciler.run_round()

    records = [await get(store, execution_id) for execution_id in ids]
    # Had `blocking-wait` run on the loop, `gate-open` could not have opened the gate: it would
    # have given up with `Stalled`.
    assert [(r.task_type, r.phase, r.reason) for r in records] == [
        ("blocking-wait", Phase.SUCCESS, None),
        ("gate-open", Phase.SUCCESS, None),
        ("echo", Phase.SUCCESS, None),
    ]


# -- abort --------------------------------------------------------------------------------------


async def test_abort_before_the_first_round_never_calls_handle(
    build: Build, store: Store, clock: FakeClock
) -> None:
    reconciler = await build()
    recording = plugin(reconciler.plugins, "recording")
    [execution_id] = await submit(store, clock, ("recording", {}))
    await store.request_abort(execution_id, "Aborted by test", now=clock())

    stats = await reconciler.run_round()

    assert (stats.claimed, stats.finalized) == (1, 1)
    record = await get(store, execution_id)
    assert (record.phase, record.reason, record.finalized) == (Phase.ABORTED, "Aborted by test", True)
    # Nothing had started, so there was nothing to abort; finalize always runs once terminal.
    assert recording.calls == [("finalize", execution_id)]  # type: ignore[attr-defined]
    timeline = [(event.phase, event.reason) for event in await store.events(execution_id)]
    assert timeline == [(Phase.QUEUED, "Submitted"), (Phase.ABORTED, "Aborted by test")]


async def test_abort_while_running_calls_abort_then_finalize(
    build: Build, store: Store, clock: FakeClock
) -> None:
    reconciler = await build()
    recording = plugin(reconciler.plugins, "recording")
    [execution_id, bystander] = await submit(store, clock, ("recording", {}), ("recording", {}))
    await reconciler.run_round()
    assert (await get(store, execution_id)).phase is Phase.RUNNING

    clock.advance(1)  # not yet due: the plugin asked for its next round in an hour
    await store.request_abort(execution_id, "Aborted by test", now=clock())
    stats = await reconciler.run_round()

    assert (stats.claimed, stats.finalized) == (1, 1)
    record = await get(store, execution_id)
    assert (record.phase, record.reason, record.finalized) == (Phase.ABORTED, "Aborted by test", True)
    assert record.error is None
    calls = [method for method, target in recording.calls if target == execution_id]  # type: ignore[attr-defined]
    assert calls == ["handle", "abort", "finalize"]
    assert (await get(store, bystander)).phase is Phase.RUNNING


async def test_the_loop_overlaps_a_full_round_commit_with_the_next_claim_only_on_postgresql(
    build: Build, store: Store, clock: FakeClock
) -> None:
    """On PostgreSQL the commit of a full round runs while the next round claims; every execution
    still ends once, with its events once each. SQLite's single writer keeps them in turn."""
    reconciler = await build(batch_size=8)
    ids = await submit(store, clock, *[("echo", {"n": n}) for n in range(100)])
    active = {"claim": 0, "commit": 0}
    overlapped = 0

    def watched(name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        other = "commit" if name == "claim" else "claim"

        async def call(*args: Any, **kwargs: Any) -> Any:
            nonlocal overlapped
            active[name] += 1
            try:
                result = await method(*args, **kwargs)
                overlapped += active[other] > 0
                return result
            finally:
                active[name] -= 1

        return call

    store.claim = watched("claim", store.claim)  # type: ignore[method-assign]
    store.commit_round = watched("commit", store.commit_round)  # type: ignore[method-assign]

    class StopWhenDone(NullObserver):
        finalized = 0

        def round_finished(self, stats: RoundStats, seconds: float) -> None:
            self.finalized += stats.finalized
            if self.finalized >= len(ids) or not stats.claimed:
                reconciler.stop()

    reconciler.observer = StopWhenDone()
    with anyio.fail_after(30):
        await reconciler.run()

    assert reconciler.in_flight == 0
    for execution_id in ids:
        record = await store.get(execution_id)
        assert record is not None and record.phase is Phase.SUCCESS and record.finalized
        assert [event.phase for event in await store.events(execution_id)] == [Phase.QUEUED, Phase.SUCCESS]
    if store.overlaps_writes:
        assert overlapped > 0
    else:
        assert overlapped == 0


async def test_an_observer_set_after_the_reconciler_is_built_hears_the_round_and_each_handle(
    build: Build, store: Store, clock: FakeClock
) -> None:
    """Metrics may be attached by assigning `observer` after construction: the round and the plugin
    calls (made by parts of the loop that the reconciler built) report to it, not to the first one."""
    reconciler = await build()
    await submit(store, clock, ("echo", {"n": 1}), ("no-such-task-type", {}))
    heard: list[tuple[str, object]] = []

    class Recording(NullObserver):
        def handle_finished(self, plugin_id: str, outcome: str, seconds: float) -> None:
            heard.append((plugin_id, outcome))

        def round_finished(self, stats: RoundStats, seconds: float) -> None:
            heard.append(("round", stats.claimed))

    reconciler.observer = Recording()
    await reconciler.run_round()

    assert sorted(heard, key=str) == sorted(
        [("echo", "transition"), ("", "no_plugin"), ("round", 2)], key=str
    )


async def test_handles_that_suspend_run_at_once_with_those_after_them_in_the_round(
    build: Build, store: Store, clock: FakeClock
) -> None:
    """Handles that return without suspending run in the round's own task, and the first that
    suspends goes on there (with the cancel scope it entered) while the rest start beside it."""
    reconciler = await build(handle_timeout=10)
    key = f"k-{time.time_ns()}"
    # Claimed highest priority first: echoes, two waiters, the echo between, then the setter.
    submissions = [
        Submission("echo", {"n": 1}, priority=9),
        Submission("rendezvous", {"role": "wait", "key": key}, priority=8),
        Submission("echo", {"n": 2}, priority=7),
        Submission("rendezvous", {"role": "wait", "key": key}, priority=6),
        Submission("rendezvous", {"role": "set", "key": key}, priority=5),
        Submission("echo", {"n": 3}, priority=4),
    ]
    ids = await store.submit_many(submissions, now=clock())

    with anyio.fail_after(8):
        stats = await reconciler.run_round()

    assert stats.claimed == len(ids)
    for execution_id in ids:
        record = await store.get(execution_id)
        assert record is not None and record.phase is Phase.SUCCESS, record


async def test_a_handle_that_suspends_first_in_the_round_still_times_out(
    build: Build, store: Store, clock: FakeClock
) -> None:
    reconciler = await build(handle_timeout=0.3)
    hanging, echo = await submit(store, clock, ("hanging", {}), ("echo", {"n": 1}))

    with anyio.fail_after(5):
        await reconciler.run_round()

    record = await store.get(hanging)
    assert record is not None and record.error is not None
    assert record.error.code == "HandleTimeout", record.error
    done = await store.get(echo)
    assert done is not None and done.phase is Phase.SUCCESS
