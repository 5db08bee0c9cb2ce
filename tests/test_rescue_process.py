"""Rescue by heartbeat (issue 21), with real daemon processes: a replica that stops heart-beating
has its leases taken over within a few heartbeat intervals, not the lease TTL (120 s here, the
default); one that was only slow (stopped, then continued) loses its commits and corrupts nothing.

The held calls are `tests/plugins/gated.py`, waiting for the test to create their gate.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from executor.core import Phase
from tests.test_daemon_process import Daemon, daemon_env, read_store
from tests.test_stragglers_process import Gate, is_finalized, plugins_dir, submit, wait_until

pytestmark = pytest.mark.process

__all__ = ["plugins_dir"]  # a fixture, shared

HEARTBEAT = 1.0


def _replicas(
    database_url: str, plugins: Path, start: Callable[[dict[str, str]], Daemon]
) -> tuple[Daemon, Callable[[], Daemon]]:
    """Replica "one" started; "two" started by the returned function. The default lease TTL."""

    def env(name: str) -> dict[str, str]:
        return daemon_env(
            database_url, plugins, EXECUTOR_REPLICA_ID=name, EXECUTOR_HEARTBEAT_INTERVAL=f"{HEARTBEAT}s"
        )

    one = start(env("one"))
    one.wait_for_log("daemon.started")

    def second() -> Daemon:
        two = start(env("two"))
        two.wait_for_log("daemon.started")
        return two

    return one, second


def _held_by_one(database_url: str, tmp_path: Path, plugins: Path, gate: Gate, count: int = 3) -> list[str]:
    env = daemon_env(database_url, plugins)
    ids = [submit(env, tmp_path, "gated", gate.inputs()) for _ in range(count)]
    wait_until("replica one to hold every call", lambda: gate.calls().count("handle") == count)
    assert {read_store(database_url, i)[0].lease_owner for i in ids} == {"one"}
    return ids


def _ended_once(database_url: str, ids: list[str]) -> None:
    for execution_id in ids:
        record, events = read_store(database_url, execution_id)
        assert record.phase is Phase.SUCCESS and record.finalized
        assert [event.phase for event in events] == [Phase.QUEUED, Phase.SUCCESS]
        assert record.lease_owner is None


def test_a_killed_replicas_executions_resume_within_three_heartbeats(
    database_url: str, tmp_path: Path, plugins_dir: Path, start_daemon: Callable[[dict[str, str]], Daemon]
) -> None:
    one, start_two = _replicas(database_url, plugins_dir, start_daemon)
    gate = Gate(tmp_path)
    ids = _held_by_one(database_url, tmp_path, plugins_dir, gate)
    two = start_two()

    one.process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    one.wait()
    wait_until("replica two to take the calls over", lambda: gate.calls().count("handle") == 6, timeout=30)
    resumed_after = time.monotonic() - killed
    # The lease TTL is 120 s: only the heartbeat can have told replica two.
    assert resumed_after < 3 * HEARTBEAT, f"resumed {resumed_after:.2f}s after the kill"
    assert {read_store(database_url, i)[0].lease_owner for i in ids} == {"two"}

    gate.open()
    wait_until("replica two to finish them", lambda: all(is_finalized(database_url, i) for i in ids))
    _ended_once(database_url, ids)
    two.process.send_signal(signal.SIGTERM)
    assert two.wait() == 0


def test_a_replica_that_was_only_slow_loses_its_commits_and_corrupts_nothing(
    database_url: str, tmp_path: Path, plugins_dir: Path, start_daemon: Callable[[dict[str, str]], Daemon]
) -> None:
    one, start_two = _replicas(database_url, plugins_dir, start_daemon)
    gate = Gate(tmp_path)
    ids = _held_by_one(database_url, tmp_path, plugins_dir, gate)
    two = start_two()

    one.process.send_signal(signal.SIGSTOP)  # alive, but silent: its heartbeat goes stale
    try:
        wait_until("replica two to take the calls over", lambda: gate.calls().count("handle") == 6)
        gate.open()
        wait_until("replica two to finish them", lambda: all(is_finalized(database_url, i) for i in ids))
        before = {i: read_store(database_url, i) for i in ids}
    finally:
        one.process.send_signal(signal.SIGCONT)

    # Replica one's calls now see the gate open and return: it must find its leases gone.
    wait_until(
        "replica one's calls to end",
        lambda: sum(c in ("handle-done", "handle-cancelled") for c in gate.calls()) == 6,
    )
    wait_until(
        "replica one to find its leases gone",
        lambda: any(line.get("event") in ("round.leases_lost", "lease.lost") for line in one.lines()),
    )
    _ended_once(database_url, ids)
    assert {i: read_store(database_url, i) for i in ids} == before  # not a byte written by one

    for replica in (one, two):
        replica.process.send_signal(signal.SIGTERM)
        assert replica.wait() == 0
