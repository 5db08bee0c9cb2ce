"""What a schedule is, and which slots are due when: pure functions over epoch seconds.

A slot is a time a schedule is meant to run at, in seconds since the epoch (UTC). Cron slots are
computed in the schedule's time zone by cronsim (the cron library healthchecks.io maintains),
which handles daylight-saving changes as Debian's cron does:

- a daily time the clocks skip (02:30 on the spring-forward day in Europe/Berlin) runs once, at
  the first minute after the jump (03:00 local);
- a daily time the clocks repeat (02:30 on the fall-back day) runs once, at its first occurrence;
- expressions that run more often than hourly (`*/15 * * * *`) run in wall-clock order through
  both: the skipped hour has no slots, the repeated hour has them twice.

Interval schedules (`every`) are aligned to `start`, or to the epoch without one, so every replica
and every restart computes the same slots: no slot depends on when a daemon happened to start.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field

#: What happens to slots that passed while no daemon ran (see `plan`).
Misfire = Literal["once", "each", "skip"]
#: Whether a slot runs while the schedule's previous execution has not ended.
Overlap = Literal["allow", "skip"]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")

#: Past slots enumerated at most when catching up a cron schedule after a long downtime.
MAX_CATCH_UP = 100_000


class ScheduleError(ValueError):
    """A schedule refused before anything was stored; the message says why."""


class ScheduleSpec(BaseModel):
    """A schedule as declared (in code, in a file, through the CLI or the API) and stored as JSON.

    The submission options are those `Client.submit` takes, checked by the same client; an
    idempotency key is not one of them, since every slot makes a new execution.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    task_type: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    #: A five-field cron expression, in `timezone`; or else `every`.
    cron: str | None = None
    timezone: str = "UTC"
    #: Seconds between slots.
    every: float | None = None
    #: No slot before `start` nor after `end` (epoch seconds).
    start: float | None = None
    end: float | None = None
    #: Each execution waits a random 0..jitter seconds after its slot (the slot label stays exact).
    jitter: float = 0.0
    misfire: Misfire = "once"
    #: With misfire "each": at most this many missed slots run, the latest ones.
    misfire_limit: int = 10
    #: With misfire "skip": a slot later than this (seconds) when found is skipped.
    misfire_grace: float = 60.0
    overlap: Overlap = "allow"
    # -- submission options, as `Client.submit` takes them --
    labels: dict[str, str] = Field(default_factory=dict)
    priority: int = 0
    max_attempts: int | None = None
    timeout: float | str | None = None
    deadline: float | str | None = None
    backoff_base: float | str | None = None
    backoff_max: float | str | None = None

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def check(spec: ScheduleSpec) -> None:
    """Refuse what no slot can be computed from (the submission options are the client's to check)."""
    if not NAME.match(spec.name):
        raise ScheduleError(
            f"schedule name {spec.name!r} must be 1 to 200 letters, digits, '_', '.', ':' or '-'"
        )
    if (spec.cron is None) == (spec.every is None):
        raise ScheduleError("a schedule needs exactly one of a cron expression or an interval (every)")
    try:
        zone = spec.zone()
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown time zone {spec.timezone!r} (an IANA name such as Europe/Berlin)"
        ) from None
    if spec.cron is not None:
        try:
            CronSim(spec.cron, datetime.now(zone))
        except CronSimError as err:
            raise ScheduleError(f"invalid cron expression {spec.cron!r}: {err}") from None
    if spec.every is not None and not (0 < spec.every < math.inf):
        raise ScheduleError(f"every must be a positive number of seconds, got {spec.every}")
    if spec.start is not None and spec.end is not None and spec.end < spec.start:
        raise ScheduleError("end must not be before start")
    if not 0 <= spec.jitter < math.inf:
        raise ScheduleError(f"jitter must be zero or a positive number of seconds, got {spec.jitter}")
    if spec.misfire_limit < 1:
        raise ScheduleError(f"misfire_limit must be at least 1, got {spec.misfire_limit}")
    if not 0 < spec.misfire_grace < math.inf:
        raise ScheduleError(f"misfire_grace must be a positive number of seconds, got {spec.misfire_grace}")


def next_slot_after(spec: ScheduleSpec, t: float) -> float | None:
    """The first slot strictly after `t`, within start and end; None when there is none."""
    if spec.start is not None and t < spec.start:
        t = math.nextafter(spec.start, -math.inf)
    if spec.every is not None:
        anchor = spec.start if spec.start is not None else 0.0
        slot = anchor + (math.floor((t - anchor) / spec.every) + 1) * spec.every
        if slot <= t:  # rounding at the boundary
            slot += spec.every
    else:
        assert spec.cron is not None
        when = datetime.fromtimestamp(t, spec.zone())
        slot = next(CronSim(spec.cron, when)).timestamp()
    if spec.end is not None and slot > spec.end:
        return None
    return slot


def slots_between(spec: ScheduleSpec, first: float, until: float, keep: int) -> tuple[list[float], int]:
    """The last `keep` slots from `first` (a slot) to `until`, both included, and how many there were."""
    if first > until:
        return [], 0
    if spec.every is not None:
        count = math.floor((until - first) / spec.every) + 1
        if spec.end is not None:
            count = min(count, math.floor((spec.end - first) / spec.every) + 1)
        start = max(0, count - keep)
        return [first + k * spec.every for k in range(start, count)], count
    kept: deque[float] = deque(maxlen=keep)
    count = 0
    slot: float | None = first
    while slot is not None and slot <= until and count < MAX_CATCH_UP:
        kept.append(slot)
        count += 1
        slot = next_slot_after(spec, slot)
    return list(kept), count


@dataclass(frozen=True, slots=True)
class Plan:
    """What one look at a due schedule decides: the slots to run now, and the next slot."""

    fire: tuple[float, ...]
    next_slot: float | None
    #: Due slots that will not run (the misfire policy's doing).
    missed: int


def plan(spec: ScheduleSpec, next_slot: float, now: float) -> Plan:
    """The due slots (from `next_slot` to `now`) under the misfire policy.

    - once: the latest due slot runs, once, however many passed (a missed run is made up once);
    - each: every due slot runs, the latest `misfire_limit` of them when more passed;
    - skip: the latest due slot runs only if it is at most `misfire_grace` late; passed ones never.

    When the daemon keeps up, one slot is due at a time and the three agree.
    """
    keep = spec.misfire_limit if spec.misfire == "each" else 1
    due, count = slots_between(spec, next_slot, now, keep)
    if not due:
        return Plan((), next_slot, 0)
    following = next_slot_after(spec, max(now, due[-1]))
    if spec.misfire == "skip" and now - due[-1] > spec.misfire_grace:
        return Plan((), following, count)
    return Plan(tuple(due), following, count - len(due))


def first_slot(spec: ScheduleSpec, now: float) -> float | None:
    """The slot a newly declared (or resumed) schedule waits for: the first after `now`."""
    return next_slot_after(spec, now)


def slot_label(slot: float) -> str:
    """A slot as its executions' label shows it: ISO 8601 in UTC, milliseconds when not whole."""
    when = datetime.fromtimestamp(slot, UTC)
    text = when.isoformat(timespec="milliseconds" if slot % 1 else "seconds")
    return text.replace("+00:00", "Z")


#: The labels every execution a schedule makes carries (`executor list --label schedule=NAME`).
SCHEDULE_LABEL = "schedule"
SLOT_LABEL = "schedule_slot"
