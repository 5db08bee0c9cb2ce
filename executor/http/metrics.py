"""Prometheus metrics: what the loop reports as it goes, plus what is read at scrape time.

`Metrics` is the reconciler's `RoundObserver`: each callback only bumps a counter or observes a
histogram, so the loop pays nanoseconds for it. Figures that live in the store (executions by
phase) are read when Prometheus scrapes, not kept up to date by the loop. Each `Metrics` has a
registry of its own, so that tests and several daemons in one process never share counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import anyio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from executor import __version__, threadclock
from executor.core import Phase
from executor.logging import get_logger

if TYPE_CHECKING:
    from executor.store import Store


class RoundFigures(Protocol):
    """What `round_finished` reads of the reconciler's `RoundStats` (no import of the loop)."""

    @property
    def claimed(self) -> int: ...
    @property
    def committed(self) -> int: ...
    @property
    def lost(self) -> int: ...
    @property
    def finalized(self) -> int: ...


#: Seconds; from a cheap in-memory round to a round that waited out a handle timeout.
_ROUND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
#: Seconds the event loop was late: a healthy loop stays under a few milliseconds.
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

#: A lag sample above this is logged (at most once per `_LAG_LOG_EVERY` seconds).
LAG_WARNING_SECONDS = 0.5
_LAG_LOG_EVERY = 10.0


class Metrics:
    """The daemon's metrics, and the loop's heartbeat that `/healthz` reads."""

    def __init__(self, *, replica_id: str = "", clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        #: When the loop last showed it is alive: a finished round, or a store error it is retrying.
        self.last_heartbeat = clock()
        self.last_round_at: float | None = None
        self.rounds = 0
        #: Rounds failed on store errors since the last round that completed, and since when.
        self.failed_rounds = 0
        self.failing_since: float | None = None
        self.started_at = clock()
        self._log = get_logger(replica=replica_id)
        self._lag_logged_at = 0.0
        r = self.registry

        info = Gauge(
            "executor_build_info",
            "Always 1; labels name the version and replica.",
            ["version", "replica"],
            registry=r,
        )
        info.labels(version=__version__, replica=replica_id).set(1)

        self.rounds_total = Counter(
            "executor_rounds", "Rounds run (claims made), empty ones included.", registry=r
        )
        self.round_seconds = Histogram(
            "executor_round_duration_seconds",
            "Wall time of a round: claim, handle, commit, finalize.",
            buckets=_ROUND_BUCKETS,
            registry=r,
        )
        self.claimed = Counter("executor_claimed_executions", "Executions claimed by rounds.", registry=r)
        self.committed = Counter(
            "executor_committed_executions", "Executions whose round was committed.", registry=r
        )
        self.leases_lost = Counter(
            "executor_leases_lost",
            "Executions whose lease another replica took before this one committed (round dropped).",
            registry=r,
        )
        self.finalized = Counter("executor_finalized_executions", "Executions finalized.", registry=r)
        self.handle_seconds = Histogram(
            "executor_handle_duration_seconds",
            "Time from a handle call's start to its outcome, by plugin and outcome.",
            ["plugin", "outcome"],
            buckets=_ROUND_BUCKETS,
            registry=r,
        )
        self.system_failures = Counter(
            "executor_system_failures",
            "handle calls that raised or timed out (system failures), by plugin.",
            ["plugin"],
            registry=r,
        )
        self.store_errors = Counter(
            "executor_store_errors",
            "Rounds that failed on a database error (retried with backoff).",
            registry=r,
        )
        self.wakeups = Counter(
            "executor_wakeups", "Times the idle loop was woken early (a submission, an abort).", registry=r
        )
        self.last_round = Gauge(
            "executor_last_round_timestamp_seconds", "When the last round finished (Unix time).", registry=r
        )
        self.loop_lag = Histogram(
            "executor_event_loop_lag_seconds",
            "How late the event loop ran a timer it was given: anything blocking the loop shows here.",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.loop_lag_last = Gauge(
            "executor_event_loop_lag_last_seconds", "The latest event-loop lag sample.", registry=r
        )
        self.blocked = Counter(
            "executor_plugin_loop_blocked",
            "Times a plugin call held the event loop for longer than the loop tolerates, by plugin.",
            ["plugin"],
            registry=r,
        )
        self.blocked_seconds = Counter(
            "executor_plugin_loop_blocked_seconds",
            "Seconds plugin calls held the event loop in such steps, by plugin.",
            ["plugin"],
            registry=r,
        )
        self.cpu_wait = Counter(
            "executor_event_loop_cpu_wait_seconds",
            "Seconds the event loop's thread was ready to run but waited for a CPU (starvation: an "
            "overloaded machine or a CPU limit; Linux only).",
            registry=r,
        )
        self.starved_steps = Counter(
            "executor_plugin_steps_starved",
            "Plugin steps over the blocking limit only because the process waited for a CPU (no "
            "plugin is blamed for these).",
            registry=r,
        )
        self.executions = Gauge(
            "executor_executions",
            "Executions in the store by phase, read at scrape time (the same for every replica).",
            ["phase"],
            registry=r,
        )
        self.store_up = Gauge(
            "executor_store_up", "1 when the scrape could read the store, 0 when it could not.", registry=r
        )
        self.calls_in_flight = Gauge(
            "executor_calls_in_flight",
            "Plugin calls that outlived their round's budget and still run, per plugin (at scrape time).",
            ["plugin"],
            registry=r,
        )
        self.call_in_flight_age = Gauge(
            "executor_call_in_flight_oldest_seconds",
            "How long the oldest call still in flight has run, per plugin (at scrape time).",
            ["plugin"],
            registry=r,
        )
        self._calls: Callable[[], Mapping[str, tuple[int, float]]] | None = None

    # -- RoundObserver ------------------------------------------------------------------------

    def round_finished(self, stats: RoundFigures, seconds: float) -> None:
        now = self.clock()
        self.rounds += 1
        self.last_heartbeat = self.last_round_at = now
        self.failed_rounds = 0
        self.failing_since = None
        self.rounds_total.inc()
        self.round_seconds.observe(seconds)
        self.claimed.inc(stats.claimed)
        self.committed.inc(stats.committed)
        self.leases_lost.inc(stats.lost)
        self.finalized.inc(stats.finalized)
        self.last_round.set(now)

    def handle_finished(self, plugin_id: str, outcome: str, seconds: float) -> None:
        self.handle_seconds.labels(plugin=plugin_id, outcome=outcome).observe(seconds)
        if outcome == "system_fault":
            self.system_failures.labels(plugin=plugin_id).inc()

    def loop_blocked(self, plugin_id: str, seconds: float) -> None:
        self.blocked.labels(plugin=plugin_id).inc()
        self.blocked_seconds.labels(plugin=plugin_id).inc(seconds)

    def loop_starved(self, seconds: float) -> None:
        self.starved_steps.inc()

    def woken(self) -> None:
        self.wakeups.inc()

    def store_error(self) -> None:
        self.last_heartbeat = self.clock()
        self.failed_rounds += 1
        if self.failing_since is None:
            self.failing_since = self.last_heartbeat
        self.store_errors.inc()

    # -- scrape -------------------------------------------------------------------------------

    def watch_calls(self, calls_in_flight: Callable[[], Mapping[str, tuple[int, float]]]) -> None:
        """Read the calls in flight (per plugin: how many, the oldest's age) at each scrape."""
        self._calls = calls_in_flight

    def _read_calls(self) -> None:
        if self._calls is None:
            return
        self.calls_in_flight.clear()  # a plugin with none left must not show its last count
        self.call_in_flight_age.clear()
        for plugin, (count, oldest) in self._calls().items():
            self.calls_in_flight.labels(plugin=plugin).set(count)
            self.call_in_flight_age.labels(plugin=plugin).set(oldest)

    async def render(self, store: Store, accept: str = "") -> tuple[bytes, str]:
        """The exposition (the format the `Accept` header asks for) and its content type, with
        the store-backed gauges read now."""
        try:
            counts = await store.count_by_phase()
        except Exception as err:
            self._log.warning("metrics.store_unreadable", error=f"{type(err).__name__}: {err}")
            self.store_up.set(0)
            self.executions.clear()  # a stale count would look current
        else:
            self.store_up.set(1)
            for phase in Phase:
                self.executions.labels(phase=phase.name).set(counts.get(phase, 0))
        self._read_calls()
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    # -- event-loop lag -----------------------------------------------------------------------

    async def watch_event_loop(self, interval: float = 0.1) -> None:
        """Measure, until cancelled, how late the loop wakes a task that asked to sleep `interval`.

        Anything that holds the loop (a plugin calling blocking code, say) delays every timer by
        as long as it holds it; the reconciler names the plugin in a `plugin.blocked_event_loop`
        warning, this records what every task on the loop felt. A process that is not scheduled
        is late too, though nothing holds its loop: the thread's wait for a CPU over the same
        interval (`threadclock`) tells the two apart.
        """
        while True:
            before = threadclock.snapshot()
            started = time.perf_counter()
            await anyio.sleep(interval)
            elapsed = time.perf_counter() - started
            waiting = threadclock.spent(before, elapsed).waiting
            self.cpu_wait.inc(waiting)
            self.observe_lag(max(elapsed - interval, 0.0), waiting)

    def observe_lag(self, lag: float, waiting_for_cpu: float = 0.0) -> None:
        """Record a lag sample; warn when it is over the limit, as starvation when the lag was
        mostly the thread waiting for a CPU (what is left of it is under the limit)."""
        self.loop_lag.observe(lag)
        self.loop_lag_last.set(lag)
        if lag >= LAG_WARNING_SECONDS:
            now = time.monotonic()
            if now - self._lag_logged_at >= _LAG_LOG_EVERY:
                self._lag_logged_at = now
                if lag - waiting_for_cpu < LAG_WARNING_SECONDS:
                    self._log.warning(
                        "event_loop.starved",
                        lag_seconds=round(lag, 3),
                        waiting_for_cpu_seconds=round(waiting_for_cpu, 3),
                        hint="the process waited for a CPU: the machine is overloaded or the process "
                        "is throttled (cgroup CPU limit); nothing held the loop",
                    )
                    return
                self._log.warning(
                    "event_loop.lagging",
                    lag_seconds=round(lag, 3),
                    waiting_for_cpu_seconds=round(waiting_for_cpu, 3),
                    hint="see plugin.blocked_event_loop warnings and executor_plugin_loop_blocked_total",
                )
