"""How a function's parameters take what an execution has: its inputs, its context, its configuration.

Read once, when the function is decorated, so that a function the daemon could not call is refused
at start-up (naming it), never by a failing execution. A parameter annotated `TaskExecutionContext`
gets the execution's context; one annotated with the task's `config_model` gets the plugin's
configuration; the others are the inputs. With an `input_model`, the inputs are one parameter of
that type (or its fields as keyword parameters); without one, a model is made from the parameters
themselves (their annotations and defaults), so that every door validates a submission against it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model

from executor.core import TaskExecutionContext


class FunctionSignatureError(TypeError):
    """The function's parameters cannot be filled from an execution; the message says which."""


@dataclass(frozen=True, slots=True)
class CallShape:
    """What each parameter of the function gets, decided once."""

    input_model: type[BaseModel]
    #: The parameter that gets the validated inputs as one model; None: the model's fields are
    #: passed as keyword arguments.
    inputs_param: str | None
    context_param: str | None
    config_param: str | None
    is_async: bool

    def arguments(self, inputs: BaseModel, context: TaskExecutionContext, config: object) -> dict[str, Any]:
        if self.inputs_param is not None:
            arguments: dict[str, Any] = {self.inputs_param: inputs}
        else:
            arguments = {name: getattr(inputs, name) for name in type(inputs).model_fields}
        if self.context_param is not None:
            arguments[self.context_param] = context
        if self.config_param is not None:
            arguments[self.config_param] = config
        return arguments


def shape_of(
    task_type: str,
    function: Callable[..., Any],
    input_model: type[BaseModel] | None,
    config_model: type[BaseModel] | None,
) -> CallShape:
    where = f"@task({task_type!r}) on {getattr(function, '__qualname__', function)!r}"
    try:
        signature = inspect.signature(function, eval_str=True)
    except (NameError, TypeError, ValueError) as err:
        raise FunctionSignatureError(f"{where}: its signature cannot be read: {err}") from None
    context_param = config_param = None
    inputs: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD, parameter.POSITIONAL_ONLY):
            raise FunctionSignatureError(
                f"{where}: parameter {parameter.name!r} cannot be filled by name; "
                "a function task takes named parameters only (no *args, **kwargs or positional-only)"
            )
        if parameter.annotation is TaskExecutionContext:
            context_param = parameter.name
        elif config_model is not None and parameter.annotation is config_model:
            config_param = parameter.name
        else:
            inputs.append(parameter)
    is_async = inspect.iscoroutinefunction(function)
    if input_model is None:
        return CallShape(_model_of(task_type, inputs), None, context_param, config_param, is_async)
    if len(inputs) == 1 and inputs[0].annotation in (input_model, inspect.Parameter.empty):
        return CallShape(input_model, inputs[0].name, context_param, config_param, is_async)
    fields = set(input_model.model_fields)
    names = {parameter.name for parameter in inputs}
    if names != fields:
        raise FunctionSignatureError(
            f"{where}: takes {sorted(names)} but input_model {input_model.__name__} has fields "
            f"{sorted(fields)}: take one parameter annotated {input_model.__name__}, or its fields"
        )
    return CallShape(input_model, None, context_param, config_param, is_async)


def _model_of(task_type: str, parameters: list[inspect.Parameter]) -> type[BaseModel]:
    """A model of the function's input parameters: unknown fields are refused, as typos."""
    fields: dict[str, Any] = {
        parameter.name: (
            Any if parameter.annotation is inspect.Parameter.empty else parameter.annotation,
            ... if parameter.default is inspect.Parameter.empty else parameter.default,
        )
        for parameter in parameters
    }
    name = "".join(part.capitalize() for part in task_type.replace("_", "-").split("-") if part) + "Inputs"
    model: type[BaseModel] = create_model(
        name if name.isidentifier() else "FunctionInputs",
        __config__=ConfigDict(extra="forbid"),
        **fields,
    )
    return model
