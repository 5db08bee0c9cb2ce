"""The remote-service kit (executor/webapi/): token buckets, Retry-After, response mapping, and the
status cache's bound on remote calls with a thousand executions through the real loop."""

from __future__ import annotations

import math
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from executor.core import Phase
from executor.store import Store
from executor.webapi import (
    RateLimitedError,
    RemoteError,
    ResourceNotFoundError,
    TokenBucket,
    WebApiConfig,
    check_response,
    parse_retry_after,
)
from tests.webapi_support import Harness, JobServer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_gives_its_burst_then_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, 3, clock=clock)
    assert [bucket.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_acquire() == pytest.approx(0.1)
    clock.now += 0.05
    assert bucket.try_acquire() == pytest.approx(0.05)
    clock.now += 0.05
    assert bucket.try_acquire() == 0.0
    clock.now += 100.0  # saving up stops at the burst
    assert sum(bucket.try_acquire() == 0.0 for _ in range(10)) == 3


def test_a_pause_gives_nothing_until_it_ends_then_no_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, 5, clock=clock)
    bucket.pause(2.0)
    assert bucket.try_acquire() == pytest.approx(2.1)
    clock.now += 1.0
    assert bucket.try_acquire() == pytest.approx(1.1)
    clock.now += 1.1
    assert bucket.try_acquire() == 0.0
    assert bucket.try_acquire() > 0  # the saved-up burst was dropped by the pause


def test_retry_after_in_seconds_fractions_and_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("-5") == 0.0
    when = datetime(2030, 1, 1, tzinfo=UTC)
    now = (when - timedelta(seconds=30)).timestamp()
    assert parse_retry_after(format_datetime(when, usegmt=True), now=now) == pytest.approx(30.0)


def _response(status: int, headers: dict[str, str] | None = None, text: str = "") -> httpx.Response:
    return httpx.Response(status, headers=headers, text=text, request=httpx.Request("GET", "http://x/y"))


def test_responses_map_to_what_the_kit_should_do() -> None:
    assert check_response(_response(200), "GET /y").status_code == 200
    with pytest.raises(RateLimitedError) as limited:
        check_response(_response(429, {"Retry-After": "7"}), "GET /y")
    assert limited.value.retry_after == 7.0
    with pytest.raises(RateLimitedError):
        check_response(_response(503, {"Retry-After": "1"}), "GET /y")
    with pytest.raises(ResourceNotFoundError):
        check_response(_response(404, text="gone"), "GET /y")
    with pytest.raises(RemoteError) as busy:
        check_response(_response(502, text="bad gateway"), "GET /y")
    assert busy.value.retryable and "HTTP 502: bad gateway" in str(busy.value)
    with pytest.raises(RemoteError) as refused:
        check_response(_response(400, text="no"), "POST /jobs")
    assert not refused.value.retryable and str(refused.value) == "POST /jobs: HTTP 400: no"


def test_config_overrides_are_validated() -> None:
    config = WebApiConfig().with_overrides({"resync_interval": "250ms", "read_rate": 3})
    assert (config.resync_interval, config.read_rate) == (0.25, 3.0)
    with pytest.raises(ValueError, match="read_rat"):
        WebApiConfig().with_overrides({"read_rat": 1})


# -- a thousand executions through the cache ----------------------------------------------------


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    return sqlite_url


@pytest.mark.anyio
async def test_a_thousand_executions_poll_through_the_cache_within_the_resync_bound(
    store: Store, database_url: str, server: JobServer
) -> None:
    """1,000 jobs that run 2 s: `handle` runs for every execution every round, yet the service sees
    at most one GET per job per resync interval, at most `workers` at once."""
    n, resync, workers = 1000, 0.25, 8
    server.knobs.complete_after = 2.0
    config: dict[str, Any] = {
        "resync_interval": resync,
        "workers": workers,
        "batch_size": 50,
        "read_rate": 10_000.0,
        "read_burst": 1000,
        "write_rate": 10_000.0,
        "write_burst": 1000,
    }
    h = await Harness.build(store, database_url, plugin_config={"http-job": config}, batch_size=n)
    try:
        ids = await h.submit("http-job", [{"url": server.url} for _ in range(n)])
        started = time.monotonic()
        rounds = await h.drive(lambda: h.finished(ids), within=60, cache_plugin="http-job")
        elapsed = time.monotonic() - started
        records = await h.records(ids)
        cache = h.plugin().cache
    finally:
        await h.aclose()

    assert Counter(r.phase for r in records) == {Phase.SUCCESS: n}
    gets = server.calls_of("GET")
    per_job = Counter(c.path for c in gets)
    bound = n * (math.floor(elapsed / resync) + 1)
    print(
        f"\n{n} executions, {rounds} rounds ({rounds * n} handle calls at most), {elapsed:.2f}s, "
        f"{cache.passes} refresh passes: {len(gets)} GETs (bound {bound}), "
        f"at most {max(per_job.values())} per job, {server.max_in_flight['GET']} at once"
    )
    assert len(server.calls_of("POST")) == n  # each job created once
    assert len(gets) <= bound
    assert len(gets) <= n * cache.passes  # never more than one get per resource per pass
    assert cache.passes <= elapsed / resync + 1
    # A job lives 2 s: about 2 / resync looks at it, whatever the number of rounds.
    assert max(per_job.values()) <= math.ceil(2.0 / resync) + 2
    assert server.max_in_flight["GET"] <= workers
    assert server.calls_of("DELETE") == []


@pytest.mark.anyio
async def test_the_daemon_hands_plugin_config_to_the_kit(sqlite_url: str) -> None:
    """EXECUTOR_PLUGIN_CONFIG overrides a kit plugin's defaults; a bad value stops the start-up."""
    from executor.daemon import setup_plugins
    from executor.plugin.registry import PluginRegistryError
    from executor.plugin.resources import InProcessResourceManager
    from executor.settings import load_settings
    from tests.webapi_support import PLUGINS

    settings = load_settings(
        database_url=sqlite_url,
        plugins_dir=PLUGINS,
        plugin_entry_points=False,
        plugin_config={"http-job": {"read_rate": 5, "resync_interval": "10s"}},
    )
    plugins = await setup_plugins(settings, InProcessResourceManager())
    config = plugins.by_id["http-job"].config
    assert (config.read_rate, config.resync_interval, config.write_rate) == (5.0, 10.0, 10.0)

    bad = settings.model_copy(update={"plugin_config": {"http-job": {"read_rate": -1}}})
    with pytest.raises(PluginRegistryError, match=r"http-job.*read_rate"):
        await setup_plugins(bad, InProcessResourceManager())
