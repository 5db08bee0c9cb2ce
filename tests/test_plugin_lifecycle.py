"""The plugins' lifecycle (executor/plugin/lifecycle.py) in one process: start before the body,
background tasks cancelled before aclose, every aclose called whatever the others do, and what a
failing start, task or close does. The real daemon's shutdown is tests/test_plugin_lifecycle_process.py."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from executor.core import PhaseInfo, Plugin, StartContext, TaskExecutionContext, Transition, do_transition
from executor.plugin.lifecycle import PluginStartError, PluginTaskError, running_plugins

pytestmark = pytest.mark.anyio


class Log:
    """A `Logger` that keeps what it was told."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def _add(self, level: str, event: str, kw: dict[str, Any]) -> None:
        self.lines.append((level, event, kw))

    def debug(self, event: str, **kw: Any) -> None:
        self._add("debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._add("info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._add("warning", event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._add("error", event, kw)

    def events(self, level: str) -> list[tuple[str, Any]]:
        return [(event, kw.get("plugin")) for lvl, event, kw in self.lines if lvl == level]


class Probe(Plugin):
    """Records its lifecycle in a list shared by all probes of a test, in order."""

    def __init__(
        self,
        name: str,
        journal: list[str],
        *,
        fail_start: bool = False,
        fail_close: bool = False,
        hang_close: bool = False,
        task: bool = True,
    ) -> None:
        self.id = name
        self.journal = journal
        self.fail_start, self.fail_close, self.hang_close, self.task = (
            fail_start,
            fail_close,
            hang_close,
            task,
        )
        self.task_running = anyio.Event()

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        return do_transition(PhaseInfo.success())

    async def start(self, ctx: StartContext) -> None:
        self.journal.append(f"{self.id} start")
        if self.fail_start:
            raise RuntimeError("no credentials")
        if self.task:
            ctx.tasks.start_soon(self._background, "tick", name="ticker")

    async def _background(self, word: str) -> None:
        self.task_running.set()
        try:
            await anyio.sleep_forever()
        finally:
            self.journal.append(f"{self.id} task ended ({word})")

    async def aclose(self) -> None:
        self.journal.append(f"{self.id} aclose")
        if self.hang_close:
            await anyio.sleep_forever()
        if self.fail_close:
            raise OSError("socket already gone")
        self.journal.append(f"{self.id} closed")


async def test_start_runs_before_the_body_and_tasks_end_before_any_aclose() -> None:
    journal: list[str] = []
    a, b = Probe("a", journal), Probe("b", journal)
    log = Log()
    async with running_plugins({"a": a, "b": b}, log):
        await a.task_running.wait()
        await b.task_running.wait()
        journal.append("body")

    assert journal[:3] == ["a start", "b start", "body"]
    ended = {"a task ended (tick)", "b task ended (tick)"}
    assert set(journal[3:5]) == ended  # both tasks cancelled ...
    assert set(journal[5:]) == {"a aclose", "a closed", "b aclose", "b closed"}  # ... before any close
    assert log.events("error") == []


async def test_a_start_that_raises_names_the_plugin_runs_no_body_and_still_closes_every_plugin() -> None:
    journal: list[str] = []
    plugins = {"a": Probe("a", journal), "broken": Probe("broken", journal, fail_start=True)}
    plugins["c"] = Probe("c", journal)
    with pytest.raises(
        PluginStartError, match=r"plugin 'broken' failed to start: RuntimeError: no credentials"
    ):
        async with running_plugins(plugins, Log()):
            journal.append("body")

    assert "body" not in journal and "c start" not in journal  # stopped at the first failure
    assert "a task ended (tick)" in journal
    assert {line for line in journal if line.endswith("closed")} == {"a closed", "broken closed", "c closed"}


async def test_a_start_that_hangs_is_a_start_failure() -> None:
    class Hangs(Probe):
        async def start(self, ctx: StartContext) -> None:
            await anyio.sleep_forever()

    journal: list[str] = []
    with pytest.raises(PluginStartError, match=r"plugin 'slow' did not finish starting within 0.1s"):
        async with running_plugins({"slow": Hangs("slow", journal)}, Log(), start_timeout=0.1):
            pass
    assert journal == ["slow aclose", "slow closed"]


async def test_an_aclose_that_raises_or_hangs_is_logged_and_the_others_are_closed() -> None:
    journal: list[str] = []
    plugins = {
        "fails": Probe("fails", journal, fail_close=True),
        "hangs": Probe("hangs", journal, hang_close=True),
        "fine": Probe("fine", journal),
    }
    log = Log()
    with anyio.fail_after(5):
        async with running_plugins(plugins, log, close_timeout=0.2):
            pass

    assert "fine closed" in journal
    assert {"fails aclose", "hangs aclose"} <= set(journal)
    assert sorted(log.events("error")) == [
        ("plugin.close_failed", "fails"),
        ("plugin.close_timed_out", "hangs"),
    ]
    [(_, _, failed)] = [line for line in log.lines if line[1] == "plugin.close_failed"]
    assert isinstance(failed["exc_info"], OSError)


async def test_a_background_task_that_raises_stops_the_body_naming_its_plugin() -> None:
    class Crashes(Probe):
        async def start(self, ctx: StartContext) -> None:
            ctx.tasks.start_soon(self._crash, name="refresher")

        async def _crash(self) -> None:
            raise ValueError("bad page")

    journal: list[str] = []
    log = Log()
    with pytest.raises(PluginTaskError, match=r"plugin crashy: refresher failed: ValueError: bad page"):
        async with running_plugins(
            {"crashy": Crashes("crashy", journal), "other": Probe("other", journal)}, log
        ):
            await anyio.sleep_forever()  # cancelled by the failure: the daemon's loop would stop here

    assert log.events("error") == [("plugin.task_failed", "crashy")]
    assert {"crashy closed", "other closed", "other task ended (tick)"} <= set(journal)


async def test_the_bodys_own_error_comes_out_as_itself() -> None:
    journal: list[str] = []
    with pytest.raises(LookupError, match="the store went away"):
        async with running_plugins({"a": Probe("a", journal)}, Log()):
            raise LookupError("the store went away")
    assert journal[-1] == "a closed"


async def test_plugins_without_hooks_need_nothing() -> None:
    class Plain(Plugin):
        async def handle(self, tctx: TaskExecutionContext) -> Transition:
            return do_transition(PhaseInfo.success())

    async with running_plugins({"plain": Plain()}, Log()):
        pass
