"""What a plugin's `handle` came to, checked and scrubbed before the lifecycle or a log sees it.

Pure: no I/O and no event loop. A malformed answer fails its own execution here, never the round.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

from executor import lifecycle
from executor.core import ExecutionError, Phase, PhaseInfo, PluginStateError, TaskInfo, TaskLog, Transition
from executor.plugin.task_exec_context import TaskExecContext
from executor.redaction import REDACTOR

#: The `outcome` label `handle_finished` reports for each kind of outcome.
OUTCOME_LABELS: dict[type, str] = {
    lifecycle.Handled: "transition",
    lifecycle.SystemFault: "system_fault",
    lifecycle.Rejected: "rejected",
    lifecycle.NoPlugin: "no_plugin",
    lifecycle.AbortRequested: "aborted",
    lifecycle.Expired: "expired",
}


def handled(returned: object, tctx: TaskExecContext) -> lifecycle.Outcome:
    """What `handle` returned, checked: a malformed transition, or state or outputs that cannot be
    stored, fail this execution alone."""
    invalid = transition_problem(returned)
    if invalid is not None:
        return lifecycle.Rejected("InvalidTransition", invalid)
    state = tctx.state_used
    for problem in (state.problem if state is not None else None, tctx.output_writer.problem):
        if problem is not None:
            return lifecycle.Rejected(*problem)
    assert isinstance(returned, Transition)  # checked by transition_problem
    writer = tctx.output_writer
    change = state.change if state is not None else None
    return lifecycle.Handled(returned, change, writer.outputs, writer.outputs_json)


def handle_raised(err: Exception) -> lifecycle.Outcome:
    """What a `handle` that raised came to, wherever it ran: on the loop, a thread or a worker process."""
    if isinstance(err, PluginStateError):
        return lifecycle.Rejected("PluginStateUnreadable", str(err))
    # A TimeoutError of the plugin's own (a remote call that timed out) is a raise like any other.
    return lifecycle.SystemFault("HandleRaised", f"handle raised {type(err).__name__}: {err}")


def clean_up_raised(method: str, err: Exception) -> str:
    """Why an `abort` or `finalize` that raised did not complete, wherever it ran."""
    return f"{method} raised {type(err).__name__}: {err}"


def transition_problem(returned: object) -> str | None:
    """What is wrong with what `handle` returned, or None.

    Checked here, field by field, because a malformed transition must fail its own execution:
    left to `lifecycle.advance` or to the commit, it would raise there and sink the whole round
    (and, after a restart, the round that claims it again).
    """
    if type(returned) is Transition:  # the usual answer, checked at once
        info = returned.phase_info
        requeue = returned.requeue_after
        if (
            type(info) is PhaseInfo
            and type(info.phase) is Phase
            and type(info.version) is int
            and (info.reason is None or type(info.reason) is str)
            and info.error is None
            and info.info is None
            and (requeue is None or type(requeue) is timedelta)
        ):
            return None
    if not isinstance(returned, Transition):
        return f"handle returned {_describe(returned)}, expected a Transition"
    info = returned.phase_info
    if not isinstance(info, PhaseInfo):
        return f"handle returned a Transition whose phase_info is {_describe(info)}, expected a PhaseInfo"
    if not isinstance(info.phase, Phase):
        return f"phase {info.phase!r} is not a Phase"
    if not isinstance(info.version, int) or isinstance(info.version, bool):
        return f"phase version {info.version!r} is not an int"
    if info.reason is not None and not isinstance(info.reason, str):
        return f"reason {info.reason!r} is not a str"
    if returned.requeue_after is not None and not isinstance(returned.requeue_after, timedelta):
        return (
            f"requeue_after {returned.requeue_after!r} is not a timedelta "
            "(do_transition(..., requeue_after=seconds) converts numbers)"
        )
    if info.error is not None and not isinstance(info.error, ExecutionError):
        return f"error is {_describe(info.error)}, expected an ExecutionError"
    if info.info is not None and not isinstance(info.info, TaskInfo):
        return f"info is {_describe(info.info)}, expected a TaskInfo"
    try:
        for part in (info.error, info.info):
            if part is not None:
                json.dumps(part.to_dict(), allow_nan=False)
    except (TypeError, ValueError, AttributeError) as err:
        return f"the phase info cannot be stored as JSON: {type(err).__name__}: {err}"
    return None


def scrub_outcome(outcome: lifecycle.Outcome) -> lifecycle.Outcome:
    """The outcome with every secret a plugin read masked, before it can reach an event or a log."""
    if not REDACTOR:
        return outcome
    match outcome:
        case lifecycle.Handled(transition):
            info = transition.phase_info
            task_info = info.info
            if task_info is not None:
                task_info = replace(
                    task_info,
                    logs=tuple(
                        TaskLog(REDACTOR.text(log.name), REDACTOR.text(log.uri)) for log in task_info.logs
                    ),
                    external_resources=tuple(REDACTOR.text(r) for r in task_info.external_resources),
                    custom_info=REDACTOR.scrub(task_info.custom_info),
                )
            error = info.error
            if error is not None:
                error = replace(error, code=REDACTOR.text(error.code), message=REDACTOR.text(error.message))
            scrubbed = replace(
                info,
                reason=REDACTOR.text(info.reason) if info.reason is not None else None,
                error=error,
                info=task_info,
            )
            return replace(outcome, transition=replace(transition, phase_info=scrubbed))
        case lifecycle.SystemFault(_, message) | lifecycle.Rejected(_, message):
            return replace(outcome, message=REDACTOR.text(message))
        case _:
            return outcome


def _describe(value: object) -> str:
    if value is None:
        return "None"
    return f"a {type(value).__name__}"
