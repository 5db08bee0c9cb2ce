"""Plugin state between rounds: typed reads, next-round visibility, size limit, bad state."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

from executor.core import PluginStateError
from executor.core.records import StateChange
from executor.plugin.state_manager import PluginStateManager

LIMIT = 1024 * 1024


class SleepState(BaseModel):
    start_time: datetime | None = None
    ticks: int = 0


@dataclasses.dataclass
class DataState:
    name: str = ""
    values: list[int] = dataclasses.field(default_factory=list)
    when: datetime | None = None


class Required(BaseModel):
    needed: int


def next_round(manager: PluginStateManager, max_bytes: int = LIMIT) -> PluginStateManager:
    """What the next round's manager is built from once this round committed."""
    change = manager.change
    assert change is not None
    return PluginStateManager(change.data, change.version, max_bytes)


def test_no_state_gives_version_zero_and_the_zero_value() -> None:
    manager = PluginStateManager(None, 0, LIMIT)
    assert manager.get(SleepState) == (0, SleepState())
    assert manager.get(DataState) == (0, DataState())
    assert manager.change is None
    assert manager.problem is None


def test_put_is_visible_only_in_the_next_round() -> None:
    start = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    manager = PluginStateManager(None, 0, LIMIT)
    manager.put(3, SleepState(start_time=start, ticks=1))
    assert manager.get(SleepState) == (0, SleepState()), "a put must not be readable in its own round"
    assert manager.change is not None
    assert manager.change.version == 3
    assert json.loads(manager.change.data or "") == {"start_time": "2024-05-01T12:00:00Z", "ticks": 1}

    after = next_round(manager)
    assert after.get(SleepState) == (3, SleepState(start_time=start, ticks=1))
    after.put(4, SleepState(start_time=start, ticks=2))
    assert after.get(SleepState) == (3, SleepState(start_time=start, ticks=1))
    assert next_round(after).get(SleepState) == (4, SleepState(start_time=start, ticks=2))


def test_last_put_in_a_round_wins() -> None:
    manager = PluginStateManager(None, 0, LIMIT)
    manager.put(1, SleepState(ticks=1))
    manager.put(2, SleepState(ticks=2))
    assert next_round(manager).get(SleepState) == (2, SleepState(ticks=2))


def test_dataclass_round_trip() -> None:
    state = DataState(name="x", values=[1, 2, 3], when=datetime(2024, 1, 1, tzinfo=UTC))
    manager = PluginStateManager(None, 0, LIMIT)
    manager.put(7, state)
    version, read = next_round(manager).get(DataState)
    assert version == 7
    assert read == state
    assert isinstance(read, DataState)


def test_plain_json_types_round_trip() -> None:
    manager = PluginStateManager(None, 0, LIMIT)
    manager.put(1, {"a": [1, 2], "b": None})
    assert next_round(manager).get(dict) == (1, {"a": [1, 2], "b": None})


def test_reset_really_clears() -> None:
    manager = PluginStateManager(SleepState(ticks=5).model_dump_json(), 9, LIMIT)
    assert manager.get(SleepState) == (9, SleepState(ticks=5))
    manager.reset()
    assert manager.change == StateChange(None, 0)
    assert manager.get(SleepState) == (9, SleepState(ticks=5)), "reset, like put, shows next round"
    assert next_round(manager).get(SleepState) == (0, SleepState())


def test_oversized_state_is_a_problem_naming_the_setting() -> None:
    manager = PluginStateManager(None, 0, max_bytes=100)
    manager.put(1, DataState(name="x" * 200))
    assert manager.change is None
    assert manager.problem is not None
    code, message = manager.problem
    assert code == "PluginStateTooLarge"
    assert "EXECUTOR_MAX_PLUGIN_STATE_BYTES" in message
    assert "100" in message


def test_size_limit_is_inclusive_and_counts_bytes() -> None:
    state = DataState(name="é" * 10)
    size = len(json.dumps(dataclasses.asdict(state), separators=(",", ":"), ensure_ascii=False).encode())
    exact = PluginStateManager(None, 0, max_bytes=size)
    exact.put(1, state)
    assert exact.problem is None and exact.change is not None
    assert len(exact.change.data.encode() if exact.change.data else b"") == size
    over = PluginStateManager(None, 0, max_bytes=size - 1)
    over.put(1, state)
    assert over.problem is not None and over.problem[0] == "PluginStateTooLarge"


@pytest.mark.parametrize("state", [object(), {"f": lambda: None}, DataState(values=[object()])])  # type: ignore[list-item]
def test_unserialisable_state_is_a_problem(state: object) -> None:
    manager = PluginStateManager(None, 0, LIMIT)
    manager.put(1, state)
    assert manager.change is None
    assert manager.problem is not None
    assert manager.problem[0] == "PluginStateUnserialisable"
    assert type(state).__name__ in manager.problem[1]


def test_a_later_good_write_replaces_an_earlier_bad_one() -> None:
    manager = PluginStateManager(None, 0, max_bytes=100)
    manager.put(1, DataState(name="x" * 200))
    assert manager.problem is not None
    manager.put(2, DataState(name="small"))
    assert manager.problem is None
    assert next_round(manager).get(DataState) == (2, DataState(name="small"))
    manager.put(3, object())
    assert manager.problem is not None
    manager.reset()
    assert manager.problem is None
    assert manager.change == StateChange(None, 0)


@pytest.mark.parametrize(
    "stored",
    [
        '{"start_time": "not a time"}',
        '{"ticks": "many"}',
        "[1, 2]",
        "not json at all",
    ],
)
def test_stored_state_not_fitting_the_type_is_a_state_error(stored: str) -> None:
    manager = PluginStateManager(stored, 2, LIMIT)
    with pytest.raises(PluginStateError) as caught:
        manager.get(SleepState)
    assert "SleepState" in str(caught.value)
    assert "version 2" in str(caught.value)


def test_state_type_without_zero_value_is_a_state_error() -> None:
    with pytest.raises(PluginStateError, match=r"Required.*no zero value"):
        PluginStateManager(None, 0, LIMIT).get(Required)
    assert PluginStateManager('{"needed": 4}', 1, LIMIT).get(Required) == (1, Required(needed=4))
