"""bad-transition: returns a Transition that is malformed in the way `inputs["kind"]` names, the
mistakes a plugin author can make that type checkers do not catch at run time."""

from datetime import UTC, datetime
from typing import Any

from executor import plugin_registry
from executor.core import (
    ExecutionError,
    Phase,
    PhaseInfo,
    Plugin,
    PluginEntry,
    TaskExecutionContext,
    TaskInfo,
    Transition,
    TransitionType,
)

TASK_TYPE = "bad-transition"

TRANSITIONS: dict[str, Any] = {
    # seconds where a timedelta belongs
    "requeue-number": Transition(TransitionType.EPHEMERAL, PhaseInfo.running(0), requeue_after=5),  # type: ignore[arg-type]
    # a version that is not an int
    "version-text": Transition(TransitionType.EPHEMERAL, PhaseInfo(Phase.RUNNING, version="1")),  # type: ignore[arg-type]
    # custom info that JSON cannot hold
    "info-unserialisable": Transition(
        TransitionType.EPHEMERAL,
        PhaseInfo.running(0, info=TaskInfo(custom_info={"at": datetime(2024, 1, 1, tzinfo=UTC)})),
    ),
    # an error whose message is not text
    "error-message-object": Transition(
        TransitionType.EPHEMERAL,
        PhaseInfo(
            Phase.PERMANENT_FAILURE,
            reason="Failed",
            error=ExecutionError("Failed", ValueError("not text")),  # type: ignore[arg-type]
        ),
    ),
}


class BadTransitionPlugin(Plugin):
    id = TASK_TYPE

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        result: Transition = TRANSITIONS[(await tctx.input_reader.get())["kind"]]
        return result


plugin_registry().register_core_plugin(
    PluginEntry(
        id=TASK_TYPE, registered_task_types=[TASK_TYPE], load_plugin=lambda setup: BadTransitionPlugin()
    )
)
