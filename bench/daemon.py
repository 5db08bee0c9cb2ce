"""The daemon under test, in process (throughput) and as its own process (memory, latency).

Both load plugins the way a deployment does, through `EXECUTOR_PLUGINS_DIR`: a directory holding
the project's `plugins/` (echo, core-sleep) and the bench-only plugins of `bench/plugins/`. In
process, the loop is the real `Reconciler.run()` over the real store; the subprocess is the
shipped command line, `python -m executor run`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.cpu import CpuUse, CpuWindow
from executor.core import Phase
from executor.daemon import setup_plugins, tune_gc
from executor.logging import configure_logging
from executor.plugin.resources import InProcessResourceManager
from executor.runtime import NullObserver, Reconciler, RoundStats
from executor.settings import Settings, load_settings
from executor.store import Store

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_PLUGINS = Path(__file__).resolve().parent / "plugins"


def plugins_directory() -> Path:
    """A fresh directory with the project's plugins and the bench plugins, as a deployment has."""
    directory = Path(tempfile.mkdtemp(prefix="executor-bench-plugins-"))
    for source in (REPO_ROOT / "plugins", BENCH_PLUGINS):
        for path in sorted(source.glob("*.py")):
            if not path.name.startswith("_"):
                shutil.copyfile(path, directory / path.name)
    return directory


def daemon_settings(url: str, plugins_dir: Path, batch_size: int) -> Settings:
    return load_settings(
        database_url=url,
        plugins_dir=plugins_dir,
        plugin_entry_points=False,
        migrate_on_start=False,
        batch_size=batch_size,
        log_level="warning",
        log_format="json",
        http_addr="",  # the loop alone: no HTTP server (ignored by versions without one)
    )


@dataclass(slots=True)
class DaemonRun:
    executions: int
    seconds: float
    rounds: int
    #: Durations of the rounds that claimed a full batch (the tail round is smaller).
    full_round_seconds: list[float] = field(default_factory=list)
    #: CPU over the clock (this process and the database's backends), when asked for.
    cpu: CpuUse | None = None
    #: The wall clock (`time.time()`, as rows' `finished_at`) when the timed run began.
    wall_started: float = 0.0
    #: First claim to the last round that finalized an execution: `seconds` ends with the last
    #: round that claimed, before calls that outlived their rounds (stragglers) were committed.
    seconds_to_last_finalized: float = 0.0


class _Counter(NullObserver):
    """Observes the loop: times each round and stops the loop once every execution is finalized."""

    def __init__(self, expected: int, batch_size: int, cpu: CpuWindow | None = None) -> None:
        self.expected = expected
        self.cpu = cpu
        self.batch_size = batch_size
        self.finalized = 0
        self.rounds = 0
        self.last_round_end = time.perf_counter()
        self.last_finalized_end = self.last_round_end
        self.full_round_seconds: list[float] = []
        self.reconciler: Reconciler | None = None

    def round_finished(self, stats: RoundStats, seconds: float) -> None:
        if stats.claimed:
            self.rounds += 1
            self.last_round_end = time.perf_counter()
            if self.cpu is not None:
                self.cpu.mark()
            if stats.claimed >= self.batch_size:
                self.full_round_seconds.append(seconds)
        self.finalized += stats.finalized
        if stats.finalized:
            self.last_finalized_end = time.perf_counter()
        # Stop once all are done, or when nothing was claimable and no call is still running
        # (the caller checks the count).
        idle = not stats.claimed and (self.reconciler is None or self.reconciler.in_flight == 0)
        done = self.finalized >= self.expected or idle
        if done and self.reconciler is not None:
            self.reconciler.stop()


async def drive(
    url: str, expected: int, plugins_dir: Path, batch_size: int, *, cpu_of: str | None = None
) -> DaemonRun:
    """Run the daemon's loop until `expected` executions are finalized; time first claim to last commit.

    With `cpu_of` (a PostgreSQL database's name), also the CPU this process and that database's
    backends used over the same interval (`bench/cpu.py`).
    """
    settings = daemon_settings(url, plugins_dir, batch_size)
    configure_logging(settings.log_level, settings.log_format)
    resources = InProcessResourceManager(settings.resource_quotas)
    plugins = await setup_plugins(settings, resources)
    store = Store.from_url(settings.database_url)
    try:
        await store.ping()  # open the connection before the clock starts, as the baselines do
        window = CpuWindow(cpu_of) if cpu_of is not None else None
        counter = _Counter(expected, settings.batch_size, window)
        reconciler = Reconciler(store, plugins, settings, resource_manager=resources, observer=counter)
        counter.reconciler = reconciler
        tune_gc()  # as `executor run` does once started
        if window is not None:
            window.start()
        started, wall_started = time.perf_counter(), time.time()
        await reconciler.run()
        seconds = counter.last_round_end - started
        used = window.finish() if window is not None else None
        done = (await store.count_by_phase()).get(Phase.SUCCESS, 0)
    finally:
        await store.close()
    if done < expected:
        raise RuntimeError(f"the daemon finished {done} of {expected} executions")
    return DaemonRun(
        expected,
        seconds,
        counter.rounds,
        counter.full_round_seconds,
        used,
        wall_started,
        counter.last_finalized_end - started,
    )


class DaemonProcess:
    """`python -m executor run` as a child process, stopped with SIGTERM (its graceful stop)."""

    def __init__(
        self,
        url: str,
        plugins_dir: Path,
        batch_size: int,
        log_path: Path,
        poll_interval: str = "",
        http_addr: str = "127.0.0.1:0",
    ) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("EXECUTOR_")} | {
            "EXECUTOR_DATABASE_URL": url,
            "EXECUTOR_PLUGINS_DIR": str(plugins_dir),
            "EXECUTOR_PLUGIN_ENTRY_POINTS": "false",
            "EXECUTOR_BATCH_SIZE": str(batch_size),
            "EXECUTOR_LOG_LEVEL": "warning",
            "EXECUTOR_LOG_FORMAT": "json",
            # The HTTP API, metrics and dashboard stay on, as deployed, on a port of their own.
            "EXECUTOR_HTTP_ADDR": http_addr,
        }
        if poll_interval:
            env["EXECUTOR_POLL_INTERVAL"] = poll_interval
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "executor", "run"],
            cwd=plugins_dir,  # no `.env` or `plugins/` of the caller's may leak in
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"the daemon exited with {self.process.returncode}: {self.log_path.read_text()[-2000:]}"
            )

    def memory(self) -> tuple[float, float]:
        """(current RSS, peak RSS) in MiB, from /proc (VmRSS, VmHWM)."""
        fields: dict[str, float] = {}
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = float(value.split()[0]) / 1024
        return fields.get("VmRSS", float("nan")), fields.get("VmHWM", float("nan"))

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode
