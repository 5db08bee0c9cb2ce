"""Schedules on real stores (SQLite files and PostgreSQL), the scheduler driven by a fake clock.

The clock is the only fake: the store, the client's validation and the transactions are real.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import anyio
import pytest

from executor.app.parts import client_for
from executor.client import Client, SubmissionError, UnknownTaskTypeError
from executor.plugin.loader import collect
from executor.plugin.registry import PluginRegistry, TaskTypeResolver
from executor.schedules import Scheduler, Schedules, ScheduleSpec
from executor.schedules.model import ScheduleError
from executor.settings import Settings
from executor.store import Store
from executor.store.schedules import ScheduleStore

PLUGINS = Path(__file__).resolve().parent / "schedule_plugins"
BERLIN = ZoneInfo("Europe/Berlin")

pytestmark = pytest.mark.anyio


def resolver() -> TaskTypeResolver:
    registry = PluginRegistry()
    collect(registry, PLUGINS, use_entry_points=False)
    return registry.resolver({})


@pytest.fixture
def client(store: Store) -> Client:
    return client_for(Settings(), store, resolver())


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    async def __call__(self) -> float:
        return self.now


async def labelled(store: Store, name: str) -> dict[str, str]:
    """slot label -> execution id, of the executions schedule `name` made."""
    records = await store.list_executions(labels={"schedule": name}, limit=10_000)
    slots = [r.labels["schedule_slot"] for r in records]
    assert len(slots) == len(set(slots)), f"a slot ran twice: {sorted(slots)}"
    return {r.labels["schedule_slot"]: r.id for r in records}


@pytest.mark.parametrize(
    ("fields", "error", "words"),
    [
        ({"task_type": "nope", "every": 1}, UnknownTaskTypeError, "unknown task type 'nope'"),
        (
            {"task_type": "tick", "every": 1, "inputs": {"n": "many"}},
            SubmissionError,
            "inputs do not fit TickInput",
        ),
        ({"task_type": "tick", "cron": "every day"}, ScheduleError, "invalid cron expression"),
        (
            {"task_type": "tick", "cron": "0 3 * * *", "timezone": "Europe/Atlantis"},
            ScheduleError,
            "unknown time zone",
        ),
        ({"task_type": "tick", "every": 1, "max_attempts": 0}, SubmissionError, "max_attempts"),
    ],
)
async def test_a_bad_declaration_is_refused_and_nothing_is_stored(
    client: Client, store: Store, fields: dict[str, object], error: type[Exception], words: str
) -> None:
    schedules = Schedules(client)
    with pytest.raises(error, match=words):
        await schedules.add(ScheduleSpec(name="bad", **fields), "api")  # type: ignore[arg-type]
    with pytest.raises(error, match=words):
        await schedules.declare(ScheduleSpec(name="bad", **fields), "code")  # type: ignore[arg-type]
    assert await schedules.all() == []


async def test_replicas_racing_for_every_slot_make_one_execution_each(
    database_url: str, store: Store
) -> None:
    """Five schedulers, each over its own engine (as replicas are), all firing at the same instants."""
    stores = [Store.from_url(database_url) for _ in range(5)]
    try:
        clients = [client_for(Settings(), s, resolver()) for s in stores]
        row = await Schedules(clients[0]).add(ScheduleSpec(name="race", task_type="tick", every=1.0), "api")
        assert row.next_slot_at is not None
        clock = Clock(row.next_slot_at - 0.5)  # the fake clock takes over from the database's
        schedulers = [Scheduler(c, clock=clock) for c in clients]
        for _ in range(20):
            clock.now += 1.0
            async with anyio.create_task_group() as group:
                for scheduler in schedulers:
                    group.start_soon(scheduler.round)
        made = await labelled(stores[0], "race")
        assert len(made) == 20
        assert sum(s.fired for s in schedulers) == 20
    finally:
        for s in stores:
            await s.close()


async def test_a_daily_0230_in_berlin_across_both_dst_changes(client: Client, store: Store) -> None:
    clock = Clock(datetime(2026, 3, 28, 12, tzinfo=BERLIN).timestamp())
    schedules = Schedules(client)
    schedules.store._clock = clock  # type: ignore[attr-defined]
    row_store = ScheduleStore(store)
    now = clock.now
    spec = ScheduleSpec(name="nightly", task_type="tick", cron="30 2 * * *", timezone="Europe/Berlin")
    await row_store.create("nightly", spec.model_dump(mode="json"), "api", await _first(spec, now), now)
    scheduler = Scheduler(client, clock=clock)

    async def run_until(*when: int) -> None:
        end = datetime(*when, tzinfo=BERLIN).timestamp()  # type: ignore[misc]
        while clock.now < end:
            clock.now += 600
            await scheduler.round()

    await run_until(2026, 3, 31, 12)
    clock.now = datetime(2026, 10, 24, 12, tzinfo=BERLIN).timestamp()  # a summer of downtime:
    await scheduler.round()  # misfire "once" runs its latest slot, once
    await run_until(2026, 10, 27, 12)
    made = sorted(await labelled(store, "nightly"))
    local = [datetime.fromisoformat(s).astimezone(BERLIN).isoformat() for s in made]
    assert local[:3] == [
        "2026-03-29T03:00:00+02:00",  # 02:30 did not exist: run at the first minute after the jump
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    assert local[-3:] == [
        "2026-10-25T02:30:00+02:00",  # 02:30 happened twice: run at the first only
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]


async def _first(spec: ScheduleSpec, now: float) -> float | None:
    from executor.schedules.model import first_slot

    return first_slot(spec, now)


@pytest.mark.parametrize(("overlap", "expected"), [("skip", 1), ("allow", 4)])
async def test_overlap_policy_while_the_previous_execution_still_runs(
    client: Client, store: Store, overlap: str, expected: int
) -> None:
    """No loop runs here, so each execution stays QUEUED: still running, as far as overlap goes."""
    clock = Clock(2_000_000.0)
    spec = ScheduleSpec(name="long", task_type="nap", every=1.0, inputs={"seconds": 60}, overlap=overlap)  # type: ignore[arg-type]
    await ScheduleStore(store).create("long", spec.model_dump(mode="json"), "api", 2_000_001.0, clock.now)
    scheduler = Scheduler(client, clock=clock)
    for _ in range(4):
        clock.now += 1.0
        await scheduler.round()
    assert len(await labelled(store, "long")) == expected


async def test_declaring_the_same_schedule_again_keeps_its_next_slot(client: Client, store: Store) -> None:
    schedules = Schedules(client)
    spec = ScheduleSpec(name="daily", task_type="tick", cron="0 3 * * *", inputs={"n": 1})
    assert await schedules.declare(spec, "code") == "created"
    before = await schedules.get("daily")
    assert await schedules.declare(spec, "code") == "unchanged"
    assert await schedules.get("daily") == before
    assert await schedules.declare(spec.model_copy(update={"cron": "0 4 * * *"}), "code") == "updated"
    with pytest.raises(ScheduleError, match="exists"):
        await schedules.add(spec, "cli")


async def test_pause_resume_and_run_now(client: Client, store: Store) -> None:
    schedules = Schedules(client)
    await schedules.add(ScheduleSpec(name="p", task_type="tick", every=3600.0), "cli")
    paused = await schedules.pause("p")
    assert paused.paused and paused.next_slot_at is None
    assert await ScheduleStore(store).due(10**12, 10) == []  # a paused schedule is never due
    resumed = await schedules.resume("p")
    assert not resumed.paused and resumed.next_slot_at is not None
    execution_id = await schedules.run_now("p")
    assert list((await labelled(store, "p")).values()) == [execution_id]
    await schedules.delete("p")
    assert await schedules.get("p") is None
    assert await client.get(execution_id) is not None  # its executions stay
