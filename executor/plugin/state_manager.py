"""Plugin state between rounds: serialised as JSON with a version, size-limited, read back typed.

As in Flyte's PluginStateManager, what `put` writes is visible only from the next round on: the
reader serves the state loaded with the claim, the writer captures a new one for the commit.
Unlike Flyte v1, a `put` is persisted even when the phase and its version did not change.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

import pydantic

from executor.core import PluginStateError
from executor.core.records import StateChange

StateT = TypeVar("StateT")


@functools.lru_cache(maxsize=256)
def _cached_adapter(state_type: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(state_type)


def _adapter(state_type: object) -> pydantic.TypeAdapter[Any]:
    """Building a TypeAdapter costs far more than using one: build one per type, once."""
    return _cached_adapter(state_type)


class PluginStateManager:
    """One execution's state for one round; it is both the reader and the writer."""

    __slots__ = ("_change", "_max_bytes", "_stored", "_version", "problem")

    def __init__(self, stored: str | None, version: int, max_bytes: int) -> None:
        self._stored = stored
        self._version = version
        self._max_bytes = max_bytes
        self._change: StateChange | None = None
        #: (code, message) when the plugin wrote state that cannot be stored.
        self.problem: tuple[str, str] | None = None

    # reader
    def get(self, state_type: type[StateT]) -> tuple[int, StateT]:
        if self._stored is None:
            try:
                return 0, state_type()
            except Exception as err:
                raise PluginStateError(
                    f"{_name(state_type)} cannot be built with no arguments, so it has no zero value "
                    f"for the first round: {err}"
                ) from err
        try:
            state = _adapter(state_type).validate_json(self._stored)
        except (pydantic.ValidationError, pydantic.PydanticSchemaGenerationError) as err:
            raise PluginStateError(
                f"the stored plugin state (version {self._version}) cannot be read back into "
                f"{_name(state_type)}: {err}"
            ) from err
        return self._version, state

    # writer
    def put(self, version: int, state: object) -> None:
        try:
            data = _adapter(type(state)).dump_json(state)
        except Exception as err:
            self.problem = (
                "PluginStateUnserialisable",
                f"plugin state of type {type(state).__name__} cannot be serialised to JSON: {err}",
            )
            return
        if len(data) > self._max_bytes:
            self.problem = (
                "PluginStateTooLarge",
                f"plugin state of {len(data)} bytes is over the limit of {self._max_bytes} bytes "
                f"(EXECUTOR_MAX_PLUGIN_STATE_BYTES)",
            )
            return
        self._change = StateChange(data.decode(), version)
        self.problem = None  # the last write is the one stored: an earlier failed one no longer counts

    def reset(self) -> None:
        self._change = StateChange(None, 0)
        self.problem = None

    @property
    def change(self) -> StateChange | None:
        return self._change


def _name(state_type: object) -> str:
    return getattr(state_type, "__name__", repr(state_type))
