"""The resource meta and resource types of an `AsyncPlugin`, read from its class's type parameters.

`class RemoteJobPlugin(AsyncPlugin[Meta, Job])` is all an author writes: the meta is persisted as
JSON in plugin state and must be read back into a `Meta` (after a restart `get`, `status` and
`delete` would otherwise get a dict). The parameters are followed through generic intermediate
classes (`class Base(AsyncPlugin[M, R])`, then `class Plugin(Base[Meta, Job])`). A class attribute
`resource_meta_type = Meta` still wins; a plugin whose meta type is neither given nor inferable is
refused at load, by name, rather than failing its executions on their first restart.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, ForwardRef, TypeVar, get_args, get_origin

from executor.webapi.plugin import AsyncPlugin, MetaT, ResourceT


class PluginTypeError(TypeError):
    """The kit cannot tell which type an `AsyncPlugin`'s resource meta is read back into."""


@dataclass(frozen=True, slots=True)
class PluginTypes:
    #: What the persisted resource meta is validated back into (`Any`: plain JSON).
    resource_meta: Any
    #: What `get` returns; held in memory only, so it is informative, never validated.
    resource: Any


def infer_plugin_types(cls: type[AsyncPlugin[Any, Any]]) -> PluginTypes:
    """The types `cls` was parametrised with, or `PluginTypeError` saying how to give them."""
    meta, resource = _parameters_of(cls, AsyncPlugin) or (MetaT, ResourceT)
    meta, resource = _resolve(cls, meta), _resolve(cls, resource)
    explicit = _explicit_meta_type(cls)
    if explicit is not _MISSING:
        return PluginTypes(explicit, Any if isinstance(resource, TypeVar) else resource)
    if isinstance(meta, TypeVar) or isinstance(resource, TypeVar):
        raise PluginTypeError(
            f"{cls.__qualname__} does not say its resource meta and resource types: declare it as "
            f"`class {cls.__name__}(AsyncPlugin[Meta, Resource])` (or set `resource_meta_type = Meta`)"
        )
    return PluginTypes(meta, resource)


_MISSING = object()


def _explicit_meta_type(cls: type) -> Any:
    for klass in cls.__mro__:
        if klass is AsyncPlugin:
            break
        if "resource_meta_type" in vars(klass):
            return vars(klass)["resource_meta_type"]
    return _MISSING


def _original_bases(cls: type) -> tuple[Any, ...]:
    """`types.get_original_bases` (Python 3.12+), spelled for 3.11 too."""
    bases: tuple[Any, ...] = cls.__dict__.get("__orig_bases__", cls.__bases__)
    return bases


def _parameters_of(cls: type, target: type) -> tuple[Any, ...] | None:
    """The arguments `cls` gives `target`'s type parameters, in terms of `cls`'s own parameters."""
    if cls is target:
        return tuple(getattr(target, "__parameters__", ()))
    for base in _original_bases(cls):
        origin = get_origin(base) or base
        if not isinstance(origin, type) or not issubclass(origin, target):
            continue
        inner = _parameters_of(origin, target)
        if inner is None:
            continue
        given = dict(zip(getattr(origin, "__parameters__", ()), get_args(base), strict=False))
        return tuple(_substitute(arg, given) for arg in inner)
    return None


def _substitute(arg: Any, given: dict[Any, Any]) -> Any:
    if isinstance(arg, TypeVar):
        return given.get(arg, arg)
    parameters = getattr(arg, "__parameters__", ())
    if parameters and isinstance(parameters, tuple) and not isinstance(arg, type):
        return arg[tuple(given.get(p, p) for p in parameters)]  # list[M] -> list[Meta]
    return arg


def _resolve(cls: type, arg: Any) -> Any:
    """A forward reference (`AsyncPlugin["Meta", Job]`) evaluated in the plugin's module."""
    if isinstance(arg, ForwardRef):
        arg = arg.__forward_arg__
    if not isinstance(arg, str):
        return arg
    namespace = vars(sys.modules[cls.__module__]) if cls.__module__ in sys.modules else {}
    try:
        return eval(arg, dict(namespace))  # the plugin's own source text, not outside input
    except Exception as err:
        raise PluginTypeError(
            f"{cls.__qualname__}: cannot resolve the type {arg!r} in module {cls.__module__}: {err}"
        ) from None
