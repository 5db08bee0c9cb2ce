"""recording: RUNNING forever (requeued after an hour), and records every call it gets, in order,
on the plugin instance (`calls`), so tests can check what the loop called and when."""

from executor import plugin_registry
from executor.core import PhaseInfo, Plugin, PluginEntry, TaskExecutionContext, Transition, do_transition

TASK_TYPE = "recording"


class RecordingPlugin(Plugin):
    id = TASK_TYPE

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def _record(self, method: str, tctx: TaskExecutionContext) -> None:
        self.calls.append((method, tctx.task_execution_metadata.execution_id))

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        self._record("handle", tctx)
        return do_transition(PhaseInfo.running(0), requeue_after=3600)

    async def abort(self, tctx: TaskExecutionContext) -> None:
        self._record("abort", tctx)

    async def finalize(self, tctx: TaskExecutionContext) -> None:
        self._record("finalize", tctx)


plugin_registry().register_core_plugin(
    PluginEntry(id=TASK_TYPE, registered_task_types=[TASK_TYPE], load_plugin=lambda setup: RecordingPlugin())
)
