"""The plugin a function task is: validate the inputs, call the function, its result is the outputs.

One call of `handle` runs the whole function, so an execution of a function task takes one round
(a long call outlives its round in the background, keeping its lease, like any slow call). Where
it runs is what the function is: a coroutine function on the daemon's loop; a sync one on the
bounded thread pool (`blocking=True`); with `cpu=True`, in a worker process of the daemon's pool
(`cpu_bound=True`), where the function's module is loaded from the plugins directory again.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ValidationError

from executor.core import (
    PhaseInfo,
    Plugin,
    PluginProperties,
    TaskExecutionContext,
    Transition,
    config_problems,
    do_transition,
)
from executor.functions.signature import CallShape


class PermanentError(Exception):
    """Raised by a function task: the execution fails for good, with no further attempt.

    Any other exception is a retryable failure, which spends one of the execution's attempts
    (`@task(max_attempts=...)`); `@task(permanent=(ValueError, ...))` declares more permanent ones.
    """


class FunctionPlugin(Plugin):
    """Drives the executions of one function task (its plugin id is the task type)."""

    def __init__(
        self,
        task_type: str,
        function: Callable[..., Any],
        shape: CallShape,
        *,
        cpu: bool,
        timeout: timedelta | None,
        permanent: tuple[type[BaseException], ...],
        config: object = None,
    ) -> None:
        self.id = task_type
        self.properties = PluginProperties(
            blocking=not shape.is_async and not cpu, cpu_bound=cpu, work_timeout=timeout
        )
        self._function = function
        self._shape = shape
        self._permanent: tuple[type[BaseException], ...] = (PermanentError, *permanent)
        self._config = config

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        shape = self._shape
        try:
            inputs = shape.input_model.model_validate(await tctx.input_reader.get())
        except ValidationError as err:  # stored before the model changed, or by a client without it
            message = f"inputs do not fit {shape.input_model.__name__}: {config_problems(err)}"
            return do_transition(PhaseInfo.failure("InvalidInputs", message))
        arguments = shape.arguments(inputs, tctx, self._config)
        try:
            if shape.is_async:
                returned = await self._function(**arguments)
            else:
                returned = self._function(**arguments)
        except Exception as err:
            return self._failed(err, tctx)
        await tctx.output_writer.put(outputs_of(returned))
        return do_transition(PhaseInfo.success())

    def _failed(self, err: Exception, tctx: TaskExecutionContext) -> Transition:
        code = type(err).__name__
        permanent = isinstance(err, self._permanent)
        message = f"{code}: {err}" if str(err) else code
        frames = traceback.extract_tb(err.__traceback__)
        if len(frames) > 1:  # the innermost frame of the function's own code, or what it called
            frame = frames[-1]
            message += f" (at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} in {frame.name})"
        tctx.logger.warning("function.raised", error=message, permanent=permanent, exc_info=err)
        if permanent:
            return do_transition(PhaseInfo.failure(code, message))
        return do_transition(PhaseInfo.retryable_failure(code, message))


def outputs_of(returned: object) -> Mapping[str, Any]:
    """What a function returned, as outputs: a model's fields, a mapping as it is, None as no
    outputs, any other value as `{"result": value}`."""
    if returned is None:
        return {}
    if isinstance(returned, BaseModel):
        return returned.model_dump(mode="json")
    if isinstance(returned, Mapping):
        return returned
    return {"result": returned}
