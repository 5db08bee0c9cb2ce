"""What `handle` returns: the phase a round ends in and when the plugin wants the next round."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta

from executor.core.phase import Phase, PhaseInfo


class TransitionType(enum.Enum):
    """Kept for plugins written against Flyte's contract.

    Flyte distinguishes EPHEMERAL transitions (may be lost on a crash) from BARRIER ones (persisted
    before anything else happens). Here every round commits in one transaction before the next
    round starts, so every transition is durable and both types behave the same.
    """

    EPHEMERAL = "EPHEMERAL"
    BARRIER = "BARRIER"


@dataclass(frozen=True, slots=True)
class Transition:
    type: TransitionType
    phase_info: PhaseInfo
    #: Run the next round no sooner than this; None leaves it to the daemon's poll interval.
    requeue_after: timedelta | None = None


def do_transition(
    phase_info: PhaseInfo,
    *,
    requeue_after: timedelta | float | None = None,
    type: TransitionType = TransitionType.EPHEMERAL,
) -> Transition:
    """The usual way to answer a round; `requeue_after` takes a timedelta or seconds."""
    if requeue_after is not None and not isinstance(requeue_after, timedelta):
        requeue_after = timedelta(seconds=float(requeue_after))
    if requeue_after is not None and requeue_after < timedelta(0):
        requeue_after = timedelta(0)
    return Transition(type=type, phase_info=phase_info, requeue_after=requeue_after)


#: "Nothing to report": the execution keeps its phase and is looked at again after the poll interval.
UNKNOWN_TRANSITION = Transition(TransitionType.EPHEMERAL, PhaseInfo(Phase.UNDEFINED))
