"""flaky: fails permanently (code `NotYet`) until the file `inputs["ok_file"]` exists, then succeeds:
a failure an operator fixes, then retries (tests/test_history_process.py)."""

from pathlib import Path

from executor import plugin_registry
from executor.core import PhaseInfo, Plugin, PluginEntry, TaskExecutionContext, Transition, do_transition

TASK_TYPE = "flaky"


class FlakyPlugin(Plugin):
    id = TASK_TYPE

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        inputs = await tctx.input_reader.get()
        if Path(inputs["ok_file"]).exists():  # noqa: ASYNC240 (a test plugin: one stat)
            return do_transition(PhaseInfo.success())
        return do_transition(PhaseInfo.failure("NotYet", "the file the task needs is missing"))


plugin_registry().register_core_plugin(
    PluginEntry(id=TASK_TYPE, registered_task_types=[TASK_TYPE], load_plugin=lambda setup: FlakyPlugin())
)
