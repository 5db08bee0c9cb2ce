"""Faults survived by several replica processes on a real PostgreSQL (issue 4, faults 1, 2 and 5).

Each test starts real `executor run` processes and hurts them the way production does: SIGKILL,
a PostgreSQL restart, SIGTERM. Afterwards it checks the database and the `fence` plugin's record
of every `handle` call (tests/replica_plugins/fence.py):

- every execution ends SUCCESS and finalized;
- events are 1, 2, 3, ... per execution (their primary key forbids duplicates) and no phase goes
  backwards: (phase, version) strictly increases along each history;
- fencing: each round of a fence execution committed exactly once, under a lease token that its
  handle call recorded; the token chain its state carried from round to round is the chain of the
  committed events, so no round was ever committed from a stale read by a replica that had lost
  the lease.

Sizes fit 2 cores: fault 1 runs 3,000 executions (2,400 core-sleep of 300 ms, 600 three-round
fence) on 4 replicas, one of them SIGKILLed every second and restarted; about 20 s. Fault 2 starts a
private PostgreSQL cluster of its own (never the shared server) and restarts it under load.
Waits are polls with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from executor.core import Phase

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parent.parent
FENCE_PLUGIN = Path(__file__).resolve().parent / "replica_plugins" / "fence.py"
SLEEP_PLUGIN = ROOT / "plugins" / "sleep.py"


def plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def query(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(plain(url))
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(go())


def wait_for(probe: Callable[[], Any], done: Callable[[Any], bool], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {result!r} after {within}s")
        time.sleep(0.1)


def submit(url: str, items: list[tuple[str, dict[str, Any]]]) -> list[str]:
    from executor.store import Store, Submission

    async def go() -> list[str]:
        store = Store.from_url(url)
        try:
            return await store.submit_many([Submission(t, i) for t, i in items], now=time.time())
        finally:
            await store.close()

    return asyncio.run(go())


class Replicas:
    """`executor run` processes on one database, each logging JSON lines to a file of its own."""

    def __init__(self, url: str, workdir: Path, **env: str) -> None:
        self.url = url
        self.workdir = workdir
        self.plugins = workdir / "plugins"
        self.plugins.mkdir(exist_ok=True)
        shutil.copy(SLEEP_PLUGIN, self.plugins / "sleep.py")
        shutil.copy(FENCE_PLUGIN, self.plugins / "fence.py")
        self.fence_log = workdir / "fence"
        self.fence_log.mkdir(exist_ok=True)
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

    def start(self, replica_id: str, **env: str) -> subprocess.Popen[bytes]:
        log = self.workdir / f"{replica_id}.log"
        environment = {
            **os.environ,
            "EXECUTOR_DATABASE_URL": self.url,
            "EXECUTOR_PLUGINS_DIR": str(self.plugins),
            "EXECUTOR_PLUGIN_ENTRY_POINTS": "false",
            "EXECUTOR_REPLICA_ID": replica_id,
            "EXECUTOR_LOG_FORMAT": "json",
            "EXECUTOR_HTTP_ADDR": "",
            "FENCE_LOG_DIR": str(self.fence_log),
            **self.env,
            **env,
        }
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "executor", "run"],
                cwd=self.workdir,
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs[replica_id] = proc
        self.logs[replica_id] = log
        return proc

    def log_events(self, replica_id: str) -> list[dict[str, Any]]:
        lines = self.logs[replica_id].read_text().splitlines()
        found = []
        for line in lines:
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return found

    def wait_started(self, replica_id: str, within: float = 30) -> None:
        wait_for(
            lambda: [e["event"] for e in self.log_events(replica_id)],
            lambda names: "daemon.started" in names,
            within,
            f"{replica_id} to start",
        )

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def handle_calls(self) -> list[dict[str, Any]]:
        calls = []
        for path in glob.glob(str(self.fence_log / "*.jsonl")):
            calls += [json.loads(line) for line in Path(path).read_text().splitlines() if line]
        return calls


def finished(url: str) -> int:
    [row] = query(url, "SELECT count(*) AS n FROM executions WHERE finalized")
    return int(row["n"])


def check_histories(url: str, ids: list[str], calls: list[dict[str, Any]]) -> dict[str, int]:
    """Every execution SUCCESS and finalized; events contiguous and never going backwards; the
    fence executions' rounds each committed once, under a recorded lease token."""
    rows = query(url, "SELECT id, task_type, phase, finalized, outputs FROM executions")
    by_id = {row["id"]: row for row in rows}
    assert set(ids) <= set(by_id)
    not_done = [(i, by_id[i]["phase"]) for i in ids if by_id[i]["phase"] != int(Phase.SUCCESS)]
    assert not not_done, f"{len(not_done)} executions did not succeed: {not_done[:5]}"
    assert all(by_id[i]["finalized"] for i in ids)

    histories: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for event in query(url, "SELECT execution_id, seq, phase, phase_version, info FROM events ORDER BY 1, 2"):
        histories[event["execution_id"]].append(event)
    recorded = {(c["e"], c["k"], c["token"]) for c in calls}
    fence_rounds = 0
    for execution_id in ids:
        history = histories[execution_id]
        assert [e["seq"] for e in history] == list(range(1, len(history) + 1)), execution_id
        steps = [(e["phase"], e["phase_version"]) for e in history]
        assert all(a < b for a, b in itertools.pairwise(steps)), (execution_id, steps)
        assert steps[0] == (int(Phase.QUEUED), 0) and steps[-1][0] == int(Phase.SUCCESS)
        if by_id[execution_id]["task_type"] != "fence":
            continue
        committed = [json.loads(e["info"])["custom_info"] for e in history if e["info"]]
        # One committed round per index, in order: no round was committed twice.
        assert [c["k"] for c in committed] == list(range(len(committed))), (execution_id, committed)
        tokens = [c["token"] for c in committed]
        assert len(set(tokens)) == len(tokens)
        # Each committed round's token is one its handle call ran under ...
        assert all((execution_id, c["k"], c["token"]) in recorded for c in committed), execution_id
        # ... and the state each round read is exactly what the committed rounds before it wrote.
        assert json.loads(by_id[execution_id]["outputs"])["tokens"] == tokens
        fence_rounds += len(committed)
    return {"fence_rounds_committed": fence_rounds, "handle_calls": len(calls)}


# -- fault 1: a replica SIGKILLed again and again ---------------------------------------------------


def test_replicas_survive_one_of_them_being_sigkilled_repeatedly(postgres_url: str, tmp_path: Path) -> None:
    replicas = Replicas(
        postgres_url,
        tmp_path,
        EXECUTOR_LEASE_TTL="3s",
        EXECUTOR_HANDLE_TIMEOUT="2s",
        EXECUTOR_BATCH_SIZE="100",
        EXECUTOR_POLL_INTERVAL="500ms",
        EXECUTOR_HEARTBEAT_INTERVAL="1s",
    )
    # Long enough to stay in flight through several kills (one a second): sized by time, not by
    # count, so that a faster daemon does not finish the work before the faults begin.
    items = [("core-sleep", {"duration": "4s"})] * 2400 + [("fence", {"rounds": 5, "interval": "1s"})] * 600
    try:
        for n in range(4):
            replicas.start(f"r{n}")
        for n in range(4):
            replicas.wait_started(f"r{n}")
        ids = submit(postgres_url, items)
        kills = 0
        generation = 0
        started = time.monotonic()
        while finished(postgres_url) < len(ids):
            assert time.monotonic() - started < 90, f"only {finished(postgres_url)} of {len(ids)} finished"
            time.sleep(1.0)
            if finished(postgres_url) >= len(ids):
                break
            victim = f"r0.{generation}" if generation else "r0"
            replicas.procs[victim].send_signal(signal.SIGKILL)
            replicas.procs[victim].wait()
            kills += 1
            generation += 1
            replicas.start(f"r0.{generation}")
        elapsed = time.monotonic() - started
        calls = replicas.handle_calls()
        figures = check_histories(postgres_url, ids, calls)
        assert kills >= 3, f"the work finished after only {kills} kills: make it bigger"
        # Some handle calls ran in rounds that never committed (the killed replica's): fencing
        # had something to do.
        print(f"\n{len(ids)} executions in {elapsed:.1f}s with {kills} SIGKILLs; {figures}")
    finally:
        replicas.stop_all()


# -- fault 5: SIGTERM -----------------------------------------------------------------------------


def test_sigterm_finishes_the_round_or_hands_its_leases_back_and_exits_0(
    postgres_url: str, tmp_path: Path
) -> None:
    replicas = Replicas(
        postgres_url,
        tmp_path,
        EXECUTOR_LEASE_TTL="60s",
        EXECUTOR_HANDLE_TIMEOUT="50s",
        EXECUTOR_POLL_INTERVAL="200ms",
    )
    try:
        # A round that fits in the grace: committed, then exit 0.
        a = replicas.start("a", EXECUTOR_SHUTDOWN_GRACE="10s")
        replicas.wait_started("a")
        ids = submit(postgres_url, [("fence", {"rounds": 2, "hold": "1500ms", "hold_on": "a"})] * 10)
        wait_for(replicas.handle_calls, lambda calls: len(calls) == 10, 20, "a's round to start")
        signalled = time.monotonic()
        a.send_signal(signal.SIGTERM)
        assert a.wait(timeout=15) == 0
        assert time.monotonic() - signalled < 10
        rows = query(postgres_url, "SELECT phase_version, lease_token, event_seq FROM executions")
        assert [(r["phase_version"], r["lease_token"], r["event_seq"]) for r in rows] == [(1, None, 2)] * 10
        # Another replica carries on at once.
        b = replicas.start("b")
        wait_for(lambda: finished(postgres_url), lambda n: n == 10, 30, "b to finish a's work")
        b.send_signal(signal.SIGTERM)
        assert b.wait(timeout=15) == 0

        # A round longer than the grace: cancelled, its leases handed back, exit 0; the next
        # replica takes the executions at once, not after the 60 s lease TTL.
        c = replicas.start("c", EXECUTOR_SHUTDOWN_GRACE="1s")
        replicas.wait_started("c")
        more = submit(postgres_url, [("fence", {"rounds": 2, "hold": "40s", "hold_on": "c"})] * 5)
        wait_for(
            lambda: [x for x in replicas.handle_calls() if x["replica"] == "c"],
            lambda calls: len(calls) == 5,
            20,
            "c's round to start",
        )
        c.send_signal(signal.SIGTERM)
        assert c.wait(timeout=15) == 0
        leased = query(postgres_url, "SELECT count(*) AS n FROM executions WHERE lease_token IS NOT NULL")
        assert leased[0]["n"] == 0
        taken = time.monotonic()
        replicas.start("d")
        wait_for(lambda: finished(postgres_url), lambda n: n == 15, 30, "d to finish c's work")
        assert time.monotonic() - taken < 30  # far less than the TTL, which it never waited for
        check_histories(postgres_url, ids + more, replicas.handle_calls())
        names = [e["event"] for e in replicas.log_events("c")]
        assert "daemon.grace_expired" in names and "daemon.stopped" in names
    finally:
        replicas.stop_all()


# -- fault 2: PostgreSQL restarted under load -------------------------------------------------------


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateCluster:
    """A throwaway PostgreSQL cluster on a free port, run as the postgres user."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="executor-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        shutil.chown(self.root, "postgres")
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        prefix = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-N")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def restart(self) -> None:
        # -l again: without it the new server writes to our pipe and pg_ctl never seems done.
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-m",
            "fast",
            "-w",
            "restart",
        )

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivateCluster]:
    bindir = _pg_bin()
    if bindir is None or (os.geteuid() == 0 and shutil.which("runuser") is None):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed here")
    cluster = PrivateCluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def test_replicas_ride_out_a_postgres_restart_under_load(
    private_postgres: PrivateCluster, tmp_path: Path
) -> None:
    url = private_postgres.url
    replicas = Replicas(
        url,
        tmp_path,
        EXECUTOR_LEASE_TTL="5s",
        EXECUTOR_HANDLE_TIMEOUT="2s",
        EXECUTOR_BATCH_SIZE="50",
        EXECUTOR_POLL_INTERVAL="500ms",
        EXECUTOR_HEARTBEAT_INTERVAL="1s",
    )
    try:
        replicas.start("p0")
        replicas.wait_started("p0")  # it migrated the fresh database
        replicas.start("p1")
        replicas.wait_started("p1")
        ids = submit(
            url,
            [("fence", {"rounds": 4, "interval": "200ms"})] * 200
            + [("core-sleep", {"duration": "2s"})] * 200,
        )
        wait_for(lambda: finished(url), lambda n: n >= 50, 30, "work under way")
        assert finished(url) < len(ids), "all done before the restart: make the load bigger"
        private_postgres.restart()
        wait_for(lambda: finished(url), lambda n: n == len(ids), 60, "all executions to finish")
        check_histories(url, ids, replicas.handle_calls())
        for replica in ("p0", "p1"):
            names = [e["event"] for e in replicas.log_events(replica)]
            assert "round.store_error" in names or "listener.connection_lost" in names, replica
            assert "listener.connected" in names[names.index("daemon.started") :]
        lost = [e for r in ("p0", "p1") for e in replicas.log_events(r) if e["event"] == "round.store_error"]
        assert all("retry_in" in e for e in lost)
        assert any(e["event"] == "database.reconnected" for r in ("p0", "p1") for e in replicas.log_events(r))
        assert all(proc.poll() is None for proc in replicas.procs.values()), "a replica died"
    finally:
        replicas.stop_all()
