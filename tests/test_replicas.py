"""Several replicas on one store, in process: leases on the database's clock, heartbeats,
LISTEN/NOTIFY wake-ups, and a round whose commit dies mid-transaction.

Real databases only (SQLite file and PostgreSQL, or PostgreSQL alone where the feature is
PostgreSQL's). Faults are real too: a dropped connection is `pg_terminate_backend` of the very
backend the store is writing through. Nothing sleeps to synchronise: waits are polls with deadlines
or events.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import anyio
import asyncpg
import pytest
import structlog
from pydantic import BaseModel
from sqlalchemy import event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.util import await_only

from executor import cli
from executor.core import (
    Phase,
    PhaseInfo,
    Plugin,
    PluginEntry,
    SetupContext,
    TaskExecutionContext,
    Transition,
    do_transition,
)
from executor.logging import get_logger
from executor.plugin.registry import LoadedPlugins, PluginRegistry, load_plugins
from executor.plugin.resources import InProcessResourceManager
from executor.runtime import Reconciler
from executor.settings import load_settings
from executor.store import Store, StoreUnavailable, Submission
from executor.store import notify as notify_module
from executor.store.replicas import ReplicaStatus, beat, heartbeat, list_replicas
from executor.store.tables import events, executions

pytestmark = pytest.mark.anyio


async def poll(probe: Callable[[], Any], done: Callable[[Any], bool], within: float = 10.0) -> Any:
    """Call `probe` (sync or async) until `done(result)`, failing after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = probe()
        if hasattr(result, "__await__"):
            result = await result
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"still {result!r} after {within}s")
        await anyio.sleep(0.02)


class Gate(Plugin):
    """RUNNING once per round; the first round of each execution waits for `opened` (a slow round)."""

    id = "gate"

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self.opened = anyio.Event()
        self.calls: list[str] = []

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        self.calls.append(tctx.task_execution_metadata.execution_id)
        self.entered.set()
        await self.opened.wait()
        return do_transition(PhaseInfo.success())

    async def abort(self, tctx: TaskExecutionContext) -> None:
        pass

    async def finalize(self, tctx: TaskExecutionContext) -> None:
        pass


class StepState(BaseModel):
    step: int = 0


class Steps(Plugin):
    """Two rounds: RUNNING with state, then SUCCESS with outputs."""

    id = "steps"

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        _, state = tctx.plugin_state_reader.get(StepState)
        if state.step == 0:
            tctx.plugin_state_writer.put(1, StepState(step=1))
            return do_transition(PhaseInfo.running(1), requeue_after=0)
        await tctx.output_writer.put({"done": True})
        return do_transition(PhaseInfo.success())

    async def abort(self, tctx: TaskExecutionContext) -> None:
        pass

    async def finalize(self, tctx: TaskExecutionContext) -> None:
        pass


async def reconciler(
    store: Store, url: str, plugins: list[Plugin], clock: Callable[[], float] = time.time, **overrides: Any
) -> Reconciler:
    settings = load_settings(database_url=url, **overrides)
    registry = PluginRegistry()
    for plugin in plugins:
        registry.register_core_plugin(
            PluginEntry(id=plugin.id, registered_task_types=[plugin.id], load_plugin=lambda _s, p=plugin: p)
        )
    resources = InProcessResourceManager()
    setup = SetupContext(settings=settings, logger=get_logger(), resource_registrar=resources)
    loaded: LoadedPlugins = await load_plugins(registry, setup)
    return Reconciler(store, loaded, settings, resource_manager=resources, clock=clock)


async def get_row(store: Store, execution_id: str) -> Any:
    async with store.engine.connect() as conn:
        return (await conn.execute(select(executions).where(executions.c.id == execution_id))).one()


# -- leases are on the database's clock ---------------------------------------------------------


async def test_a_claim_stamps_the_lease_on_the_database_clock(store: Store) -> None:
    execution_id = await store.submit(Submission("echo"), now=time.time() - 10)
    before = await store.database_now()
    # The claiming replica's clock is an hour behind: the lease is still the database's now + TTL.
    [record] = await store.claim(owner="slow", token="t1", limit=5, lease_ttl=30, now=time.time() + 1)
    after = await store.database_now()
    assert record.id == execution_id
    assert record.lease_expires_at is not None
    assert before + 30 - 0.01 <= record.lease_expires_at <= after + 30 + 0.01


async def test_a_replica_whose_clock_runs_ahead_cannot_take_a_live_lease(store: Store) -> None:
    execution_id = await store.submit(Submission("echo"), now=time.time() - 10)
    assert [
        r.id for r in await store.claim(owner="a", token="t1", limit=5, lease_ttl=3, now=time.time())
    ] == [execution_id]
    # B's clock is a minute ahead: on its clock, A's 3-second lease expired long ago. It is not
    # on the database's, and that is the clock that decides.
    assert await store.claim(owner="b", token="t2", limit=5, lease_ttl=3, now=time.time() + 60) == []
    assert (await get_row(store, execution_id)).lease_token == "t1"
    # Nor does B's idle loop think the row is due: it is told to wait for the lease, not to spin.
    due_in = await store.due_in(time.time() + 60)
    assert due_in is not None and 2 <= due_in <= 3
    # Once the lease really expired, on the database's clock, anyone may take the row.
    async with store.engine.begin() as conn:
        await conn.execute(text(f"UPDATE executions SET lease_expires_at = {store.dialect.now_sql} - 0.001"))
    assert await store.due_in(time.time()) == 0
    [taken] = await store.claim(owner="b", token="t2", limit=5, lease_ttl=3, now=time.time() - 5)
    assert (taken.id, taken.lease_token) == (execution_id, "t2")


async def test_clock_skew_between_running_replicas_does_not_steal_a_live_lease(
    store: Store, database_url: str
) -> None:
    """Fault 4: replica B's clock runs 10 s ahead of A's (and of the database's), far more than
    the lease's 3 s TTL. While A's slow round is under way, B keeps running rounds and claims
    nothing; A's commit keeps its round."""
    gate = Gate()
    a = await reconciler(store, database_url, [gate], lease_ttl="3s", handle_timeout="2s", replica_id="a")
    b = await reconciler(
        store,
        database_url,
        [gate],
        clock=lambda: time.time() + 10,
        lease_ttl="3s",
        handle_timeout="2s",
        replica_id="b",
    )
    [execution_id] = await store.submit_many([Submission("gate")], now=time.time())
    async with anyio.create_task_group() as group:
        results: list[Any] = []

        async def run_a() -> None:
            results.append(await a.run_round())

        group.start_soon(run_a)
        await gate.entered.wait()
        for _ in range(5):
            assert (await b.run_round()).claimed == 0
        gate.opened.set()
    [stats] = results
    assert (stats.claimed, stats.committed, stats.lost) == (1, 1, 0)
    assert gate.calls == [execution_id]
    assert (await get_row(store, execution_id)).phase == int(Phase.SUCCESS)


# -- a round whose commit dies mid-transaction ----------------------------------------------------


async def test_a_round_whose_connection_drops_mid_commit_leaves_nothing_and_runs_again(
    postgres_url: str,
) -> None:
    """Fault 3: the backend committing a round is terminated after the executions are updated and
    before the events are inserted. Nothing of the round is visible, the leases are handed back,
    and the next round runs the executions again and commits."""
    store = Store.from_url(postgres_url)
    admin = await asyncpg.connect(plain_url(postgres_url))
    try:
        ids = await store.submit_many([Submission("steps") for _ in range(3)], now=time.time() - 1)
        armed = {"on": True}
        killed: list[int] = []

        @event.listens_for(store.engine.sync_engine, "before_cursor_execute")
        def drop_mid_commit(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            if armed["on"] and statement.startswith("INSERT INTO events"):
                armed["on"] = False
                pid = conn.connection.dbapi_connection._connection.get_server_pid()
                killed.append(pid)
                await_only(admin.execute("SELECT pg_terminate_backend($1)", pid))

        loop = await reconciler(store, postgres_url, [Steps()], replica_id="r1")
        # A database error, which the loop's `run` logs and retries with backoff.
        with pytest.raises(StoreUnavailable):
            await loop.run_round()
        assert killed, "the fault was not injected"

        for execution_id in ids:
            row = await get_row(store, execution_id)
            assert (row.phase, row.event_seq, row.rounds, row.plugin_state) == (int(Phase.QUEUED), 1, 0, None)
            assert row.lease_token is None  # handed back, not left to expire
        async with store.engine.connect() as conn:
            assert (await conn.execute(select(events.c.seq).where(events.c.execution_id.in_(ids)))).all() == [
                (1,),
                (1,),
                (1,),
            ]

        first = await loop.run_round()
        assert (first.claimed, first.committed) == (3, 3)
        await poll(loop.run_round, lambda stats: stats.claimed == 0 and stats.committed == 0)
        for execution_id in ids:
            row = await get_row(store, execution_id)
            assert row.phase == int(Phase.SUCCESS) and json.loads(row.outputs) == {"done": True}
            assert [e.seq for e in await store.events(execution_id)] == [1, 2, 3]
    finally:
        await admin.close()
        await store.close()


# -- heartbeats and `executor replicas` ---------------------------------------------------------


async def test_heartbeats_list_live_replicas_and_tell_silent_ones(store: Store) -> None:
    await beat(store, "alpha", ReplicaStatus(rounds=0, last_round_at=None, in_flight=0), first=True)
    await beat(store, "beta", ReplicaStatus(rounds=7, last_round_at=123.5, in_flight=4), first=True)
    found = {r.id: r for r in await list_replicas(store, live_within=15)}
    assert set(found) == {"alpha", "beta"}
    assert (found["beta"].rounds, found["beta"].last_round_at, found["beta"].in_flight) == (7, 123.5, 4)
    assert found["beta"].live and found["beta"].silent_for < 5

    # beta goes silent (its heartbeat is 20 s old on the database's clock).
    async with store.engine.begin() as conn:
        await conn.execute(
            text(f"UPDATE replicas SET heartbeat_at = {store.dialect.now_sql} - 20 WHERE id = 'beta'")
        )
    assert [r.id for r in await list_replicas(store, live_within=15)] == ["alpha"]
    everyone = {r.id: r for r in await list_replicas(store, live_within=15, include_stale=True)}
    assert not everyone["beta"].live and 19 < everyone["beta"].silent_for < 25

    # A later beat keeps the start time; a first beat (a restart under the same id) resets it.
    started = everyone["alpha"].started_at
    await beat(store, "alpha", ReplicaStatus(rounds=1, last_round_at=1.0, in_flight=0))
    [alpha] = [r for r in await list_replicas(store, live_within=15) if r.id == "alpha"]
    assert alpha.started_at == started and alpha.rounds == 1


async def test_the_heartbeat_task_beats_then_removes_its_row(store: Store) -> None:
    status = ReplicaStatus(rounds=0, last_round_at=None, in_flight=0)
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: heartbeat(store, "gamma", lambda: status, interval=0.05))
        await poll(
            lambda: list_replicas(store, live_within=5), lambda found: [r.id for r in found] == ["gamma"]
        )
        status = ReplicaStatus(rounds=3, last_round_at=time.time(), in_flight=2)
        await poll(
            lambda: list_replicas(store, live_within=5), lambda found: found and found[0].in_flight == 2
        )
        group.cancel_scope.cancel()
    assert await list_replicas(store, live_within=5, include_stale=True) == []


def test_the_replicas_command(
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    async def seed() -> None:
        store = Store.from_url(database_url)
        try:
            from executor.store.migrate import upgrade

            await upgrade(store.engine)
            await beat(store, "host-a:1", ReplicaStatus(5, time.time(), 2), first=True)
            await beat(store, "host-b:2", ReplicaStatus(1, None, 0), first=True)
            async with store.engine.begin() as conn:
                await conn.execute(
                    text(
                        f"UPDATE replicas SET heartbeat_at = {store.dialect.now_sql} - 600 "
                        "WHERE id = 'host-b:2'"
                    )
                )
        finally:
            await store.close()

    anyio.run(seed)
    # cli.main configures logging onto the captured stderr: undo that when the test is over.
    request.addfinalizer(structlog.reset_defaults)
    monkeypatch.setenv("EXECUTOR_DATABASE_URL", database_url)
    monkeypatch.setenv("EXECUTOR_HEARTBEAT_INTERVAL", "5s")

    def run(*argv: str) -> tuple[int, str]:
        with pytest.raises(SystemExit) as exited:
            cli.main(list(argv))
        return int(exited.value.code or 0), capsys.readouterr().out

    code, out = run("replicas", "--json")
    assert code == 0
    [live] = json.loads(out)
    assert (live["id"], live["live"], live["rounds"], live["in_flight"]) == ("host-a:1", True, 5, 2)
    code, out = run("replicas", "--all")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["REPLICA", "STATE", "STARTED"]
    assert any(line.startswith("host-a:1") and " live " in line for line in lines[1:])
    assert any(line.startswith("host-b:2") and " silent " in line for line in lines[1:])


# -- LISTEN/NOTIFY ------------------------------------------------------------------------------


async def test_a_submission_wakes_an_idle_replica_at_once(postgres_url: str) -> None:
    """The replica polls every 30 s; a submission from another process's store wakes it at once."""
    store, other = Store.from_url(postgres_url), Store.from_url(postgres_url)
    try:
        loop = await reconciler(store, postgres_url, [Steps()], poll_interval="30s", replica_id="idle")
        async with anyio.create_task_group() as group:
            group.start_soon(store.watch_changes, loop.wakeup.set)
            group.start_soon(loop.run)
            await poll(lambda: loop.rounds, lambda n: n >= 1)  # it ran its first round and sleeps
            # Let the listener connect before submitting: the wake-up after connecting is not the
            # one this test is about.
            await poll(lambda: _listening(postgres_url), lambda n: n >= 1)
            submitted = time.monotonic()
            [execution_id] = await other.submit_many([Submission("steps")], now=time.time())
            await poll(lambda: other.get(execution_id), lambda r: r.phase is Phase.SUCCESS, within=5)
            assert time.monotonic() - submitted < 3  # well under the 30 s poll interval
            # An abort request wakes it too.
            [second] = await other.submit_many(
                [Submission("steps", not_before=time.time() + 3600)], now=time.time()
            )
            await other.request_abort(second, "stop", now=time.time())
            await poll(lambda: other.get(second), lambda r: r.phase is Phase.ABORTED, within=5)
            loop.stop()
            group.cancel_scope.cancel()
    finally:
        await store.close()
        await other.close()


async def _listening(url: str) -> int:
    conn = await asyncpg.connect(plain_url(url))
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND query LIKE 'LISTEN%'"
            )
        )
    finally:
        await conn.close()


async def test_notify_is_sent_only_when_the_submission_commits(postgres_url: str) -> None:
    store = Store.from_url(postgres_url)
    woken: list[float] = []
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: notify_module.listen(store.engine, lambda: woken.append(time.time())))
            await poll(lambda: woken, lambda w: len(w) >= 1)  # the wake-up on connecting
            await poll(lambda: _listening(postgres_url), lambda n: n >= 1)
            woken.clear()
            with pytest.raises(Exception, match="rolled back"):
                async with store.engine.begin() as conn:
                    await notify_module.send(conn)
                    raise RuntimeError("rolled back")
            await store.submit(Submission("echo"), now=time.time())
            await poll(lambda: woken, lambda w: len(w) >= 1)
            await anyio.sleep(0.3)  # the rolled-back one would have arrived by now, and first
            assert len(woken) == 1
            group.cancel_scope.cancel()
    finally:
        await store.close()


async def test_a_notify_storm_is_coalesced_into_few_wake_ups(postgres_url: str) -> None:
    """2,000 notifications at once (one transaction, distinct payloads, so PostgreSQL folds none)
    reach the loop as a few wake-ups: the first few dozen pass at once (a light load's), then at
    most one per 50 ms (see `Coalescer`; tests/test_wakeups.py holds the rule itself)."""
    store = Store.from_url(postgres_url)
    woken: list[float] = []
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(
                lambda: notify_module.listen(store.engine, lambda: woken.append(time.monotonic()))
            )
            await poll(lambda: _listening(postgres_url), lambda n: n >= 1)
            await poll(lambda: woken, lambda w: len(w) >= 1)
            woken.clear()
            admin = await asyncpg.connect(plain_url(postgres_url))
            try:
                await admin.execute(
                    f"SELECT pg_notify('{notify_module.CHANNEL}', n::text) FROM generate_series(1, 2000) n"
                )
            finally:
                await admin.close()
            await poll(lambda: woken, lambda w: len(w) >= 1)
            await anyio.sleep(0.1)  # the last, deferred wake-up
            group.cancel_scope.cancel()
    finally:
        await store.close()
    assert 1 <= len(woken) <= 100, len(woken)
    gaps = [b - a for a, b in itertools.pairwise(woken[80:])]
    assert all(gap >= 0.045 for gap in gaps), gaps


async def test_the_listener_reconnects_when_its_connection_is_killed(postgres_url: str) -> None:
    store = Store.from_url(postgres_url)
    woken: list[float] = []
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: notify_module.listen(store.engine, lambda: woken.append(time.time())))
            await poll(lambda: _listening(postgres_url), lambda n: n == 1)
            admin = await asyncpg.connect(plain_url(postgres_url))
            try:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
                # It comes back on a new backend and hears submissions again.
                await poll(lambda: _listening(postgres_url), lambda n: n == 1, within=10)
                woken.clear()
                await store.submit(Submission("echo"), now=time.time())
                await poll(lambda: woken, lambda w: len(w) >= 1)
            finally:
                await admin.close()
            group.cancel_scope.cancel()
    finally:
        await store.close()


def plain_url(url: str) -> str:
    """The libpq form of a SQLAlchemy URL, for asyncpg.connect."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
