"""A submission's not-before time is kept with its execution, so every door shows it after the
first round too (it used to be read back from `next_round_at`, which the first round moves on)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from executor.core import Phase, SetupContext
from executor.logging import get_logger
from executor.plugin.loader import load_directory
from executor.plugin.registry import PluginRegistry, load_plugins
from executor.plugin.resources import InProcessResourceManager
from executor.runtime import Reconciler
from executor.settings import load_settings
from executor.store import Store, Submission
from executor.views import execution_dict

pytestmark = pytest.mark.anyio

BUILTIN_PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


async def test_not_before_is_shown_after_the_execution_ran(store: Store, database_url: str) -> None:
    not_before = time.time() - 5  # already past: the first round runs at once
    [execution_id] = await store.submit_many([Submission("echo", {}, not_before=not_before)], now=time.time())
    registry = PluginRegistry()
    load_directory(registry, BUILTIN_PLUGINS)
    settings = load_settings(database_url=database_url)
    resources = InProcessResourceManager()
    plugins = await load_plugins(
        registry, SetupContext(settings=settings, logger=get_logger(), resource_registrar=resources)
    )
    await Reconciler(store, plugins, settings, resource_manager=resources).run_round()

    record = await store.get(execution_id)
    assert record is not None and record.phase is Phase.SUCCESS and record.rounds == 1
    assert record.not_before == pytest.approx(not_before)
    shown = execution_dict(record)["not_before"]
    assert shown is not None and abs(shown_timestamp(shown) - not_before) < 0.001


def shown_timestamp(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()
