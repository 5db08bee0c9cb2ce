"""The kit reads an `AsyncPlugin`'s resource meta and resource types from its type parameters, so
that the meta persisted as JSON comes back as the author's type; it refuses, by name, a plugin
whose meta type it cannot tell."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pytest
from pydantic import BaseModel

from executor.core import PhaseInfo, SetupContext, TaskExecutionContext
from executor.logging import get_logger
from executor.plugin.registry import PluginRegistry, PluginRegistryError, load_plugins
from executor.plugin.resources import InProcessResourceManager
from executor.webapi import AsyncPlugin, WebApiPlugin, register_async_plugin
from executor.webapi.typeparams import PluginTypeError, infer_plugin_types


class Meta(BaseModel):
    url: str
    job_id: str


@dataclass
class Job:
    status: str


M = TypeVar("M")
R = TypeVar("R")


class _Stub(AsyncPlugin[M, R], Generic[M, R]):
    """The four operations, never called here: only the class's parameters matter."""

    async def create(self, tctx: TaskExecutionContext) -> tuple[M, R | None]:
        raise NotImplementedError

    async def get(self, resource_meta: M) -> R:
        raise NotImplementedError

    async def delete(self, resource_meta: M, reason: str) -> None:
        raise NotImplementedError

    async def status(self, tctx: TaskExecutionContext, resource_meta: M, resource: R) -> PhaseInfo:
        raise NotImplementedError


class AsInTheReadme(_Stub[Meta, dict[str, Any]]):
    pass


class OneMoreLevel(AsInTheReadme):
    pass


B = TypeVar("B")


class HalfGiven(_Stub[list[B], Job], Generic[B]):
    pass


class Completed(HalfGiven[Meta]):
    pass


class Explicit(_Stub[Any, Job]):
    resource_meta_type = Meta


class ForwardReferenced(_Stub["Meta", "Job"]):
    pass


class Bare(_Stub):  # type: ignore[type-arg]
    pass


def test_the_types_come_from_the_class_parameters_through_generic_bases() -> None:
    assert (infer_plugin_types(AsInTheReadme).resource_meta, infer_plugin_types(AsInTheReadme).resource) == (
        Meta,
        dict[str, Any],
    )
    assert infer_plugin_types(OneMoreLevel).resource_meta is Meta
    assert infer_plugin_types(Completed).resource_meta == list[Meta]
    assert infer_plugin_types(Completed).resource is Job
    assert infer_plugin_types(ForwardReferenced).resource_meta is Meta


def test_an_explicit_resource_meta_type_wins() -> None:
    assert infer_plugin_types(Explicit).resource_meta is Meta


def test_a_plugin_without_types_is_refused_saying_how_to_give_them() -> None:
    with pytest.raises(PluginTypeError, match=r"Bare\(AsyncPlugin\[Meta, Resource\]\)"):
        infer_plugin_types(Bare)


def test_the_meta_read_back_from_plugin_state_is_the_authors_type() -> None:
    plugin = WebApiPlugin("readme", AsInTheReadme())
    stored = plugin._meta.dump_python(Meta(url="http://x", job_id="7"), mode="json")
    assert stored == {"url": "http://x", "job_id": "7"}  # what plugin state holds: JSON
    assert plugin._meta.validate_python(stored) == Meta(url="http://x", job_id="7")
    assert plugin.resource_meta_type is Meta


@pytest.mark.anyio
async def test_the_daemon_refuses_to_load_such_a_plugin_naming_it() -> None:
    registry = PluginRegistry()
    register_async_plugin(registry, "untyped-remote", ["untyped-remote"], lambda setup: Bare())
    setup = SetupContext(settings=None, logger=get_logger(), resource_registrar=InProcessResourceManager())
    with pytest.raises(PluginRegistryError, match=r"plugin 'untyped-remote' .*failed to load.*Bare"):
        await load_plugins(registry, setup)
