"""No execution waits for another (issue 12), in process, on real stores and real time.

A slow plugin call (handle, abort or finalize, awaiting or blocking a worker thread) goes on in the
background while the loop commits and finishes everything else; the slow call's outcome is
committed later by a round of its own, fenced by the lease the slow call keeps renewing. The gate
of `tests/plugins/gated.py` is a file the test creates: until then the slow call cannot return, so
"the fast ones finished first" is a fact, not a race.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import text

from executor.core import Phase, SetupContext
from executor.http.metrics import Metrics
from executor.logging import get_logger
from executor.plugin.loader import load_directory
from executor.plugin.registry import PluginRegistry, load_plugins
from executor.plugin.resources import InProcessResourceManager
from executor.runtime import Reconciler
from executor.settings import load_settings
from executor.store import Store, Submission

pytestmark = pytest.mark.anyio

BUILTIN_PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
TEST_PLUGINS = Path(__file__).resolve().parent / "plugins"

FAST = 40


async def make_reconciler(store: Store, database_url: str, **settings: Any) -> Reconciler:
    registry = PluginRegistry()
    load_directory(registry, BUILTIN_PLUGINS)
    load_directory(registry, TEST_PLUGINS)
    values: dict[str, Any] = {"poll_interval": "50ms", "batch_size": 16} | settings
    loaded = load_settings(database_url=database_url, **values)
    resources = InProcessResourceManager()
    setup = SetupContext(settings=loaded, logger=get_logger(), resource_registrar=resources)
    plugins = await load_plugins(registry, setup)
    return Reconciler(store, plugins, loaded, resource_manager=resources)


@asynccontextmanager
async def running(reconciler: Reconciler) -> AsyncIterator[Reconciler]:
    """The loop running in the background; stopped (gracefully) when the block ends."""
    async with anyio.create_task_group() as group:
        group.start_soon(reconciler.run)
        try:
            yield reconciler
        finally:
            reconciler.stop()


async def poll(what: str, probe: Callable[[], Awaitable[Any]], within: float = 15.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        found = await probe()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await anyio.sleep(0.02)


class Gate:
    """The gate file and the call log a `gated` execution is given."""

    def __init__(self, directory: Path, name: str = "gate") -> None:
        self.path = directory / name
        self.log = directory / f"{name}.log"
        self.log.touch()

    def inputs(self, wait_in: str = "handle") -> dict[str, Any]:
        return {"gate": str(self.path), "log": str(self.log), "wait_in": wait_in}

    def open(self) -> None:
        self.path.touch()

    def calls(self) -> list[str]:
        return [line.split()[0] for line in self.log.read_text().splitlines()]


async def phases(store: Store, ids: list[str]) -> list[Phase]:
    found = []
    for execution_id in ids:
        record = await store.get(execution_id)
        assert record is not None
        found.append(record.phase)
    return found


async def finalized(store: Store, ids: list[str]) -> bool:
    for execution_id in ids:
        record = await store.get(execution_id)
        if record is None or not record.finalized:
            return False
    return True


async def submit(store: Store, *items: tuple[str, dict[str, Any]]) -> list[str]:
    return await store.submit_many([Submission(t, i) for t, i in items], now=time.time())


async def event_phases(store: Store, execution_id: str) -> list[Phase]:
    return [event.phase for event in await store.events(execution_id)]


@pytest.mark.parametrize("task_type", ["gated", "gated-blocking"])
async def test_a_slow_handle_does_not_hold_the_executions_beside_it(
    store: Store, database_url: str, tmp_path: Path, task_type: str
) -> None:
    gate = Gate(tmp_path)
    [slow] = await submit(store, (task_type, gate.inputs("handle")))
    fast = await submit(store, *[("echo", {"i": i}) for i in range(FAST)])
    reconciler = await make_reconciler(store, database_url)

    async with running(reconciler):
        await poll("the fast executions to finish", lambda: finalized(store, fast))
        record = await store.get(slow)
        assert record is not None and not record.phase.is_terminal, "the slow call returned early"
        assert gate.calls() == ["handle"]
        assert reconciler.in_flight >= 1
        metrics = Metrics()
        metrics.watch_calls(reconciler.calls_in_flight)
        scraped = (await metrics.render(store))[0].decode()
        assert f'executor_calls_in_flight{{plugin="{task_type}"}} 1.0' in scraped
        gate.open()
        await poll("the slow execution to finish", lambda: finalized(store, [slow]))
        assert "executor_calls_in_flight{" not in (await metrics.render(store))[0].decode()

    assert await phases(store, [slow]) == [Phase.SUCCESS]
    assert gate.calls() == ["handle", "handle-done", "finalize"]  # called once, never again meanwhile
    assert await event_phases(store, slow) == await event_phases(store, fast[0])


async def test_a_slow_abort_does_not_hold_the_executions_beside_it(
    store: Store, database_url: str, tmp_path: Path
) -> None:
    gate = Gate(tmp_path)
    [slow] = await submit(store, ("gated", gate.inputs("abort")))
    reconciler = await make_reconciler(store, database_url)

    async with running(reconciler):

        async def slow_is_running() -> bool:
            record = await store.get(slow)
            return record is not None and record.phase is Phase.RUNNING

        await poll("the gated execution to run", slow_is_running)
        await store.request_abort(slow, "stop it", now=time.time())
        await poll("the abort to start", lambda: _true(gate.calls().count("abort") == 1))
        fast = await submit(store, *[("echo", {"i": i}) for i in range(FAST)])
        await poll("the fast executions to finish", lambda: finalized(store, fast))
        assert not await finalized(store, [slow])
        gate.open()
        await poll("the aborted execution to be cleaned up", lambda: finalized(store, [slow]))

    assert await phases(store, [slow]) == [Phase.ABORTED]
    assert gate.calls() == ["handle", "abort", "abort-done", "finalize"]


async def test_a_slow_finalize_does_not_hold_the_executions_beside_it(
    store: Store, database_url: str, tmp_path: Path
) -> None:
    gate = Gate(tmp_path)
    [slow] = await submit(store, ("gated", gate.inputs("finalize")))
    fast = await submit(store, *[("echo", {"i": i}) for i in range(FAST)])
    reconciler = await make_reconciler(store, database_url)

    async with running(reconciler):
        await poll("the finalize to start", lambda: _true("finalize" in gate.calls()))
        await poll("the fast executions to finish", lambda: finalized(store, fast))
        record = await store.get(slow)
        assert record is not None and record.phase is Phase.SUCCESS and not record.finalized
        gate.open()
        await poll("the slow finalize to be recorded", lambda: finalized(store, [slow]))

    assert gate.calls() == ["handle", "finalize", "finalize-done"]


@pytest.mark.parametrize("wait_in", ["handle", "finalize"])
async def test_a_call_that_finishes_late_is_committed_by_the_next_round_that_claims(
    store: Store, database_url: str, tmp_path: Path, wait_in: str
) -> None:
    """Folded into the round's own commit, fenced by its first round's lease, instead of a commit
    of its own: with 1% of calls slow that was two or three more commits per round. A slow
    handle's execution is then cleaned up under the new round's lease, and ends once."""
    gate = Gate(tmp_path)
    [slow] = await submit(store, ("gated", gate.inputs(wait_in)))
    reconciler = await make_reconciler(store, database_url)
    rounds, stragglers = reconciler._rounds, reconciler._stragglers  # stepped by hand, half by half

    first = await rounds.finish(await rounds.claim_and_handle(), time.perf_counter())
    assert (first.claimed, stragglers.pending) == (1, 1), "the gated call outlived its round"
    gate.open()
    with anyio.fail_after(15):
        await stragglers.settled()
    fast = await submit(store, *[("echo", {"i": i}) for i in range(5)])
    second = await rounds.finish(await rounds.claim_and_handle(), time.perf_counter())

    assert second.claimed == len(fast)
    assert second.committed == len(fast) + 1, "the late outcome was not in the round's commit"
    assert await finalized(store, [*fast, slow])
    assert reconciler.in_flight == 0, "a lease is still held for an execution that is done"
    record = await store.get(slow)
    assert record is not None and record.phase is Phase.SUCCESS and record.lease_token is None
    assert await event_phases(store, slow) == await event_phases(store, fast[0])
    expected = (
        ["handle", "handle-done", "finalize"]
        if wait_in == "handle"
        else ["handle", "finalize", "finalize-done"]
    )
    assert gate.calls() == expected


async def test_a_call_outlives_several_lease_ttls_without_another_replica_taking_it(
    store: Store, database_url: str, tmp_path: Path
) -> None:
    gate = Gate(tmp_path)
    [slow] = await submit(store, ("gated", gate.inputs("handle")))
    leases = {"lease_ttl": "1s", "lease_renew_interval": "200ms", "handle_timeout": "30s"}
    first = await make_reconciler(store, database_url, replica_id="first", **leases)
    second = await make_reconciler(store, database_url, replica_id="second", **leases)

    async with running(first):
        await poll("the slow call to start", lambda: _true(gate.calls() == ["handle"]))
        async with running(second):
            started = time.monotonic()
            while time.monotonic() - started < 3.5:  # time itself is what is tested: 3.5 TTLs
                assert gate.calls() == ["handle"], "another replica took a lease still renewed"
                await anyio.sleep(0.1)
            gate.open()
            await poll("the slow execution to finish", lambda: finalized(store, [slow]))

    assert gate.calls() == ["handle", "handle-done", "finalize"]
    assert await phases(store, [slow]) == [Phase.SUCCESS]


async def test_a_replica_that_loses_the_lease_cancels_the_call_and_drops_its_outcome(
    store: Store, database_url: str, tmp_path: Path
) -> None:
    gate = Gate(tmp_path)
    [slow] = await submit(store, ("gated", gate.inputs("handle")))
    leases = {"lease_ttl": "1s", "lease_renew_interval": "200ms", "handle_timeout": "30s"}
    reconciler = await make_reconciler(store, database_url, **leases)

    async with running(reconciler):
        await poll("the slow call to start", lambda: _true(gate.calls() == ["handle"]))
        # Another replica took the row meanwhile (as after a partition longer than the TTL).
        async with store.engine.begin() as conn:
            await conn.execute(
                text("UPDATE executions SET lease_token = 'stolen', lease_owner = 'thief' WHERE id = :id"),
                {"id": slow},
            )
        await poll("the call to be cancelled", lambda: _true("handle-cancelled" in gate.calls()))
        gate.open()
        await anyio.sleep(0.3)  # rounds go on; none may write the dropped outcome

    record = await store.get(slow)
    assert record is not None
    assert (record.phase, record.lease_token) == (Phase.QUEUED, "stolen")
    assert await event_phases(store, slow) == [Phase.QUEUED]


async def test_a_graceful_stop_waits_for_calls_in_flight_within_the_grace(
    store: Store, database_url: str, tmp_path: Path
) -> None:
    gate = Gate(tmp_path)
    [slow] = await submit(store, ("gated", gate.inputs("handle")))
    reconciler = await make_reconciler(store, database_url)

    async with anyio.create_task_group() as group:
        group.start_soon(reconciler.run)
        await poll("the slow call to start", lambda: _true(gate.calls() == ["handle"]))
        reconciler.stop()
        await anyio.sleep(0.2)
        gate.open()  # within the grace: the loop is still waiting for it

    assert await phases(store, [slow]) == [Phase.SUCCESS]
    assert gate.calls() == ["handle", "handle-done", "finalize"]


async def _true(value: bool) -> bool:
    return value


async def test_renewing_leases_extends_only_those_still_held_in_one_statement(store: Store) -> None:
    now = time.time()
    ids = await submit(store, *[("echo", {"i": i}) for i in range(3)])
    claimed = await store.claim(owner="a", token="mine", limit=3, lease_ttl=1, now=now + 1)
    assert sorted(r.id for r in claimed) == sorted(ids)
    async with store.engine.begin() as conn:  # another replica took the third meanwhile
        steal = text("UPDATE executions SET lease_token = 'theirs' WHERE id = :id")
        await conn.execute(steal, {"id": ids[2]})

    renewed = await store.renew_leases({"mine": ids, "gone": ["no-such-id"]}, lease_ttl=60)

    assert renewed == set(ids[:2])
    db_now = await store.database_now()
    for execution_id in ids[:2]:
        record = await store.get(execution_id)
        assert record is not None and record.lease_expires_at is not None
        assert record.lease_expires_at > db_now + 50
    other = await store.get(ids[2])
    assert other is not None and other.lease_expires_at is not None and other.lease_expires_at < db_now + 5
