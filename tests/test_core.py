"""The plugin contract in `executor.core`: phases, PhaseInfo constructors, transitions, durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from executor.core import (
    FINAL_PHASES,
    UNKNOWN_TRANSITION,
    ErrorKind,
    ExecutionError,
    Phase,
    PhaseInfo,
    TaskInfo,
    TaskLog,
    Transition,
    TransitionType,
    do_transition,
    parse_duration,
)

# Flyte's pluginmachinery/core/phase.go, in declaration order (the iota values).
FLYTE_ORDER = [
    "UNDEFINED",
    "NOT_READY",
    "WAITING_FOR_RESOURCES",
    "QUEUED",
    "INITIALIZING",
    "RUNNING",
    "SUCCESS",
    "RETRYABLE_FAILURE",
    "PERMANENT_FAILURE",
    "WAITING_FOR_CACHE",
    "ABORTED",
]


def test_phase_order_and_values_match_flyte() -> None:
    assert [p.name for p in Phase] == FLYTE_ORDER
    assert [int(p) for p in Phase] == list(range(len(FLYTE_ORDER)))


@pytest.mark.parametrize("phase", list(Phase))
def test_phase_predicates_follow_flyte(phase: Phase) -> None:
    # Flyte: IsFailure = permanent or retryable failure; IsSuccess = success;
    # IsTerminal = IsFailure || IsSuccess || IsAborted.
    failure = phase in (Phase.RETRYABLE_FAILURE, Phase.PERMANENT_FAILURE)
    assert phase.is_failure is failure
    assert phase.is_success is (phase is Phase.SUCCESS)
    assert phase.is_terminal is (failure or phase in (Phase.SUCCESS, Phase.ABORTED))
    # Final: the whole execution is over; a retryable failure is terminal for the attempt only.
    assert phase.is_final is (phase in (Phase.SUCCESS, Phase.PERMANENT_FAILURE, Phase.ABORTED))
    assert (phase in FINAL_PHASES) is phase.is_final
    if phase.is_final:
        assert phase.is_terminal


def test_terminal_set_is_exactly_flytes() -> None:
    assert {p for p in Phase if p.is_terminal} == {
        Phase.SUCCESS,
        Phase.RETRYABLE_FAILURE,
        Phase.PERMANENT_FAILURE,
        Phase.ABORTED,
    }


INFO = TaskInfo(
    occurred_at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    logs=(TaskLog("console", "https://example.invalid/log"),),
    external_resources=("job-1",),
    custom_info={"k": [1, 2]},
)


@pytest.mark.parametrize(
    ("make", "phase"),
    [
        (PhaseInfo.not_ready, Phase.NOT_READY),
        (PhaseInfo.waiting_for_resources, Phase.WAITING_FOR_RESOURCES),
        (PhaseInfo.queued, Phase.QUEUED),
        (PhaseInfo.initializing, Phase.INITIALIZING),
        (PhaseInfo.aborted, Phase.ABORTED),
    ],
)
def test_reason_and_info_constructors(make: object, phase: Phase) -> None:
    plain = make()  # type: ignore[operator]
    assert (plain.phase, plain.version, plain.reason, plain.error, plain.info) == (phase, 0, None, None, None)
    full = make("why", INFO)  # type: ignore[operator]
    assert (full.phase, full.reason, full.info, full.error) == (phase, "why", INFO, None)


def test_running_and_success() -> None:
    running = PhaseInfo.running(3, INFO)
    assert (running.phase, running.version, running.info, running.error) == (Phase.RUNNING, 3, INFO, None)
    assert PhaseInfo.running().version == 0
    assert PhaseInfo.running(1, reason="progress").reason == "progress"
    success = PhaseInfo.success(INFO)
    assert (success.phase, success.version, success.info, success.error) == (Phase.SUCCESS, 0, INFO, None)
    assert PhaseInfo.success().info is None


@pytest.mark.parametrize(
    ("make", "phase", "kind"),
    [
        (PhaseInfo.failure, Phase.PERMANENT_FAILURE, ErrorKind.USER),
        (PhaseInfo.retryable_failure, Phase.RETRYABLE_FAILURE, ErrorKind.USER),
        (PhaseInfo.system_failure, Phase.PERMANENT_FAILURE, ErrorKind.SYSTEM),
        (PhaseInfo.system_retryable_failure, Phase.RETRYABLE_FAILURE, ErrorKind.SYSTEM),
    ],
)
def test_failure_constructors(make: object, phase: Phase, kind: ErrorKind) -> None:
    info = make("Code", "what happened", INFO)  # type: ignore[operator]
    assert info.phase is phase
    assert info.reason == "Code"
    assert info.error == ExecutionError("Code", "what happened", kind)
    assert info.info == INFO
    assert info.cleanup_on_failure is False
    assert make("C", "m", cleanup_on_failure=True).cleanup_on_failure is True  # type: ignore[operator]
    assert info.phase.is_failure


def test_execution_error_round_trips_through_dict() -> None:
    for kind in ErrorKind:
        error = ExecutionError("Code", "msg", kind)
        assert ExecutionError.from_dict(error.to_dict()) == error
    assert ExecutionError("c", "m").kind is ErrorKind.USER


def test_task_info_to_dict_is_json_shaped() -> None:
    assert INFO.to_dict() == {
        "occurred_at": "2024-01-02T03:04:05+00:00",
        "logs": [{"name": "console", "uri": "https://example.invalid/log"}],
        "external_resources": ["job-1"],
        "custom_info": {"k": [1, 2]},
    }
    assert TaskInfo().to_dict()["occurred_at"] is None


# -- transitions --------------------------------------------------------------------------------


def test_do_transition_defaults() -> None:
    transition = do_transition(PhaseInfo.success())
    assert transition == Transition(TransitionType.EPHEMERAL, PhaseInfo.success(), None)


@pytest.mark.parametrize(
    ("requeue_after", "expected"),
    [
        (5, timedelta(seconds=5)),
        (0.25, timedelta(milliseconds=250)),
        (timedelta(minutes=2), timedelta(minutes=2)),
        (0, timedelta(0)),
        (-3, timedelta(0)),
        (timedelta(seconds=-1), timedelta(0)),
        (None, None),
    ],
)
def test_do_transition_requeue_after(requeue_after: object, expected: timedelta | None) -> None:
    transition = do_transition(PhaseInfo.running(0), requeue_after=requeue_after)  # type: ignore[arg-type]
    assert transition.requeue_after == expected
    if expected is not None:
        assert isinstance(transition.requeue_after, timedelta)


def test_do_transition_barrier() -> None:
    assert do_transition(PhaseInfo.queued(), type=TransitionType.BARRIER).type is TransitionType.BARRIER


def test_unknown_transition() -> None:
    assert UNKNOWN_TRANSITION.phase_info.phase is Phase.UNDEFINED
    assert UNKNOWN_TRANSITION.requeue_after is None


# -- durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5),
        ("250ms", 0.25),
        ("1m30s", 90),
        ("1m", 60),
        ("2h", 7200),
        ("1d", 86400),
        ("1h1m1s1ms", 3661.001),
        ("1.5", 1.5),
        ("1.5s", 1.5),
        ("0", 0),
        ("  5s  ", 5),
        ("10", 10),
        (2, 2),
        (0.5, 0.5),
        (0, 0),
        (timedelta(seconds=3), 3),
    ],
)
def test_parse_duration_accepts(text: object, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "abc",
        "5x",
        "s",
        "5 s",
        "5s5",
        "s5",
        "-5s",
        "-1",
        -1,
        -0.5,
        timedelta(seconds=-1),
        True,
        False,
        None,
        [5],
        "nan",
        float("nan"),
        float("inf"),
        "inf",
        10**20,
        "1e20",
        "99999999999999d",
        10**400,
    ],
)
def test_parse_duration_rejects_with_value_error(bad: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(bad)
