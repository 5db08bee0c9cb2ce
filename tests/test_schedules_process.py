"""Schedules in the real daemon: three replicas on PostgreSQL with one killed and restarted, and a
daemon stopped across five slots (misfire policies) while executions outlast their interval
(overlap policies). Declared through all three ways: the CLI, the start-up file and plugin code.

Waiting for slots to pass is what these tests are about; every other wait is a poll with a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from executor.core.phase import FINAL_PHASES
from executor.core.records import ExecutionRecord
from executor.store import Store
from executor.store.migrate import upgrade
from tests.test_daemon_process import Daemon, daemon_env, executor, poll

pytestmark = pytest.mark.process

PLUGINS = Path(__file__).resolve().parent / "schedule_plugins"


def executions_of(url: str, name: str) -> list[ExecutionRecord]:
    async def read() -> list[ExecutionRecord]:
        store = Store.from_url(url)
        try:
            return await store.list_executions(labels={"schedule": name}, limit=10_000)
        finally:
            await store.close()

    return asyncio.run(read())


def slots_of(url: str, name: str) -> list[float]:
    """The slots schedule `name` ran, in order; fails if one ran twice."""
    from datetime import datetime

    labels = [r.labels["schedule_slot"] for r in executions_of(url, name)]
    assert len(labels) == len(set(labels)), f"{name}: a slot ran twice: {sorted(labels)}"
    return sorted(datetime.fromisoformat(label).timestamp() for label in labels)


def migrate(url: str) -> None:
    async def go() -> None:
        store = Store.from_url(url)
        try:
            await upgrade(store.engine)
        finally:
            await store.close()

    asyncio.run(go())


def gapless(slots: list[float]) -> bool:
    return all(b - a == 1.0 for a, b in itertools.pairwise(slots))


def at_least(url: str, name: str, count: int) -> bool | None:
    return True if len(slots_of(url, name)) >= count else None


def after(moment: float) -> bool | None:
    return True if time.time() > moment else None


def schedules_file(tmp_path: Path, entries: list[dict[str, Any]]) -> Path:
    lines = []
    for entry in entries:
        lines.append("[[schedules]]")
        lines += [
            f"{key} = {json.dumps(value)}" for key, value in entry.items() if not isinstance(value, dict)
        ]
        for key, value in entry.items():
            if isinstance(value, dict):
                lines.append(f"{key} = {{ {', '.join(f'{k} = {json.dumps(v)}' for k, v in value.items())} }}")
    path = tmp_path / "schedules.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.postgres
@pytest.mark.slow
def test_three_replicas_make_one_execution_per_slot_while_one_is_killed_and_restarted(
    postgres_url: str, tmp_path: Path, start_daemon: Callable[[dict[str, str]], Daemon]
) -> None:
    migrate(postgres_url)
    path = schedules_file(tmp_path, [{"name": "every-second", "task_type": "tick", "every": 1.0}])
    envs = [
        daemon_env(postgres_url, PLUGINS, EXECUTOR_SCHEDULES_FILE=str(path), EXECUTOR_REPLICA_ID=f"r{i}")
        for i in range(3)
    ]
    daemons = [start_daemon(env) for env in envs]
    for daemon in daemons:
        daemon.wait_for_log("daemon.started")
    poll("four slots", lambda: at_least(postgres_url, "every-second", 4), 20)
    daemons[0].process.send_signal(signal.SIGKILL)
    daemons[0].wait()
    killed_at = time.time()
    poll("three slots with one replica down", lambda: after(killed_at + 3), 10)
    daemons.append(start_daemon(envs[0]))
    daemons[-1].wait_for_log("daemon.started")
    restarted = len(slots_of(postgres_url, "every-second"))
    poll(
        "four slots after the restart",
        lambda: True if len(slots_of(postgres_url, "every-second")) >= restarted + 4 else None,
        20,
    )
    for daemon in daemons[1:]:
        daemon.process.send_signal(signal.SIGTERM)
    for daemon in daemons[1:]:
        assert daemon.wait() == 0

    slots = slots_of(postgres_url, "every-second")  # fails on a slot made twice
    assert len(slots) >= 10
    assert gapless(slots), f"a slot was missed: {slots}"
    fired_by = {
        line["replica"] for d in daemons for line in d.lines() if line.get("event") == "schedules.fired"
    }
    assert len(fired_by) >= 2, "the slots were shared by the replicas, not fired by one"


def test_a_daemon_stopped_across_five_slots_and_executions_longer_than_their_interval(
    sqlite_url: str, tmp_path: Path, start_daemon: Callable[[dict[str, str]], Daemon]
) -> None:
    every = {"task_type": "tick", "every": 1.0}
    nap = {"task_type": "nap", "every": 1.0, "inputs": {"seconds": 2.5}}  # longer than the interval
    path = schedules_file(
        tmp_path,
        [
            {"name": "each", **every, "misfire": "each", "misfire_limit": 20},
            {"name": "once", **every, "misfire": "once"},
            {"name": "skip", **every, "misfire": "skip", "misfire_grace": 0.3},
            {"name": "nap-allow", **nap, "overlap": "allow"},
            {"name": "nap-skip", **nap, "overlap": "skip"},
        ],
    )
    env = daemon_env(sqlite_url, PLUGINS, EXECUTOR_SCHEDULES_FILE=str(path), SCHEDULE_TEST_DECLARE="in-code")
    migrate(sqlite_url)
    added = executor(env, tmp_path, "schedule", "add", "from-cli", "tick", "--every", "1h", "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["source"] == "cli"
    refused = executor(
        env, tmp_path, "schedule", "add", "bad", "tick", "--every", "1s", "--inputs", '{"x": 1}'
    )
    assert refused.returncode == 1 and "do not fit TickInput" in refused.stderr

    first = start_daemon(env)
    first.wait_for_log("daemon.started")
    poll("five slots", lambda: at_least(sqlite_url, "each", 5), 20)
    first.process.send_signal(signal.SIGTERM)
    assert first.wait() == 0
    before = {name: slots_of(sqlite_url, name) for name in ("each", "once", "skip")}
    stopped = max(max(s) for s in before.values())
    poll("five slots of downtime", lambda: after(stopped + 5.5), 10)

    second = start_daemon(env)
    second.wait_for_log("daemon.started")

    def misfire_of(name: str) -> dict[str, Any] | None:
        lines = [line for line in second.lines() if line.get("event") == "schedules.misfired"]
        return next((line for line in lines if line["schedule"] == name), None)

    misfired = {
        name: poll(f"{name}'s misfire", lambda n=name: misfire_of(n), 10) for name in ("once", "skip")
    }
    poll(
        "a slot after the restart",
        lambda: True if max(slots_of(sqlite_url, "each")) > stopped + 6.5 else None,
        10,
    )
    second.process.send_signal(signal.SIGTERM)
    assert second.wait() == 0

    def during(name: str, until: float) -> list[float]:
        return [s for s in slots_of(sqlite_url, name) if max(before[name]) < s < until]

    each = slots_of(sqlite_url, "each")
    assert gapless(each), f"each runs every slot: {each}"
    assert len(during("each", stopped + 5.5)) >= 5
    once_at = _ts(misfired["once"])
    assert misfired["once"]["missed"] >= 4
    assert len(during("once", once_at)) == 1, "once runs one of the missed slots"
    skip_at = _ts(misfired["skip"])
    assert during("skip", skip_at - 0.3) == [], "skip runs none of the missed slots"

    assert _most_at_once(sqlite_url, "nap-allow") >= 2, "allow: executions of one schedule ran at once"
    assert _most_at_once(sqlite_url, "nap-skip") == 1, "skip: a slot waits out the previous execution"
    assert len(executions_of(sqlite_url, "nap-skip")) >= 2

    listed = executor(env, tmp_path, "schedule", "list", "--json")
    sources = {item["name"]: item["source"] for item in json.loads(listed.stdout)}
    assert sources == {
        "each": "file",
        "once": "file",
        "skip": "file",
        "nap-allow": "file",
        "nap-skip": "file",
        "in-code": "code",
        "from-cli": "cli",
    }
    found = executor(env, tmp_path, "list", "--label", "schedule=in-code", "--json")
    assert found.returncode == 0 and len(json.loads(found.stdout)) >= 2


def _ts(line: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(line["timestamp"]).timestamp()


def _most_at_once(url: str, name: str) -> int:
    """The most executions of schedule `name` that were running at one instant: each from its
    submission to the event of its final phase (still running when it has none)."""

    async def spans() -> list[tuple[float, float]]:
        store = Store.from_url(url)
        try:
            found = []
            for record in await store.list_executions(labels={"schedule": name}, limit=1000):
                ends = [e.occurred_at for e in await store.events(record.id) if e.phase in FINAL_PHASES]
                found.append((record.created_at, min(ends, default=float("inf"))))
            return found
        finally:
            await store.close()

    found = asyncio.run(spans())
    return max(sum(1 for a, b in found if a <= t < b) for t, _ in found)


def test_a_schedule_declared_in_code_and_in_the_file_stops_the_start_with_its_name(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Last-declared-wins would make the stored schedule depend on the order of declaration: refused."""
    path = schedules_file(tmp_path, [{"name": "in-code", "task_type": "tick", "every": 60.0}])
    env = daemon_env(sqlite_url, PLUGINS, EXECUTOR_SCHEDULES_FILE=str(path), SCHEDULE_TEST_DECLARE="in-code")
    started = executor(env, tmp_path, "run")
    assert started.returncode != 0
    assert "'in-code' is declared both in plugin code and in" in started.stderr, started.stderr

    twice = schedules_file(tmp_path, [{"name": "dup", "task_type": "tick", "every": 60.0}] * 2)
    env = daemon_env(sqlite_url, PLUGINS, EXECUTOR_SCHEDULES_FILE=str(twice))
    started = executor(env, tmp_path, "run")
    assert started.returncode != 0 and "'dup' is declared twice in" in started.stderr, started.stderr
    assert executions_of(sqlite_url, "dup") == []
