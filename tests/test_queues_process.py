"""Which replica runs what, with real `executor run` processes and the CLI: a pause honoured by
every replica (aborts still carried out), queue-bound replicas that never claim another queue's
work, and pinned executions that no replica of another host claims, not even after the pinning
host's daemon was SIGKILLed, until a daemon of that host comes back.

Every execution records which replica and host ran each of its rounds (`where`, below), read back
from the store. Waits are polls with deadlines; each "never" is checked after a positive control
showed the other replica claiming (so the test could fail).
"""

from __future__ import annotations

import asyncio
import json
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from executor.app.parts import connect, task_types
from executor.core import Phase
from executor.core.records import ExecutionRecord
from executor.settings import load_settings
from executor.store import Store
from tests.test_daemon_process import BUILTIN_PLUGINS, Daemon, daemon_env, executor, poll

pytestmark = pytest.mark.process

WHERE = '''
"""where: each round records the replica and host that ran it in the plugin state; it succeeds
after `rounds` rounds (input, default 1), its outputs the list of (replica, host) per round."""

from pydantic import BaseModel

from executor import plugin_registry
from executor.core import PhaseInfo, Plugin, PluginEntry, do_transition


class Seen(BaseModel):
    rounds: list[list[str]] = []


class Where(Plugin):
    def __init__(self, setup):
        self.me = [setup.settings.replica_id, setup.settings.host]

    async def handle(self, tctx):
        _, seen = tctx.plugin_state_reader.get(Seen)
        rounds = seen.rounds + [self.me]
        wanted = (await tctx.input_reader.get()).get("rounds", 1)
        if len(rounds) >= wanted:
            await tctx.output_writer.put({"rounds": rounds})
            return do_transition(PhaseInfo.success())
        tctx.plugin_state_writer.put(0, Seen(rounds=rounds))
        return do_transition(PhaseInfo.running(0), requeue_after=0.05)


for entry in (
    PluginEntry(id="where", registered_task_types=["where"], load_plugin=Where),
    PluginEntry(id="where-gpu", registered_task_types=["where-gpu"], load_plugin=Where, queue="gpu"),
    PluginEntry(
        id="where-pinned", registered_task_types=["where-pinned"], load_plugin=Where, pin_to_host=True
    ),
):
    plugin_registry().register_core_plugin(entry)
'''

Start = Callable[[dict[str, str]], Daemon]


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "plugins"
    directory.mkdir()
    (directory / "echo.py").write_text((BUILTIN_PLUGINS / "echo.py").read_text())
    (directory / "where.py").write_text(textwrap.dedent(WHERE))
    return directory


def env_of(database_url: str, plugins_dir: Path, replica: str, **extra: str) -> dict[str, str]:
    return daemon_env(
        database_url,
        plugins_dir,
        EXECUTOR_REPLICA_ID=replica,
        EXECUTOR_HEARTBEAT_INTERVAL="0.2",
        EXECUTOR_LEASE_TTL="3s",
        **extra,
    )


def submit(env: dict[str, str], cwd: Path, task_type: str, *options: str, inputs: str = "{}") -> str:
    """Through the CLI (a process start each: used once per kind of submission)."""
    done = executor(env, cwd, "submit", task_type, "--inputs", inputs, *options)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def submit_many(env: dict[str, str], count: int, task_type: str, **options: Any) -> list[str]:
    """Through the Python client, which applies the plugin entries' queue and pin as the CLI does."""
    settings = load_settings(
        **{k.removeprefix("EXECUTOR_").lower(): v for k, v in env.items() if k.startswith("EXECUTOR_")}
    )

    async def go() -> list[str]:
        client = await connect(settings, task_types=task_types(settings))
        try:
            return [await client.submit(task_type, **options) for _ in range(count)]
        finally:
            await client.close()

    return asyncio.run(go())


def abort_all(env: dict[str, str], ids: list[str]) -> None:
    async def go() -> None:
        client = await connect(load_settings(database_url=env["EXECUTOR_DATABASE_URL"]))
        try:
            for execution_id in ids:
                await client.abort(execution_id)
        finally:
            await client.close()

    asyncio.run(go())


def records(database_url: str, ids: list[str]) -> list[ExecutionRecord]:
    async def read() -> list[ExecutionRecord]:
        store = Store.from_url(database_url)
        try:
            found = [await store.get(execution_id) for execution_id in ids]
        finally:
            await store.close()
        assert all(record is not None for record in found)
        return [record for record in found if record is not None]

    return asyncio.run(read())


def until_all(database_url: str, ids: list[str], phase: Phase, timeout: float = 30) -> list[ExecutionRecord]:
    def probe() -> list[ExecutionRecord] | None:
        found = records(database_url, ids)
        return found if all(r.phase is phase and r.finalized for r in found) else None

    return poll(f"{len(ids)} executions to be {phase.name}", probe, timeout, interval=0.1)


def replicas_of(record: ExecutionRecord) -> set[str]:
    assert record.outputs is not None
    return {replica for replica, _host in record.outputs["rounds"]}


def hosts_seen(record: ExecutionRecord) -> set[str]:
    state = json.loads(record.plugin_state) if record.plugin_state else {"rounds": []}
    rounds = record.outputs["rounds"] if record.outputs else state["rounds"]
    return {host for _replica, host in rounds}


@pytest.mark.slow
def test_a_pause_holds_a_task_type_back_on_every_replica_and_aborts_still_run(
    database_url: str, plugins_dir: Path, tmp_path: Path, start_daemon: Start
) -> None:
    first = start_daemon(env_of(database_url, plugins_dir, "first"))
    second = start_daemon(env_of(database_url, plugins_dir, "second"))
    env = env_of(database_url, plugins_dir, "cli")
    for daemon in (first, second):
        daemon.wait_for_log("daemon.started")

    paused = executor(env, tmp_path, "pause", "where", "--reason", "downstream is down")
    assert paused.returncode == 0 and "where: paused" in paused.stdout, paused.stderr
    again = executor(env, tmp_path, "pause", "where")
    assert again.returncode == 0 and "already paused" in again.stdout
    held = [submit(env, tmp_path, "where"), *submit_many(env, 3, "where")]
    # The control: both replicas claim other work meanwhile, submitted after the held work.
    controls = submit_many(env, 6, "where-gpu")
    until_all(database_url, controls, Phase.SUCCESS)

    assert [r.phase for r in records(database_url, held)] == [Phase.QUEUED] * 4
    assert all(r.rounds == 0 for r in records(database_url, held))
    shown = json.loads(executor(env, tmp_path, "plugins", "--json").stdout)
    assert {row["id"]: row["paused"] for row in shown}["where"] == ["where"]
    listed = json.loads(executor(env, tmp_path, "paused", "--json").stdout)
    assert [(row["task_type"], row["reason"]) for row in listed] == [("where", "downstream is down")]

    # An abort of a paused execution is still carried out.
    aborted = executor(env, tmp_path, "abort", held[0])
    assert aborted.returncode == 0, aborted.stderr
    until_all(database_url, held[:1], Phase.ABORTED)

    resumed = executor(env, tmp_path, "resume", "where")
    assert resumed.returncode == 0 and "where: resumed" in resumed.stdout, resumed.stderr
    done = until_all(database_url, held[1:], Phase.SUCCESS)
    assert all(replicas_of(record) <= {"first", "second"} for record in done)
    assert json.loads(executor(env, tmp_path, "paused", "--json").stdout) == []


def test_a_queue_bound_replica_never_claims_another_queues_work(
    database_url: str, plugins_dir: Path, tmp_path: Path, start_daemon: Start
) -> None:
    gpu = start_daemon(env_of(database_url, plugins_dir, "gpu-replica", EXECUTOR_QUEUES="gpu"))
    default = start_daemon(env_of(database_url, plugins_dir, "default-replica", EXECUTOR_QUEUES="default"))
    env = env_of(database_url, plugins_dir, "cli")
    for daemon in (gpu, default):
        daemon.wait_for_log("daemon.started")

    # Several rounds each, so that each execution is claimed again and again by whoever may.
    three = {"rounds": 3}
    by_option = [
        submit(env, tmp_path, "where", "--queue", "gpu", inputs=json.dumps(three)),
        *submit_many(env, 3, "where", inputs=three, queue="gpu"),
    ]
    by_plugin = submit_many(env, 4, "where-gpu", inputs=three)
    plain = submit_many(env, 4, "where", inputs=three)
    [nobody] = submit_many(env, 1, "where", queue="nobody-serves-this")

    gpu_work = until_all(database_url, by_option + by_plugin, Phase.SUCCESS)
    default_work = until_all(database_url, plain, Phase.SUCCESS)
    assert {r.queue for r in gpu_work} == {"gpu"} and {r.queue for r in default_work} == {"default"}
    assert set().union(*map(replicas_of, gpu_work)) == {"gpu-replica"}
    assert set().union(*map(replicas_of, default_work)) == {"default-replica"}
    [unserved] = records(database_url, [nobody])
    assert (unserved.phase, unserved.rounds) == (Phase.QUEUED, 0)


@pytest.mark.slow
def test_a_pinned_execution_is_never_claimed_by_a_replica_of_another_host(
    database_url: str, plugins_dir: Path, tmp_path: Path, start_daemon: Start
) -> None:
    env = env_of(database_url, plugins_dir, "cli")
    # Endless until aborted: each round requeues itself.
    forever = {"rounds": 1_000_000}
    first = start_daemon(env_of(database_url, plugins_dir, "first-on-h1", EXECUTOR_HOST="h1"))
    first.wait_for_log("daemon.started")
    pinned = submit_many(env, 3, "where-pinned", inputs=forever)
    pinned.append(submit(env, tmp_path, "where", "--pin-to-host", inputs=json.dumps(forever)))

    def pinned_and_running() -> list[ExecutionRecord] | None:
        found = records(database_url, pinned)
        return found if all(r.pinned_host == "h1" and r.rounds >= 2 for r in found) else None

    before = poll("the executions to be pinned to h1", pinned_and_running, 30, interval=0.1)
    assert all(r.pin_to_host for r in before)

    other = start_daemon(env_of(database_url, plugins_dir, "other-on-h2", EXECUTOR_HOST="h2"))
    other.wait_for_log("daemon.started")
    first.process.send_signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL

    # The control: h2 takes over what a dead replica held once its heartbeat went silent, and runs
    # new work; the pinned executions wait for their host.
    def first_is_gone() -> bool | None:
        shown = json.loads(executor(env, tmp_path, "replicas", "--json", "--all").stdout)
        return True if any(r["id"] == "first-on-h1" and r["live"] is False for r in shown) else None

    poll("the killed replica to be seen as gone", first_is_gone, 30, interval=0.2)
    after_kill = {r.id: r.rounds for r in records(database_url, pinned)}
    unpinned = submit_many(env, 3, "where", inputs={"rounds": 3})
    assert set().union(*map(replicas_of, until_all(database_url, unpinned, Phase.SUCCESS))) == {"other-on-h2"}
    still = records(database_url, pinned)
    assert {r.id: r.rounds for r in still} == after_kill
    assert all(r.pinned_host == "h1" and r.phase is Phase.RUNNING for r in still)

    # A daemon of host h1 (a new replica id: its restart) picks them up again.
    back = start_daemon(env_of(database_url, plugins_dir, "restarted-on-h1", EXECUTOR_HOST="h1"))
    back.wait_for_log("daemon.started")

    def progressed() -> list[ExecutionRecord] | None:
        found = records(database_url, pinned)
        return found if all(r.rounds > after_kill[r.id] for r in found) else None

    poll("the pinned executions to run on h1 again", progressed, 30, interval=0.1)
    abort_all(env, pinned)
    ended = until_all(database_url, pinned, Phase.ABORTED)
    assert all(hosts_seen(record) == {"h1"} for record in ended), [hosts_seen(r) for r in ended]
