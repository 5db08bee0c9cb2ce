"""What every scenario shares: sizes, measurements (median, min, max), ratios, targets, the report."""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each scenario is. `FULL` is issue 5's; `SMOKE` only proves the code still runs."""

    runs: int = 3
    batch_size: int = 256
    one_round: int = 50_000
    three_rounds: int = 20_000
    history_rows: int = 1_000_000
    #: Executions driven to SUCCESS on top of the history (and on an empty table, to compare).
    history_executions: int = 20_000
    pending_rows: int = 1_000_000
    #: How long the daemon runs over the pending rows while its RSS is sampled.
    memory_seconds: float = 20.0
    latency_samples: int = 200
    #: Per run: sampling stops at this many seconds even if fewer samples were taken.
    latency_seconds: float = 45.0
    peer_jobs: int = 50_000
    #: procrastinate runs a few hundred jobs/s here (its rate does not depend on the count, it has no
    #: batching): its count is capped so that a full run stays under 20 minutes.
    procrastinate_jobs: int = 5_000
    #: pg-boss at its defaults fetches one job per 2 s polling interval (0.5 jobs/s whatever the count):
    #: 50,000 jobs would take a day, so its default runs this many.
    pgboss_default_jobs: int = 10
    #: Scenario 6 at a constant rate: submissions a second, and for how long each run offers them.
    latency_rate: float = 200.0
    latency_rate_seconds: float = 10.0
    #: The long run (`make bench-long`): how long the constant stream lasts, and the window at each
    #: end whose pickup latencies are compared.
    long_seconds: float = 600.0
    long_window_seconds: float = 60.0
    #: Poll interval, in ms, of the step that waits for the daemon to finish a latency sample.
    poll_ms: float = 2.0
    #: EXECUTOR_POLL_INTERVAL for the daemon processes; empty keeps the daemon's default. Only
    #: the smoke run sets it, so that a store without wake-ups does not cost it a second a sample.
    daemon_poll_interval: str = ""
    #: Scenario 8: one-round executions per run, the share of them that are slow, and how long
    #: each slow `handle` takes.
    stragglers: int = 20_000
    straggler_share: float = 0.01
    straggler_seconds: float = 0.5
    #: Scenario 9: how long the stream of submissions runs, and how long each busy `handle` takes.
    pickup_seconds: float = 12.0
    busy_seconds: float = 5.0
    #: Scenario 10: schedules all due in the same second, and the scheduler processes racing for them.
    schedules: int = 10_000
    schedule_replicas: int = 3
    #: Scenario 11: finished rows the pruner deletes while the daemon runs this many executions.
    prune_rows: int = 1_000_000
    prune_executions: int = 20_000
    #: Scenario 12: how long submissions arrive, how many a second, and how long SUCCESS is kept.
    churn_seconds: float = 60.0
    churn_rate: int = 1_000
    churn_retention: float = 5.0

    def scaled(self, **changes: object) -> Sizes:
        return replace(self, **changes)  # type: ignore[arg-type]


FULL = Sizes()
SMOKE = Sizes(
    runs=1,
    batch_size=16,
    one_round=40,
    three_rounds=24,
    history_rows=500,
    history_executions=40,
    pending_rows=500,
    memory_seconds=0.2,
    latency_samples=1,
    latency_seconds=5.0,
    latency_rate_seconds=0.5,
    long_seconds=4.0,
    long_window_seconds=1.0,
    daemon_poll_interval="50ms",
    peer_jobs=30,
    procrastinate_jobs=20,
    pgboss_default_jobs=2,
    stragglers=200,
    straggler_seconds=0.05,
    pickup_seconds=1.0,
    busy_seconds=0.5,
    schedules=50,
    schedule_replicas=2,
    prune_rows=500,
    prune_executions=40,
    churn_seconds=2.0,
    churn_rate=50,
    churn_retention=0.5,
)


@dataclass(slots=True)
class Measurement:
    """One figure, measured `runs` times; the report shows the median, min and max."""

    scenario: str
    store: str
    subject: str
    metric: str
    unit: str
    values: list[float] = field(default_factory=list)
    higher_is_better: bool = True
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def high(self) -> float:
        return max(self.values) if self.values else float("nan")


@dataclass(frozen=True, slots=True)
class Ratio:
    """The median of `numerator` over the median of `denominator`, both from this run."""

    label: str
    numerator: Measurement
    denominator: Measurement

    @property
    def value(self) -> float:
        return self.numerator.median / self.denominator.median if self.denominator.median else float("nan")


@dataclass(frozen=True, slots=True)
class Target:
    """A target of issue 5: `figure` compared with `threshold` (`at_least` or `below`)."""

    label: str
    figure: float
    threshold: float
    at_least: bool
    unit: str = ""

    @property
    def met(self) -> bool:
        return self.figure >= self.threshold if self.at_least else self.figure < self.threshold


@dataclass(slots=True)
class Report:
    measurements: list[Measurement] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Scenarios that could not run here, with the reason (peers not installed, no PostgreSQL).
    skipped: list[str] = field(default_factory=list)

    def measurement(
        self,
        scenario: str,
        store: str,
        subject: str,
        metric: str,
        unit: str,
        *,
        higher_is_better: bool = True,
        note: str = "",
    ) -> Measurement:
        """The measurement with these names, created on first use."""
        for existing in self.measurements:
            if (existing.scenario, existing.store, existing.subject, existing.metric) == (
                scenario,
                store,
                subject,
                metric,
            ):
                return existing
        created = Measurement(scenario, store, subject, metric, unit, [], higher_is_better, note)
        self.measurements.append(created)
        return created

    def find(self, scenario: str, store: str, subject: str, metric: str) -> Measurement | None:
        for existing in self.measurements:
            if (existing.scenario, existing.store, existing.subject, existing.metric) == (
                scenario,
                store,
                subject,
                metric,
            ):
                return existing
        return None

    def ratio(self, label: str, numerator: Measurement, denominator: Measurement) -> Ratio:
        made = Ratio(label, numerator, denominator)
        self.ratios.append(made)
        return made

    def target(self, label: str, figure: float, threshold: float, *, at_least: bool, unit: str = "") -> None:
        self.targets.append(Target(label, figure, threshold, at_least, unit))


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p99 of 100 samples is the 99th smallest)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5 - 1e-9)))
    return ordered[rank - 1]


class Progress:
    """One line per step on stderr, with the time since the start: a long run shows where it is."""

    def __init__(self, quiet: bool = False) -> None:
        self.started = time.perf_counter()
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            elapsed = time.perf_counter() - self.started
            print(f"[bench {elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)


def fmt(value: float, unit: str = "") -> str:
    """Figures as people read them: 41,234 executions/s, 0.93, 12.3 ms."""
    if math.isnan(value):
        return "n/a"
    if unit in ("ratio", "x"):
        if 0 < abs(value) < 0.001:
            return f"{value:.1e}"  # pg-boss at its defaults against the daemon: not 0.000
        return f"{value:.3f}" if abs(value) < 0.1 else f"{value:.2f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"
