"""`http-job` (plugins/http_job.py) through the real loop over a real SQLite store, against a real
job service on 127.0.0.1 (tests/webapi_support.py): outputs, auth from the secret manager, rate
limits and 429s, create retries, lost jobs, deletes on abort and timeout, and quotas.

Rounds are driven by the test (`run_round`, fake clock for the loop); the rate limits and the
status cache run on real time, and the test waits for them on events or polls with deadlines.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from executor.core import Phase
from executor.store import Store, Submission
from executor.webapi import ResourceRequirements
from tests.webapi_support import Harness, JobServer, most_in_window

pytestmark = pytest.mark.anyio


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """The kit is about remote calls, not dialects: SQLite only."""
    return sqlite_url


FAST = {"resync_interval": 0.05, "create_backoff_base": 0.5, "create_backoff_max": 5.0}


@pytest.fixture
async def harness_factory(store: Store, database_url: str) -> AsyncIterator[Any]:
    built: list[Harness] = []

    async def make(config: dict[str, Any] | None = None, **settings: Any) -> Harness:
        harness = await Harness.build(
            store, database_url, plugin_config={"http-job": {**FAST, **(config or {})}}, **settings
        )
        built.append(harness)
        return harness

    yield make
    for harness in built:
        await harness.aclose()


def job(server: JobServer, **inputs: Any) -> dict[str, Any]:
    return {"url": server.url, **inputs}


async def test_a_job_runs_to_success_with_its_result_as_outputs(
    harness_factory: Any, server: JobServer
) -> None:
    server.knobs.complete_after = 0.1
    h = await harness_factory()
    [execution_id] = await h.submit("http-job", [job(server, payload={"n": 7})])
    await h.drive(lambda: h.finished([execution_id]), cache_plugin="http-job")

    record = await h.store.get(execution_id)
    assert record.phase is Phase.SUCCESS, (record.reason, record.error)
    assert record.outputs == {"name": f"{execution_id}-1", "echo": {"n": 7}}
    assert len(server.calls_of("POST")) == 1
    assert server.calls_of("DELETE") == []  # a job that finished on its own is left alone
    phases = [e.phase for e in await h.store.events(execution_id)]
    assert phases[-1] is Phase.SUCCESS and Phase.RUNNING in phases


def _rate_figures(times: list[float]) -> float:
    span = max(times) - min(times)
    return (len(times) - 1) / span if span > 0 else float("inf")


async def test_write_and_read_rate_limits_hold(harness_factory: Any, server: JobServer) -> None:
    """30 jobs with creates limited to 20/s (burst 2) and gets to 15/s (burst 2): in no window do
    the calls the service sees exceed burst + rate x window."""
    server.knobs.complete_after = 0.3
    limits = {"write_rate": 20.0, "write_burst": 2, "read_rate": 15.0, "read_burst": 2, "workers": 4}
    h = await harness_factory(limits)
    ids = await h.submit("http-job", [job(server) for _ in range(30)])
    await h.drive(lambda: h.finished(ids), within=20)

    assert {r.phase for r in await h.records(ids)} == {Phase.SUCCESS}
    creates = [c.started for c in server.calls_of("POST")]
    gets = [c.started for c in server.calls_of("GET")]
    assert len(creates) == 30 and len(gets) >= 30
    for window in (0.1, 0.25, 0.5, 1.0):
        # +1: the service stamps arrival, the bucket stamps departure; loopback jitter may pair two.
        assert most_in_window(creates, window) <= 2 + 20.0 * window + 1, window
        assert most_in_window(gets, window) <= 2 + 15.0 * window + 1, window
    write_rate, read_rate = _rate_figures(creates), _rate_figures(gets)
    assert write_rate <= 20.0 * 1.15 and read_rate <= 15.0 * 1.15
    assert server.max_in_flight["GET"] <= 4  # the worker pool bounds concurrent gets
    print(f"\ncreates: {len(creates)} at {write_rate:.1f}/s (limit 20/s)")
    print(f"gets: {len(gets)} at {read_rate:.1f}/s (limit 15/s)")


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_429_with_retry_after_slows_the_plugin_down_instead_of_failing(
    harness_factory: Any, server: JobServer, method: str
) -> None:
    """The service answers three creates (or three status checks) 429 with `Retry-After: 0.3`:
    no call reaches it again before each pause is over, and the execution still succeeds with no
    failure on the way."""
    server.knobs.complete_after = 0.05
    server.knobs.throttle_next = 3
    server.knobs.throttle_methods = frozenset({method})
    server.knobs.retry_after = "0.3"
    h = await harness_factory()
    [execution_id] = await h.submit("http-job", [job(server)])
    await h.drive(lambda: h.finished([execution_id]), within=15, cache_plugin="http-job")

    assert (await h.store.get(execution_id)).phase is Phase.SUCCESS
    with server.lock:
        calls = sorted(server.calls, key=lambda c: c.started)
    throttled = [c for c in calls if c.status == 429]
    assert len(throttled) == 3 and {c.method for c in throttled} == {method}
    for refusal in throttled:
        following = next(c for c in calls if c.started > refusal.started)
        # Nothing came back before Retry-After had passed (a little slack for the two clocks).
        assert following.started - refusal.finished >= 0.3 - 0.02, (refusal, following)
    assert all(not e.phase.is_failure and e.error is None for e in await h.store.events(execution_id))


async def test_create_errors_are_retried_with_backoff_and_shown_in_events(
    harness_factory: Any, server: JobServer
) -> None:
    server.knobs.fail_creates = 2
    server.knobs.complete_after = 0.05
    h = await harness_factory({"create_backoff_base": 2.0, "create_max_attempts": 5})
    [execution_id] = await h.submit("http-job", [job(server)])

    delays = []
    for attempt in (1, 2):
        await h.reconciler.run_round()
        record = await h.store.get(execution_id)
        assert (record.phase, record.phase_version, record.reason) == (Phase.QUEUED, attempt, "CreateFailed")
        assert "database unavailable" in record.error.message
        assert f"attempt {attempt} of 5" in record.error.message
        delays.append(record.next_round_at - h.clock())
        await h.reconciler.run_round()  # not due yet: the backoff holds, no call is made
        assert len(server.calls_of("POST")) == attempt
        h.clock.advance(delays[-1])
    assert 2.0 <= delays[0] < delays[1] <= 5.0  # exponential, capped

    await h.drive(lambda: h.finished([execution_id]), cache_plugin="http-job")
    assert (await h.store.get(execution_id)).phase is Phase.SUCCESS
    events = await h.store.events(execution_id)
    failed = [e for e in events if e.reason == "CreateFailed"]
    assert [e.phase_version for e in failed] == [1, 2]
    assert all("HTTP 503" in e.error.message and "database unavailable" in e.error.message for e in failed)


async def test_create_errors_past_the_limit_fail_with_the_remote_error(
    harness_factory: Any, server: JobServer
) -> None:
    server.knobs.fail_creates = 100
    h = await harness_factory({"create_backoff_base": 0.01, "create_max_attempts": 3})
    [execution_id] = await h.submit("http-job", [job(server)])
    await h.drive(lambda: h.finished([execution_id]))
    record = await h.store.get(execution_id)
    assert record.phase is Phase.PERMANENT_FAILURE
    assert "CreateFailed" in record.error.message and "database unavailable" in record.error.message
    assert len(server.calls_of("POST")) == 3


async def test_a_create_the_service_refuses_fails_at_once(harness_factory: Any, server: JobServer) -> None:
    server.knobs.fail_creates = 1
    server.knobs.create_status = 400
    server.knobs.create_error = "payload.size must be positive"
    h = await harness_factory()
    [execution_id] = await h.submit("http-job", [job(server)])
    await h.drive(lambda: h.finished([execution_id]))
    record = await h.store.get(execution_id)
    assert (record.phase, record.reason) == (Phase.PERMANENT_FAILURE, "CreateFailed")
    assert "HTTP 400" in record.error.message and "payload.size must be positive" in record.error.message
    assert len(server.calls_of("POST")) == 1


async def test_lost_jobs_fail_after_repeated_get_failures_with_the_remote_error(
    harness_factory: Any, server: JobServer
) -> None:
    server.knobs.complete_after = None
    server.knobs.lose_jobs = True
    h = await harness_factory({"max_sync_failures": 3})
    ids = await h.submit("http-job", [job(server) for _ in range(3)])
    await h.drive(lambda: h.finished(ids), cache_plugin="http-job")

    for record in await h.records(ids):
        assert record.phase is Phase.PERMANENT_FAILURE
        assert "RemoteStatusFailed" in record.error.message
        assert "3 consecutive status checks" in record.error.message
        assert "HTTP 404" in record.error.message and "not found" in record.error.message
    gets = server.calls_of("GET")
    # Each job was looked at until its third failure, and not again.
    assert len(gets) == 9
    # The attempt ended with the job unaccounted for: finalize deleted what may be left.
    assert len(server.calls_of("DELETE")) == 3


async def test_abort_deletes_the_remote_job_once(harness_factory: Any, server: JobServer) -> None:
    server.knobs.complete_after = None  # jobs run until deleted
    h = await harness_factory()
    ids = await h.submit("http-job", [job(server) for _ in range(4)])

    async def all_running() -> bool:
        return all(r.phase is Phase.RUNNING for r in await h.records(ids))

    await h.drive(all_running, cache_plugin="http-job")
    assert server.live_jobs() == 4
    for execution_id in ids:
        await h.store.request_abort(execution_id, "user changed their mind", now=time.time())
    await h.drive(lambda: h.finished(ids))

    for record in await h.records(ids):
        assert record.phase is Phase.ABORTED
    deletes = server.calls_of("DELETE")
    assert len(deletes) == 4 and len({c.path for c in deletes}) == 4  # one per job: abort, not finalize too
    assert server.live_jobs() == 0
    assert len(h.plugin().cache) == 0


async def test_abort_before_the_first_round_calls_nothing(harness_factory: Any, server: JobServer) -> None:
    h = await harness_factory()
    [execution_id] = await h.submit("http-job", [job(server)])
    await h.store.request_abort(execution_id, "never mind", now=time.time())
    await h.drive(lambda: h.finished([execution_id]))
    assert (await h.store.get(execution_id)).phase is Phase.ABORTED
    assert server.calls == []


async def test_a_job_past_its_timeout_is_deleted(harness_factory: Any, server: JobServer) -> None:
    """The job's own time limit (input `timeout`): the attempt fails TimeoutExpired and the job,
    still running on the service, is deleted."""
    server.knobs.complete_after = None
    h = await harness_factory()
    [execution_id] = await h.submit("http-job", [job(server, timeout="0.2s")])
    await h.drive(lambda: h.finished([execution_id]), cache_plugin="http-job")
    record = await h.store.get(execution_id)
    assert (record.phase, record.reason) == (Phase.PERMANENT_FAILURE, "TimeoutExpired")
    assert len(server.calls_of("DELETE")) == 1
    assert server.live_jobs() == 0


@pytest.mark.skipif(
    "timeout" not in {f.name for f in dataclasses.fields(Submission)},
    reason="execution timeouts are not in this lifecycle yet",
)
async def test_an_attempt_the_daemon_times_out_has_its_job_deleted(
    harness_factory: Any, server: JobServer
) -> None:
    """The daemon's timeout (`Submission.timeout`): whatever the lifecycle calls (abort, finalize),
    the running job is deleted exactly once."""
    server.knobs.complete_after = None
    h = await harness_factory()
    [execution_id] = await h.submit("http-job", [job(server)], timeout=30.0)

    async def running() -> bool:
        return (await h.store.get(execution_id)).phase is Phase.RUNNING

    await h.drive(running, cache_plugin="http-job")
    h.clock.advance(60.0)
    await h.drive(lambda: h.finished([execution_id]))
    record = await h.store.get(execution_id)
    assert record.phase.is_final and not record.phase.is_success
    assert "TimeoutExpired" in f"{record.reason} {record.error}"
    assert len(server.calls_of("DELETE")) == 1
    assert server.live_jobs() == 0


async def test_quota_holds_and_finalize_releases_it(harness_factory: Any, server: JobServer) -> None:
    """A quota of 2 jobs: never more than 2 live on the service, and all 6 finish."""
    server.knobs.complete_after = 0.1
    h = await harness_factory({"resource_quotas": {"http-job": 2}})
    h.plugin().plugin.resource_requirements = lambda tctx: ResourceRequirements("http-job")
    ids = await h.submit("http-job", [job(server) for _ in range(6)])
    most = 0

    async def done() -> bool:
        nonlocal most
        most = max(most, len([j for j in server.jobs.values() if not j.deleted]) - _finished_jobs(server))
        return await h.finished(ids)

    await h.drive(done, within=20)
    assert {r.phase for r in await h.records(ids)} == {Phase.SUCCESS}
    assert len(server.calls_of("POST")) == 6
    assert most <= 2


def _finished_jobs(server: JobServer) -> int:
    with server.lock:
        views = [server._view(j) for j in server.jobs.values() if not j.deleted]
    return sum(1 for v in views if v["status"] == "SUCCEEDED")


async def test_auth_comes_from_the_secret_manager(
    harness_factory: Any, server: JobServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXECUTOR_SECRET_SERVICE_TOKEN", "s3cr3t-value")
    server.knobs.token = "Bearer s3cr3t-value"
    server.knobs.complete_after = 0.05
    h = await harness_factory()
    ok, missing = await h.submit(
        "http-job", [job(server, auth_secret="service_token"), job(server, auth_secret="absent_token")]
    )
    await h.drive(lambda: h.finished([ok, missing]), cache_plugin="http-job")

    assert (await h.store.get(ok)).phase is Phase.SUCCESS
    record = await h.store.get(missing)
    assert (record.phase, record.reason) == (Phase.PERMANENT_FAILURE, "CreateFailed")
    assert "absent_token" in record.error.message
    assert set(server.auth_headers) == {"Bearer s3cr3t-value"}  # the failed one never called
    for execution_id in (ok, missing):
        record = await h.store.get(execution_id)
        assert "s3cr3t" not in f"{record.plugin_state} {record.error} {record.info}"


async def test_a_restarted_daemon_resumes_without_creating_again(
    harness_factory: Any, server: JobServer
) -> None:
    server.knobs.complete_after = None
    first = await harness_factory()
    ids = await first.submit("http-job", [job(server) for _ in range(3)])

    async def all_running() -> bool:
        return all(r.phase is Phase.RUNNING for r in await first.records(ids))

    await first.drive(all_running, cache_plugin="http-job")
    await first.aclose()
    server.knobs.complete_after = 0.0  # the jobs finish while no daemon runs

    second = await harness_factory()  # a new process: a new plugin, an empty cache
    second.clock.now = first.clock.now
    await second.drive(lambda: second.finished(ids), cache_plugin="http-job")
    assert {r.phase for r in await second.records(ids)} == {Phase.SUCCESS}
    assert len(server.calls_of("POST")) == 3
