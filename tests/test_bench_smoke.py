"""Every benchmark scenario once, at a tiny size, so that `bench/` cannot rot.

Benchmarks are not tests: no figure is checked here, only that each scenario still runs end to end
(the daemon, the raw-SQL loops, the daemon as a process, the report) and reports something. The
PostgreSQL half of each scenario runs when EXECUTOR_TEST_POSTGRES_URL is set, as for the store
tests. The peers are bench-only (pgqueuer and procrastinate an extra, Graphile Worker and pg-boss
npm packages in bench/node): their scenario is skipped, and only it, where the Python ones are not
installed, and runs without the Node.js ones where those are not.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `pytest` run as a script does not put the checkout on the path
    sys.path.insert(0, str(ROOT))

from bench import peers, raw  # noqa: E402
from bench.catalog import ON_REQUEST, SCENARIOS  # noqa: E402
from bench.cli import run  # noqa: E402
from bench.harness import SMOKE, Report  # noqa: E402
from executor.core import Phase  # noqa: E402

POSTGRES_URL = os.environ.get("EXECUTOR_TEST_POSTGRES_URL")
#: Scenarios that measure PostgreSQL only (the peers are PostgreSQL queues; replicas racing for
#: schedules on SQLite would measure its write lock).
POSTGRES_ONLY = ("peers", "schedules", "long-run")


def _run(scenario: str, tmp_path: Path) -> Report:
    output = tmp_path / "BENCHMARKS.md"
    report = asyncio.run(
        run(SMOKE, [scenario], POSTGRES_URL, output, "smoke", quiet=True, workdir=tmp_path / "work")
    )
    assert report.measurements, f"scenario {scenario} measured nothing"
    for measurement in report.measurements:
        assert measurement.values, f"{measurement.subject}: {measurement.metric} has no value"
    stores = {measurement.store for measurement in report.measurements}
    assert "SQLite" in stores or scenario in POSTGRES_ONLY
    if POSTGRES_URL:
        assert "PostgreSQL" in stores
    text = output.read_text()
    assert text.startswith("# Benchmarks") and "## Machine and versions" in text
    return report


@pytest.mark.parametrize("scenario", [name for name in SCENARIOS if name != "peers"])
def test_scenario_runs(scenario: str, tmp_path: Path) -> None:
    if scenario in POSTGRES_ONLY and not POSTGRES_URL:
        pytest.skip(f"scenario {scenario} runs on PostgreSQL only")
    report = _run(scenario, tmp_path)
    if scenario in ("one-round", "history", "memory", "latency"):
        assert report.targets, f"scenario {scenario} checks no target"


def test_long_run_runs_shortened(tmp_path: Path) -> None:
    if not POSTGRES_URL:
        pytest.skip("the long run is on PostgreSQL: EXECUTOR_TEST_POSTGRES_URL is not set")
    assert "long-run" in ON_REQUEST and "long-run" not in SCENARIOS  # not part of `make bench`
    report = _run("long-run", tmp_path)
    assert {m.subject for m in report.measurements} >= {
        "executor daemon, first window",
        "executor daemon, last window",
    }
    assert [t.label for t in report.targets] == [
        "Long run PostgreSQL: pickup p50 last / first <= 1.2",
        "Long run PostgreSQL: pickup p99 last / first <= 1.2",
    ]


def test_peer_scenario_runs(tmp_path: Path) -> None:
    missing = [reason for peer in peers.PYTHON_PEERS if (reason := peers.available(peer))]
    if missing:
        pytest.skip("; ".join(missing))
    if not POSTGRES_URL:
        pytest.skip("the peers run on PostgreSQL: EXECUTOR_TEST_POSTGRES_URL is not set")
    report = _run("peers", tmp_path)
    measured = {measurement.subject.split()[0] for measurement in report.measurements}
    assert any(measurement.metric == "jobs/s" for measurement in report.measurements)
    # The Node.js peers (`make bench` installs them) run where Node.js and bench/node/node_modules
    # are; elsewhere the report says why not, and nothing else is skipped.
    for peer, name in ((peers.GRAPHILE_WORKER, "Graphile"), (peers.PG_BOSS, "pg-boss")):
        reason = peers.available(peer)
        assert (name in measured) == (reason is None), reason
    assert len(report.skipped) == sum(peers.available(peer) is not None for peer in peers.NODE_PEERS)
    labels = [target.label for target in report.targets]
    assert any(">= 2x pgqueuer at its best" in label for label in labels)
    for peer in peers.NODE_PEERS:
        if peers.available(peer) is None:
            assert any(f"ahead of {peer} at its defaults" in label for label in labels)


def test_raw_loops_store_the_daemons_phase_values() -> None:
    assert (int(Phase.RUNNING), int(Phase.SUCCESS)) == (raw.RUNNING, raw.SUCCESS)
