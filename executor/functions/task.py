"""`@task`: the decorator, and `FunctionTask`, what it makes of a function (still callable as it was).

Decorating registers the task's plugin entry into the registry being loaded (`plugin_registry()`),
as any plugin module does when the daemon, a worker process or the CLI imports it. The entry
carries the input model (every door validates submissions against it), the output model, the
config model, and the task's `max_attempts` and `timeout` as the defaults of its submissions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

from pydantic import BaseModel, ValidationError

from executor.core import Plugin, PluginEntry, SetupContext, config_problems, parse_duration
from executor.functions.plugin import FunctionPlugin
from executor.functions.signature import shape_of
from executor.plugin.registry import plugin_registry

P = ParamSpec("P")
R = TypeVar("R")
InputT = TypeVar("InputT", bound=BaseModel)
Duration = timedelta | float | str


class Submitter(Protocol):
    """What `submit` needs of a client: `executor.client.Client` is one."""

    async def submit(
        self,
        task_type: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        priority: int = 0,
        max_attempts: int | None = None,
        not_before: datetime | None = None,
        timeout: Duration | None = None,  # noqa: ASYNC109 -- the execution's, not this call's
        deadline: Duration | None = None,
        idempotency_key: str | None = None,
    ) -> str: ...


class FunctionTask(Generic[P, R, InputT]):
    """A function that is also a task type: call it as before, or `submit` it to run in the daemon."""

    def __init__(
        self,
        task_type: str,
        function: Callable[P, R],
        *,
        input_model: type[InputT] | None,
        output_model: type[BaseModel] | None,
        config_model: type[BaseModel] | None,
        max_attempts: int | None,
        timeout: Duration | None,
        cpu: bool,
        permanent: tuple[type[BaseException], ...],
    ) -> None:
        if not isinstance(task_type, str) or not task_type.strip():
            raise ValueError(f"@task needs the task type's name, got {task_type!r}")
        where = f"@task({task_type!r})"
        if max_attempts is not None and (
            not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1
        ):
            raise ValueError(f"{where}: max_attempts must be an int of at least 1, got {max_attempts!r}")
        limit = _positive(where, timeout)
        if not all(isinstance(kind, type) and issubclass(kind, BaseException) for kind in permanent):
            raise TypeError(f"{where}: permanent must be exception classes, got {permanent!r}")
        shape = shape_of(task_type, function, input_model, config_model)
        if cpu and shape.is_async:
            raise ValueError(
                f"{where}: cpu=True takes a sync function (an async one awaits; it does not compute)"
            )
        functools.update_wrapper(self, function)
        self.task_type = task_type
        self.function = function
        self.input_model: type[BaseModel] = shape.input_model
        self.max_attempts = max_attempts
        self.timeout = limit
        self.cpu = cpu

        def load(setup: SetupContext) -> Plugin:
            return FunctionPlugin(
                task_type, function, shape, cpu=cpu, timeout=limit, permanent=permanent, config=setup.config
            )

        self.entry = PluginEntry(
            id=task_type,
            registered_task_types=[task_type],
            load_plugin=load,
            input_model=shape.input_model,
            output_model=output_model,
            config_model=config_model,
            default_max_attempts=max_attempts,
            default_timeout=limit,
        )

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.function(*args, **kwargs)

    async def submit(self, client: Submitter, /, **inputs: Any) -> str:
        """Submit an execution with these inputs (the input model's fields); its id.

        Inputs that do not fit the model are refused here, as every door refuses them
        (`SubmissionError`), before anything is stored."""
        return await self.submit_with(client, inputs)

    async def submit_with(
        self,
        client: Submitter,
        inputs: InputT | Mapping[str, Any],
        *,
        labels: Mapping[str, str] | None = None,
        priority: int = 0,
        max_attempts: int | None = None,
        not_before: datetime | None = None,
        timeout: Duration | None = None,  # noqa: ASYNC109 -- the execution's, not this call's
        deadline: Duration | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """`submit` with the inputs as a model (or a mapping) and the submission's options;
        `max_attempts` and `timeout` default to the task's."""
        if isinstance(inputs, self.input_model):
            validated: BaseModel = inputs
        else:
            try:
                validated = self.input_model.model_validate(dict(inputs))
            except ValidationError as err:
                from executor.client import SubmissionError  # the error path only: see below

                raise SubmissionError(
                    f"inputs do not fit {self.input_model.__name__} for task type {self.task_type!r}: "
                    f"{config_problems(err)}",
                    "inputs",
                ) from None
        return await client.submit(
            self.task_type,
            validated.model_dump(mode="json"),
            labels=labels,
            priority=priority,
            max_attempts=self.max_attempts if max_attempts is None else max_attempts,
            not_before=not_before,
            timeout=self.timeout if timeout is None else timeout,
            deadline=deadline,
            idempotency_key=idempotency_key,
        )


# (`executor.client` is imported on the error path only: a function task's module is loaded in
# every worker process, which must not load the store for the sake of an error class.)


@overload
def task(
    name: str,
    *,
    input_model: type[InputT],
    output_model: type[BaseModel] | None = None,
    config_model: type[BaseModel] | None = None,
    max_attempts: int | None = None,
    timeout: Duration | None = None,
    cpu: bool = False,
    permanent: tuple[type[BaseException], ...] = (),
) -> Callable[[Callable[P, R]], FunctionTask[P, R, InputT]]: ...


@overload
def task(
    name: str,
    *,
    input_model: None = None,
    output_model: type[BaseModel] | None = None,
    config_model: type[BaseModel] | None = None,
    max_attempts: int | None = None,
    timeout: Duration | None = None,
    cpu: bool = False,
    permanent: tuple[type[BaseException], ...] = (),
) -> Callable[[Callable[P, R]], FunctionTask[P, R, BaseModel]]: ...


def task(
    name: str,
    *,
    input_model: type[Any] | None = None,
    output_model: type[BaseModel] | None = None,
    config_model: type[BaseModel] | None = None,
    max_attempts: int | None = None,
    timeout: Duration | None = None,
    cpu: bool = False,
    permanent: tuple[type[BaseException], ...] = (),
) -> Callable[[Callable[P, R]], FunctionTask[P, R, Any]]:
    """Make the decorated function the task type `name` and register it.

    - `input_model`: a pydantic model of the inputs; the function takes one parameter of that
      type, or its fields. Without one, the function's own parameters make the model.
    - `output_model`: the outputs must fit it (else `InvalidOutputs`). A function returns a model,
      a mapping, None (no outputs) or any JSON value (stored as `{"result": value}`).
    - `config_model`: the task's configuration (EXECUTOR_PLUGIN_CONFIG[name]); a parameter
      annotated with it gets it. A parameter annotated `TaskExecutionContext` gets the context.
    - `max_attempts`, `timeout`: the defaults of the task's submissions. `timeout` also bounds
      each call of the function: past it, the attempt fails `TimeoutExpired` (retried while
      attempts remain). Without it, EXECUTOR_HANDLE_TIMEOUT bounds the call.
    - `cpu=True`: a sync function that computes runs in a worker process (EXECUTOR_PROCESS_WORKERS).
    - An exception is a retryable failure; `PermanentError` and the `permanent` classes are not.
    """

    def decorate(function: Callable[P, R]) -> FunctionTask[P, R, Any]:
        made: FunctionTask[P, R, Any] = FunctionTask(
            name,
            function,
            input_model=input_model,
            output_model=output_model,
            config_model=config_model,
            max_attempts=max_attempts,
            timeout=timeout,
            cpu=cpu,
            permanent=tuple(permanent),
        )
        plugin_registry().register_core_plugin(made.entry)
        return made

    return decorate


def _positive(where: str, value: Duration | None) -> timedelta | None:
    if value is None:
        return None
    limit = parse_duration(value)
    if limit <= timedelta(0):
        raise ValueError(f"{where}: timeout must be a positive duration, got {value!r}")
    return limit
