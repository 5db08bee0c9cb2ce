"""/metrics: the loop's counters move as executions finish, and a plugin that blocks the event loop
shows up both in the metrics and in a warning naming it. Real store (SQLite and PostgreSQL), real
loop driven round by round."""

from __future__ import annotations

import time

import anyio
import pytest
import structlog
from http_support import Served, poll, sample, serve_app

from executor.core import PhaseInfo, Plugin, TaskExecutionContext, Transition, do_transition
from executor.runtime import Reconciler
from executor.store import Store, Submission

pytestmark = pytest.mark.anyio


class LoopHog(Plugin):
    """Calls blocking code on the event loop without declaring `blocking=True`."""

    id = "loop-hog"

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        time.sleep(0.3)  # noqa: ASYNC251 -- the misbehaviour under test
        return do_transition(PhaseInfo.success())


class Raises(Plugin):
    id = "raises"

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        raise RuntimeError("boom")


async def scrape(served: Served) -> str:
    response = await served.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text


async def test_metrics_move_when_executions_finish(store: Store, database_url: str) -> None:
    served = await serve_app(store, database_url, extra=[Raises()], max_system_failures=1)
    reconciler = Reconciler(store, served.plugins, served.settings, observer=served.metrics)

    before = await scrape(served)
    assert sample(before, "executor_executions", phase="SUCCESS") == 0
    assert sample(before, "executor_rounds_total") == 0
    assert sample(before, "executor_store_up") == 1

    for task_type in ("echo", "echo", "echo", "raises"):
        response = await served.http.post("/api/v1/executions", json={"task_type": task_type})
        assert response.status_code == 201
    assert sample(await scrape(served), "executor_executions", phase="QUEUED") == 4

    async def finished() -> tuple[float | None, float | None]:
        await reconciler.run_round()
        text = await scrape(served)
        return (
            sample(text, "executor_executions", phase="SUCCESS"),
            sample(text, "executor_executions", phase="PERMANENT_FAILURE"),
        )

    await poll(finished, lambda counts: counts == (3, 1), every=0.0)
    after = await scrape(served)
    assert sample(after, "executor_executions", phase="QUEUED") == 0
    assert (sample(after, "executor_rounds_total") or 0) >= 1
    assert sample(after, "executor_claimed_executions_total") == 4
    assert sample(after, "executor_committed_executions_total") == 4
    assert sample(after, "executor_finalized_executions_total") == 4
    assert sample(after, "executor_handle_duration_seconds_count", plugin="echo", outcome="transition") == 3
    assert (
        sample(after, "executor_handle_duration_seconds_count", plugin="raises", outcome="system_fault") == 1
    )
    assert sample(after, "executor_system_failures_total", plugin="raises") == 1
    assert sample(after, "executor_leases_lost_total") == 0
    assert (sample(after, "executor_round_duration_seconds_count") or 0) >= 1
    assert (sample(after, "executor_last_round_timestamp_seconds") or 0) > time.time() - 60
    assert sample(after, "executor_build_info", version="0.1.0", replica=served.settings.replica_id) == 1

    # A scraper that asks for OpenMetrics gets it.
    asked = await served.http.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert asked.headers["content-type"].startswith("application/openmetrics-text")
    assert asked.text.rstrip().endswith("# EOF")


async def test_a_plugin_blocking_the_loop_is_named_and_measured(store: Store, database_url: str) -> None:
    served = await serve_app(store, database_url, extra=[LoopHog()])
    metrics = served.metrics
    [execution_id] = await store.submit_many([Submission("loop-hog")], now=time.time())

    def lag(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(f"executor_event_loop_lag_seconds_{name}", labels) or 0.0

    with structlog.testing.capture_logs() as logs:
        reconciler = Reconciler(store, served.plugins, served.settings, observer=metrics)
        async with anyio.create_task_group() as group:
            group.start_soon(metrics.watch_event_loop, 0.01)

            async def samples_taken() -> float:
                return lag("count")

            await poll(samples_taken, lambda count: count >= 2, within=5.0, every=0.01)
            await reconciler.run_round()

            # The watcher was asleep while the plugin held the loop: its next sample is that late.
            async def samples_over_a_quarter_second() -> float:
                return lag("count") - lag("bucket", le="0.25")

            await poll(samples_over_a_quarter_second, lambda n: n >= 1, within=5.0, every=0.01)
            group.cancel_scope.cancel()

    record = await store.get(execution_id)
    assert record is not None and record.phase.name == "SUCCESS"
    warnings = [entry for entry in logs if entry["event"] == "plugin.blocked_event_loop"]
    assert len(warnings) == 1, logs
    assert warnings[0]["plugin"] == "loop-hog" and warnings[0]["log_level"] == "warning"
    assert warnings[0]["seconds"] >= 0.25

    text = await scrape(served)
    assert sample(text, "executor_plugin_loop_blocked_total", plugin="loop-hog") == 1
    assert (sample(text, "executor_plugin_loop_blocked_seconds_total", plugin="loop-hog") or 0) >= 0.25
    total = sample(text, "executor_event_loop_lag_seconds_count") or 0
    assert total > (sample(text, "executor_event_loop_lag_seconds_bucket", le="0.25") or 0)
    assert (sample(text, "executor_event_loop_lag_last_seconds") or 0) >= 0


async def test_a_store_that_cannot_be_read_is_not_reported_as_current(
    store: Store, database_url: str
) -> None:
    served = await serve_app(store, database_url)
    await store.submit_many([Submission("echo")], now=time.time())
    assert sample(await scrape(served), "executor_executions", phase="QUEUED") == 1
    nothing_listens = Store.from_url("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    try:
        text = (await served.metrics.render(nothing_listens))[0].decode()
    finally:
        await nothing_listens.close()
    assert sample(text, "executor_store_up") == 0
    assert sample(text, "executor_executions", phase="QUEUED") is None  # no stale count
    assert sample(text, "executor_rounds_total") == 0  # the rest is still there
