"""`executor.localproc` and `executor.tasklogs` on real processes and files, and the `shell`
plugin's submission check through the client over a real store (the daemon's side is in
tests/test_shell_process.py)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from executor.client import Client, SubmissionError
from executor.core import SetupContext
from executor.localproc import ProcessHandle, exit_status, is_running, spawn, tail, terminate
from executor.logging import get_logger
from executor.plugin.loader import load_directory
from executor.plugin.registry import PluginRegistry
from executor.plugin.resources import InProcessResourceManager
from executor.store import Store
from executor.tasklogs import NoLogError, read_log

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


def wait_for(what: str, probe: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not probe():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def start(tmp_path: Path, code: str, *args: str) -> ProcessHandle:
    handle, popen = spawn(
        [sys.executable, "-c", code, *args],
        cwd=str(tmp_path),
        env={"PATH": "/usr/bin:/bin"},
        log_file=tmp_path / "out.log",
        exit_file=tmp_path / "exit",
    )
    wait_for("the wrapper's child", lambda: popen.poll() is not None or (tmp_path / "out.log").exists())
    return handle


def test_the_exit_status_and_output_are_recorded(tmp_path: Path) -> None:
    handle = start(
        tmp_path, "import sys; print('out', flush=True); print('err', file=sys.stderr); sys.exit(5)"
    )
    wait_for("the exit file", lambda: exit_status(handle) is not None)
    assert exit_status(handle) == 5
    assert tail(handle.log_file, 100) == "out\nerr\n"
    assert tail(handle.log_file, 4) == "err\n"
    Path(handle.log_file).write_bytes(b"a\x00b\xff")
    assert tail(handle.log_file, 100) == "a\ufffdb\ufffd"
    wait_for("the wrapper to end", lambda: not is_running(handle))


def test_a_missing_program_exits_127_with_a_message(tmp_path: Path) -> None:
    handle, _ = spawn(
        ["/no/such/program"], cwd=None, env={}, log_file=tmp_path / "log", exit_file=tmp_path / "exit"
    )
    wait_for("the exit file", lambda: exit_status(handle) is not None)
    assert exit_status(handle) == 127
    assert "cannot run '/no/such/program'" in tail(handle.log_file, 1000)


def test_a_reused_pid_is_not_taken_for_the_process(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    handle = start(tmp_path, "import sys, time; open(sys.argv[1], 'w').close(); time.sleep(60)", str(ready))
    wait_for("the command to start", ready.exists)  # a TERM before it would end the wrapper itself
    assert is_running(handle)
    assert not is_running(handle.model_copy(update={"start_ticks": handle.start_ticks + 1}))
    assert not is_running(handle.model_copy(update={"boot_id": "another boot"}))
    asyncio.run(terminate(handle, grace=5))
    assert not is_running(handle)
    assert exit_status(handle) == -15  # the command got the group's TERM; the wrapper recorded it


def test_terminate_kills_what_ignores_term_after_the_grace(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = (
        "import signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "open(sys.argv[1], 'w').close()\ntime.sleep(60)\n"
    )
    handle = start(tmp_path, code, str(ready))
    wait_for("the command to ignore TERM", ready.exists)
    began = time.monotonic()
    assert asyncio.run(terminate(handle, grace=0.3)) is True
    assert time.monotonic() - began >= 0.3
    assert not is_running(handle)
    assert exit_status(handle) is None  # the wrapper died with it: no exit file


def test_read_log_from_an_offset_and_from_the_end(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"0123456789")
    assert read_log(log, 3, 4).data == b"3456"
    assert read_log(log, 3, 4).next_offset == 7
    assert read_log(log, -3).data == b"789"
    assert read_log(log, 50).data == b"" and read_log(log, 50).next_offset == 10
    with pytest.raises(NoLogError, match="not on this host"):
        read_log(tmp_path / "missing")


@pytest.mark.anyio
async def test_the_client_refuses_undeclared_commands(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside the daemon, the declared commands come from EXECUTOR_PLUGIN_CONFIG via the settings."""
    registry = PluginRegistry()
    load_directory(registry, PLUGINS)
    client = Client(store, task_types=registry.resolver())
    with pytest.raises(SubmissionError, match="none: the shell plugin is not configured"):
        await client.submit("shell", {"command": "anything"})
    config = {"shell": {"commands": {"hi": {"argv": ["echo", "{who}"]}}}}
    monkeypatch.setenv("EXECUTOR_PLUGIN_CONFIG", json.dumps(config))
    with pytest.raises(SubmissionError, match="no command 'rm' is declared"):
        await client.submit("shell", {"command": "rm"})
    with pytest.raises(SubmissionError, match="needs the parameters who"):
        await client.submit("shell", {"command": "hi"})
    with pytest.raises(SubmissionError, match="NUL"):
        await client.submit("shell", {"command": "hi", "params": {"who": "a\x00b"}})
    execution_id = await client.submit("shell", {"command": "hi", "params": {"who": 7}})
    record = await client.get(execution_id)
    assert record is not None and record.inputs == {"command": "hi", "params": {"who": "7"}}


@pytest.mark.anyio
async def test_a_bad_configuration_stops_the_start_naming_the_field() -> None:
    registry = PluginRegistry()
    load_directory(registry, PLUGINS)
    (entry,) = [e for e in registry.entries if e.id == "shell"]
    setup = SetupContext(
        settings=None,
        logger=get_logger(),
        resource_registrar=InProcessResourceManager(),
        plugin_config={"shell": {"commands": {"x": {"argv": []}}}},
    )
    with pytest.raises(ValueError, match=r"invalid configuration for plugin 'shell': commands\.x\.argv"):
        entry.load_plugin(setup)
