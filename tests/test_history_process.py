"""History with the real daemon process: a failed execution retried after its daemon was
SIGKILLed, and two replicas pruning on PostgreSQL under load (nothing unfinished deleted, no
deadlock, every old row deleted once). Every wait is a poll with a deadline."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from executor.client import Client
from executor.core import Phase
from executor.store import Store, Submission
from executor.store.filters import ExecutionFilter
from executor.store.history import HistoryQueries
from tests.history_support import seed_finished, seed_waiting
from tests.test_daemon_process import Daemon, daemon_env, executor, poll, read_store

pytestmark = pytest.mark.process

HISTORY_PLUGINS = Path(__file__).resolve().parent / "history_plugins"


def test_a_failed_execution_is_retried_after_its_daemon_was_killed(
    database_url: str, tmp_path: Path, start_daemon: Callable[[dict[str, str]], Daemon]
) -> None:
    env = daemon_env(database_url, HISTORY_PLUGINS)
    first = start_daemon(env)
    first.wait_for_log("daemon.started")
    ok_file = tmp_path / "fixed"
    submitted = executor(env, tmp_path, "submit", "flaky", "--inputs", json.dumps({"ok_file": str(ok_file)}))
    assert submitted.returncode == 0, submitted.stderr
    execution_id = submitted.stdout.strip()

    def failed() -> Any:
        record, _ = read_store(database_url, execution_id)
        return record if record.phase is Phase.PERMANENT_FAILURE and record.finalized else None

    poll("the execution to fail", failed, timeout=20)
    first.process.send_signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL

    # The failures view, with the daemon gone.
    shown = executor(env, tmp_path, "failures", "--json", "--error-code", "NotYet")
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert view["counts"] == [{"phase": "PERMANENT_FAILURE", "error_code": "NotYet", "count": 1}]
    assert [item["id"] for item in view["items"]] == [execution_id]

    ok_file.write_text("fixed")
    retried = executor(env, tmp_path, "retry", execution_id, "--by", "ops")
    assert retried.returncode == 0, retried.stderr
    assert "requeued as attempt 2" in retried.stdout
    again = executor(env, tmp_path, "retry", execution_id)
    assert again.returncode == 1 and "still running (QUEUED)" in again.stdout

    second = start_daemon(env)
    second.wait_for_log("daemon.started")

    def succeeded() -> Any:
        record, events = read_store(database_url, execution_id)
        return (record, events) if record.phase is Phase.SUCCESS and record.finalized else None

    record, events = poll("the retried execution to succeed", succeeded, timeout=20)
    assert record.attempt == 2 and record.error is None
    assert [(e.attempt, e.phase) for e in events][:3] == [
        (1, Phase.QUEUED),
        (1, Phase.PERMANENT_FAILURE),
        (2, Phase.QUEUED),
    ]
    assert events[2].reason == "Requeued by ops" and events[-1].phase is Phase.SUCCESS
    second.process.send_signal(signal.SIGTERM)
    assert second.wait() == 0


@pytest.mark.postgres
@pytest.mark.slow
def test_two_replicas_prune_under_load_without_touching_unfinished_work(
    postgres_url: str, tmp_path: Path, start_daemon: Callable[[dict[str, str]], Daemon]
) -> None:
    old = time.time() - 10 * 86400
    seeded = 3000

    async def seed() -> tuple[list[str], list[str], list[str]]:
        store = Store.from_url(postgres_url)
        try:
            expired = await seed_finished(store, seeded, Phase.SUCCESS, finished_at=old)
            kept_failed = await seed_finished(store, 50, Phase.PERMANENT_FAILURE, finished_at=old)
            waiting = await seed_waiting(store, 20, created_at=old - 86400, due_at=time.time() + 3600)
            return expired, kept_failed, waiting
        finally:
            await store.close()

    expired, kept_failed, waiting = asyncio.run(seed())
    env = daemon_env(
        postgres_url,
        EXECUTOR_RETAIN_SUCCESS="1d",  # failures are kept: EXECUTOR_RETAIN_FAILED is unset
        EXECUTOR_PRUNE_INTERVAL="0.2s",
        EXECUTOR_PRUNE_BATCH="200",
    )
    replicas = [start_daemon({**env, "EXECUTOR_REPLICA_ID": f"pruner-{n}"}) for n in (1, 2)]
    for daemon in replicas:
        daemon.wait_for_log("daemon.started")

    async def load_and_wait() -> tuple[list[str], int]:
        store = Store.from_url(postgres_url)
        client = Client(store)
        queries = HistoryQueries(store)
        submitted: list[str] = []
        try:
            old_left = seeded
            started = time.monotonic()
            deadline = started + 120
            # Work arrives while the old rows go: 50 executions every pass, until none is left.
            while old_left and time.monotonic() < deadline:
                submitted += await client.submit_many([Submission("echo", {"n": i}) for i in range(50)])
                old_left = await queries.count(
                    ExecutionFilter(phases=(Phase.SUCCESS,), created_before=old + 1)
                )
                await asyncio.sleep(0.05)
            assert old_left == 0, f"{old_left} expired rows still there after 120 s"
            unfinished = ExecutionFilter(created_after=old + 86400)
            for _ in range(600):
                done = await queries.count(replace(unfinished, phases=(Phase.SUCCESS,)))
                if done == len(submitted):
                    break
                await asyncio.sleep(0.1)
            events_left = 0
            for execution_id in expired[:200]:
                events_left += len(await store.events(execution_id))
            return submitted, events_left
        finally:
            await store.close()

    submitted, events_left = asyncio.run(load_and_wait())
    assert events_left == 0

    async def survivors() -> dict[str, Any]:
        store = Store.from_url(postgres_url)
        try:
            wanted = {*submitted, *kept_failed, *waiting}
            return {r.id: r for r in await store.list_executions(limit=100_000) if r.id in wanted}
        finally:
            await store.close()

    found = asyncio.run(survivors())
    missing = {*submitted, *kept_failed, *waiting} - set(found)
    assert not missing, f"{len(missing)} executions that were not past retention were deleted"
    assert all(found[i].phase is Phase.SUCCESS for i in submitted)
    assert all(found[i].phase is Phase.QUEUED for i in waiting)

    deleted = 0
    for daemon in replicas:
        assert daemon.process.poll() is None, daemon.log.read_text()
        lines = daemon.lines()
        assert not [line for line in lines if line.get("event") == "prune.failed"], lines
        assert not [line for line in lines if line.get("level") == "error"], lines
        deleted += sum(
            line["deleted"].get("SUCCESS", 0) for line in lines if line.get("event") == "prune.done"
        )
        daemon.process.send_signal(signal.SIGTERM)
    for daemon in replicas:
        assert daemon.wait() == 0
    # Each old row deleted once, by one replica or the other (no batch counted twice).
    assert deleted == seeded


def test_prune_and_bulk_retry_from_the_command_line(database_url: str, tmp_path: Path) -> None:
    env = daemon_env(database_url, HISTORY_PLUGINS)
    old = time.time() - 40 * 86400

    async def seed() -> tuple[list[str], list[str]]:
        store = Store.from_url(database_url)
        try:
            from executor.store.migrate import upgrade

            await upgrade(store.engine)
            expired = await seed_finished(store, 30, Phase.SUCCESS, finished_at=old)
            failed = await seed_finished(store, 4, Phase.PERMANENT_FAILURE, finished_at=old)
            return expired, failed
        finally:
            await store.close()

    expired, failed = asyncio.run(seed())
    refused = executor(env, tmp_path, "prune")
    assert refused.returncode == 2 and "nothing to prune" in refused.stderr
    dry = executor(env, tmp_path, "prune", "--older-than", "30d", "--phase", "success", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) == {"dry_run": True, "deleted": {"SUCCESS": 30}}
    by_settings = executor({**env, "EXECUTOR_RETAIN_SUCCESS": "7d"}, tmp_path, "prune")
    assert by_settings.returncode == 0, by_settings.stderr
    assert by_settings.stdout.startswith("SUCCESS: deleted 30 executions finished before ")
    left = executor(env, tmp_path, "list", "--json", "--phase", "success", "--limit", "100")
    assert not {item["id"] for item in json.loads(left.stdout)} & set(expired)
    bad_phase = executor(env, tmp_path, "prune", "--older-than", "1d", "--phase", "running")
    assert bad_phase.returncode == 2 and "RUNNING is not a final phase" in bad_phase.stderr

    usage = executor(env, tmp_path, "retry")
    assert usage.returncode == 2 and "--all" in usage.stderr
    listed = executor(env, tmp_path, "retry", "--phase", "permanent-failure", "--dry-run")
    assert listed.returncode == 0, listed.stderr
    assert sorted(listed.stdout.splitlines()[:-1]) == sorted(failed)
    assert listed.stdout.splitlines()[-1] == "4 executions would be retried (dry run: nothing changed)"
    done = executor(env, tmp_path, "retry", "--all", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["matched"], result["requeued"], sorted(result["ids"])) == (4, 4, sorted(failed))
    shown = executor(env, tmp_path, "list", "--json", "--phase", "queued")
    assert sorted(item["id"] for item in json.loads(shown.stdout)) == sorted(failed)
    assert all(item["attempt"] == 2 for item in json.loads(shown.stdout))
