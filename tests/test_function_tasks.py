"""`@task` itself (issue 15): what it registers, and the functions it refuses at decoration, naming
them, so that a function the daemon could not call stops the start-up instead of failing executions.
The daemon running function tasks is tests/test_function_tasks_process.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from executor.core import SetupContext, TaskExecutionContext
from executor.functions import FunctionPlugin, FunctionSignatureError, task
from executor.functions.plugin import outputs_of
from executor.logging import get_logger
from executor.plugin.registry import PluginRegistry, PluginRegistryError, load_plugins, registering_into
from executor.plugin.resources import InProcessResourceManager


class Order(BaseModel):
    item: str
    quantity: int = 1


class Limits(BaseModel):
    most: int = 10


def test_the_entry_carries_the_models_and_the_submission_defaults() -> None:
    registry = PluginRegistry()
    with registering_into(registry, "test"):

        @task("order", input_model=Order, max_attempts=3, timeout="5m", config_model=Limits)
        async def order(inputs: Order, context: TaskExecutionContext, limits: Limits) -> None:
            pass

        @task("add", cpu=True)
        def add(a: int, b: int = 2) -> int:
            return a + b

    [first, second] = registry.entries
    assert (first.id, first.input_model, first.config_model) == ("order", Order, Limits)
    resolver = registry.resolver()
    assert resolver.defaults_for("order").max_attempts == 3
    assert resolver.defaults_for("order").timeout == timedelta(minutes=5)
    assert resolver.defaults_for("add").max_attempts is None
    assert second.input_model is not None
    assert second.input_model.model_validate({"a": 1}).model_dump() == {"a": 1, "b": 2}
    assert add(1, b=5) == 6  # still the function


@pytest.mark.anyio
async def test_each_kind_of_function_gets_the_plugin_properties_of_where_it_runs() -> None:
    registry = PluginRegistry()
    with registering_into(registry, "test"):

        @task("on-loop", timeout="2s")
        async def on_loop() -> None: ...

        @task("on-thread")
        def on_thread() -> None: ...

        @task("in-process", cpu=True)
        def in_process() -> None: ...

        @task("configured", config_model=Limits)
        async def configured(limits: Limits) -> None: ...

    setup = SetupContext(
        settings=None,
        logger=get_logger(),
        resource_registrar=InProcessResourceManager(),
        plugin_config={"configured": {"most": 3}},
    )
    plugins = (await load_plugins(registry, setup)).by_id
    properties = {name: plugin.properties for name, plugin in plugins.items()}
    assert isinstance(plugins["on-loop"], FunctionPlugin)
    assert properties["on-loop"].work_timeout == timedelta(seconds=2)
    assert not properties["on-loop"].blocking and not properties["on-loop"].cpu_bound
    assert properties["on-thread"].blocking and not properties["on-thread"].cpu_bound
    assert properties["in-process"].cpu_bound and not properties["in-process"].blocking
    assert plugins["configured"]._config == Limits(most=3)  # what the function gets

    bad = SetupContext(
        settings=None,
        logger=get_logger(),
        resource_registrar=InProcessResourceManager(),
        plugin_config={"configured": {"most": "many"}},
    )
    with pytest.raises(PluginRegistryError) as refused:
        await load_plugins(registry, bad)
    assert str(refused.value) == (
        "plugin 'configured' (test) failed to load: PluginConfigError: invalid configuration for plugin "
        "'configured': most: Input should be a valid integer, unable to parse string as an integer"
    )


def _decorate(**options: Any) -> Any:
    def decorate(function: Any) -> Any:
        with registering_into(PluginRegistry(), "test"):
            return task("t", **options)(function)

    return decorate


def test_functions_the_daemon_could_not_call_are_refused_at_decoration() -> None:
    def star(*args: int) -> None: ...

    def positional(a: int, /) -> None: ...

    async def coroutine(a: int) -> None: ...

    def two(a: int, b: int) -> None: ...

    with pytest.raises(FunctionSignatureError, match=r"parameter 'args' cannot be filled by name"):
        _decorate()(star)
    with pytest.raises(FunctionSignatureError, match=r"parameter 'a' cannot be filled by name"):
        _decorate()(positional)
    with pytest.raises(ValueError, match=r"cpu=True takes a sync function"):
        _decorate(cpu=True)(coroutine)
    with pytest.raises(FunctionSignatureError, match=r"takes \['a', 'b'\] but input_model Order has fields"):
        _decorate(input_model=Order)(two)
    with pytest.raises(ValueError, match=r"max_attempts must be an int of at least 1, got 0"):
        _decorate(max_attempts=0)(two)
    with pytest.raises(ValueError, match=r"timeout must be a positive duration"):
        _decorate(timeout="0s")(two)
    with pytest.raises(ValueError, match=r"invalid duration 'soon'"):
        _decorate(timeout="soon")(two)
    with pytest.raises(TypeError, match=r"permanent must be exception classes"):
        _decorate(permanent=("ValueError",))(two)


def test_a_task_type_registered_twice_is_refused_naming_both() -> None:
    registry = PluginRegistry()
    with registering_into(registry, "first.py"):
        task("same")(lambda: None)
    with (
        registering_into(registry, "second.py"),
        pytest.raises(PluginRegistryError, match=r"first\.py.*second\.py"),
    ):
        task("same")(lambda: None)


def test_what_a_function_returns_becomes_the_outputs() -> None:
    assert outputs_of(None) == {}
    assert outputs_of(Order(item="tea")) == {"item": "tea", "quantity": 1}
    assert outputs_of({"a": 1}) == {"a": 1}
    assert outputs_of(42) == {"result": 42}
    assert outputs_of(["a"]) == {"result": ["a"]}
