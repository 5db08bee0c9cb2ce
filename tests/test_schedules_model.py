"""The pure part of schedules: slots, misfire plans, and the two DST days of Europe/Berlin."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from executor.schedules.model import ScheduleError, ScheduleSpec, check, next_slot_after, plan, slot_label

BERLIN = ZoneInfo("Europe/Berlin")


def berlin(*args: int, fold: int = 0) -> float:
    return datetime(*args, tzinfo=BERLIN).replace(fold=fold).timestamp()  # type: ignore[misc]


def daily_0230(**extra: object) -> ScheduleSpec:
    return ScheduleSpec(
        name="nightly", task_type="tick", cron="30 2 * * *", timezone="Europe/Berlin", **extra
    )  # type: ignore[arg-type]


def slots_from(spec: ScheduleSpec, t: float, n: int) -> list[float]:
    found = []
    for _ in range(n):
        nxt = next_slot_after(spec, t)
        assert nxt is not None
        found.append(nxt)
        t = nxt
    return found


def test_the_day_that_skips_0230_runs_once_at_0300_then_0230_again() -> None:
    # 2026-03-29: clocks jump from 02:00 to 03:00 in Europe/Berlin.
    slots = slots_from(daily_0230(), berlin(2026, 3, 28, 12), 3)
    assert [datetime.fromtimestamp(s, BERLIN).isoformat() for s in slots] == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_the_day_that_repeats_0230_runs_once_at_the_first_0230() -> None:
    # 2026-10-25: clocks go back from 03:00 to 02:00; 02:30 happens twice (+02:00, then +01:00).
    slots = slots_from(daily_0230(), berlin(2026, 10, 24, 12), 3)
    assert [datetime.fromtimestamp(s, BERLIN).isoformat() for s in slots] == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]
    # A daemon that looks during the repeated hour (after the first 02:30) does not run it again.
    assert next_slot_after(daily_0230(), berlin(2026, 10, 25, 2, 45, fold=1)) == berlin(2026, 10, 26, 2, 30)


def test_sub_hourly_cron_runs_through_the_repeated_hour_twice() -> None:
    spec = ScheduleSpec(name="half", task_type="tick", cron="*/30 * * * *", timezone="Europe/Berlin")
    slots = slots_from(spec, berlin(2026, 10, 25, 1, 45), 4)
    assert [s - slots[0] for s in slots] == [0, 1800, 3600, 5400]  # one every 30 real minutes


def test_interval_slots_are_aligned_to_start_or_the_epoch() -> None:
    every = ScheduleSpec(name="e", task_type="tick", every=60)
    assert next_slot_after(every, 1_000_030.5) == 1_000_080.0
    started = ScheduleSpec(name="e", task_type="tick", every=60, start=1_000_010, end=1_000_130)
    assert next_slot_after(started, 0) == 1_000_010
    assert next_slot_after(started, 1_000_010) == 1_000_070
    assert next_slot_after(started, 1_000_130) is None


@pytest.mark.parametrize(
    ("misfire", "fired", "missed"),
    [("once", [105.0], 5), ("each", [103.0, 104.0, 105.0], 3), ("skip", [], 6)],
)
def test_misfire_policies_after_downtime(misfire: str, fired: list[float], missed: int) -> None:
    spec = ScheduleSpec(
        name="e", task_type="tick", every=1, misfire=misfire, misfire_limit=3, misfire_grace=0.2
    )  # type: ignore[arg-type]
    decided = plan(spec, 100.0, 105.5)
    assert list(decided.fire) == fired
    assert decided.missed == missed
    assert decided.next_slot == 106.0


@given(
    every=st.floats(min_value=0.5, max_value=3600),
    start=st.floats(min_value=0, max_value=1e9),
    lag=st.floats(min_value=0, max_value=50_000),
    misfire=st.sampled_from(["once", "each", "skip"]),
    limit=st.integers(min_value=1, max_value=20),
)
def test_a_plan_fires_only_due_slots_in_order_and_moves_past_now(
    every: float, start: float, lag: float, misfire: str, limit: int
) -> None:
    spec = ScheduleSpec(
        name="p", task_type="tick", every=every, start=start, misfire=misfire, misfire_limit=limit
    )  # type: ignore[arg-type]
    first = next_slot_after(spec, start - 1)
    assert first is not None
    now = first + lag
    decided = plan(spec, first, now)
    assert all(first <= s <= now for s in decided.fire)
    assert list(decided.fire) == sorted(set(decided.fire))
    assert decided.next_slot is not None and decided.next_slot > now
    assert len(decided.fire) <= (limit if misfire == "each" else 1)
    if misfire != "skip":
        assert decided.fire, "a due slot runs under once and each"


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"cron": "61 * * * *"}, "invalid cron expression"),
        ({"cron": "* * *"}, "invalid cron expression"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({}, "exactly one of"),
        ({"cron": "0 3 * * *", "every": 60}, "exactly one of"),
        ({"every": -1}, "positive"),
        ({"every": 60, "start": 10, "end": 5}, "end must not be before start"),
    ],
)
def test_a_schedule_that_cannot_make_slots_is_refused(fields: dict[str, object], words: str) -> None:
    with pytest.raises(ScheduleError, match=words):
        check(ScheduleSpec(name="bad", task_type="tick", **fields))  # type: ignore[arg-type]


def test_slot_labels_are_utc_iso() -> None:
    assert slot_label(berlin(2026, 3, 29, 3)) == "2026-03-29T01:00:00Z"
    assert slot_label(1.5) == "1970-01-01T00:00:01.500Z"
