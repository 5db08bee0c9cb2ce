"""The command line on a real SQLite file: what it prints, what it refuses, and its exit codes.

Most commands run through `executor.cli.main(argv)` in this process, exactly the code
`python -m executor` runs: an interpreter start-up costs more than half a second of CPU, and a
few dozen of them made this module the slowest of the suite. `test_the_command_line_as_a_process`
runs the real `python -m executor` for what only a process shows (exit status, a clean stdout);
the daemon process tests drive the daemon with it too. Where a test needs executions to have
moved, it runs one round of the real loop in process rather than starting a daemon.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from executor.cli import main
from executor.core import SetupContext
from executor.logging import get_logger
from executor.plugin.loader import load_directory
from executor.plugin.registry import PluginRegistry, load_plugins
from executor.plugin.resources import InProcessResourceManager
from executor.runtime import Reconciler
from executor.settings import load_settings
from executor.store import Store, Submission
from executor.store.migrate import head_revision, upgrade

BUILTIN_PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
UNKNOWN_ID = "00000000-0000-0000-0000-000000000000"

Result = subprocess.CompletedProcess[str]
Cli = Callable[..., Result]


@pytest.fixture
def env(sqlite_url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("EXECUTOR_")}
    env.update(
        EXECUTOR_DATABASE_URL=sqlite_url,
        EXECUTOR_PLUGINS_DIR=str(BUILTIN_PLUGINS),
        EXECUTOR_PLUGIN_ENTRY_POINTS="false",
        EXECUTOR_LOG_FORMAT="json",
    )
    return env


@pytest.fixture
def cli(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Cli]:
    """`cli("get", "--json", id)`: runs `executor.cli.main` with the test's environment, from
    `tmp_path`, and returns its exit code and output as a subprocess would."""
    for key in os.environ:
        if key.startswith("EXECUTOR_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("EXECUTOR_"):
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    logging_config = structlog.get_config()  # `main` configures logging for the whole process

    def invoke(*argv: str) -> Result:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main(list(argv))
        out, err = capsys.readouterr()
        code = exited.value.code
        return subprocess.CompletedProcess(list(argv), code if isinstance(code, int) else 1, out, err)

    yield invoke
    structlog.configure(**logging_config)


@pytest.fixture
def migrated(sqlite_url: str) -> None:
    """A database already at head."""

    async def migrate() -> None:
        store = Store.from_url(sqlite_url)
        try:
            await upgrade(store.engine)
        finally:
            await store.close()

    asyncio.run(migrate())


def run_processes(env: dict[str, str], cwd: Path, *commands: list[str]) -> list[Result]:
    """Run `python -m executor` commands side by side; results in the order given."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "executor", *command],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    results = []
    for command, process in zip(commands, processes, strict=True):
        stdout, stderr = process.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(command, process.returncode, stdout, stderr))
    return results


def ok(result: Result) -> str:
    assert result.returncode == 0, f"{result.args} exited {result.returncode}: {result.stderr}"
    return result.stdout


def refused(result: Result, code: int, *phrases: str) -> None:
    assert result.returncode == code, f"{result.args} exited {result.returncode}: {result.stderr}"
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("executor: ")
    for phrase in phrases:
        assert phrase in line


def one_round(sqlite_url: str) -> None:
    """What a daemon would do next: one round of the real loop over the built-in plugins."""

    async def go() -> None:
        registry = PluginRegistry()
        load_directory(registry, BUILTIN_PLUGINS)
        settings = load_settings(database_url=sqlite_url)
        resources = InProcessResourceManager()
        setup = SetupContext(settings=settings, logger=get_logger(), resource_registrar=resources)
        plugins = await load_plugins(registry, setup)
        store = Store.from_url(sqlite_url)
        try:
            await Reconciler(store, plugins, settings, resource_manager=resources).run_round()
        finally:
            await store.close()

    asyncio.run(go())


def submit_directly(sqlite_url: str, *items: tuple[str, dict[str, Any]]) -> list[str]:
    async def go() -> list[str]:
        store = Store.from_url(sqlite_url)
        try:
            submissions = [Submission(task_type, inputs) for task_type, inputs in items]
            return await store.submit_many(submissions, now=time.time())
        finally:
            await store.close()

    return asyncio.run(go())


# -- tests --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("migrated")
def test_the_command_line_as_a_process(env: dict[str, str], tmp_path: Path) -> None:
    submitted, refused_type, missing = run_processes(
        env,
        tmp_path,
        ["submit", "echo", "--inputs", '{"greeting": "hello"}'],
        ["submit", "no-such-type"],
        ["get", "--json", UNKNOWN_ID],
    )
    execution_id = ok(submitted).strip()
    assert submitted.stdout == execution_id + "\n"  # the bare id, for `id=$(executor submit ...)`
    assert UUID.match(execution_id)
    assert submitted.stderr == ""
    refused(refused_type, 1, "unknown task type 'no-such-type'")
    refused(missing, 1, f"no execution with id {UNKNOWN_ID}")

    [shown] = run_processes(env, tmp_path, ["get", "--json", execution_id])
    data = json.loads(ok(shown))
    assert (data["id"], data["phase"], data["inputs"]) == (execution_id, "QUEUED", {"greeting": "hello"})


def test_migrate_brings_a_fresh_database_to_head(cli: Cli, tmp_path: Path) -> None:
    out = ok(cli("migrate"))
    assert out.strip().endswith(f"schema at revision {head_revision()}")
    assert (tmp_path / "executor.db").exists()
    assert ok(cli("migrate")) == out  # and again: nothing to do


@pytest.mark.usefixtures("migrated")
def test_refused_submissions_store_nothing(cli: Cli) -> None:
    refused(
        cli("submit", "no-such-type", "--inputs", "{}"),
        1,
        "submission refused: unknown task type 'no-such-type'; known task types: ",
        "core-sleep",
        "echo",
    )
    refused(cli("submit", "echo", "--inputs", "{not json"), 2, "--inputs is not valid JSON")
    refused(cli("submit", "echo", "--inputs", "[1, 2]"), 2, "--inputs must be a JSON object, not list")
    refused(
        cli("submit", "echo", "--label", "no-equals-sign"), 2, "--label 'no-equals-sign' is not KEY=VALUE"
    )

    assert json.loads(ok(cli("list", "--json"))) == []
    assert len(ok(cli("list")).strip().splitlines()) == 1  # the header only


@pytest.mark.usefixtures("migrated")
def test_submit_get_list_and_events(cli: Cli, sqlite_url: str) -> None:
    bare = cli("submit", "echo", "--inputs", '{"greeting": "hello"}')
    echo_id = ok(bare).strip()
    assert bare.stdout == echo_id + "\n"
    assert UUID.match(echo_id)
    second = json.loads(ok(cli("submit", "echo", "--json", "--inputs", '{"n": 2}')))
    assert list(second) == ["id"]
    assert UUID.match(second["id"])
    sleep_id = ok(cli("submit", "core-sleep", "--inputs", '{"duration": "1h"}')).strip()

    queued = json.loads(ok(cli("get", "--json", echo_id)))
    assert (queued["phase"], queued["phase_version"], queued["reason"]) == ("QUEUED", 0, "Submitted")

    one_round(sqlite_url)  # echo succeeds at once; core-sleep starts its hour

    data = json.loads(ok(cli("get", "--json", echo_id)))
    required = {"id", "task_type", "phase", "phase_version", "reason", "attempt", "inputs", "outputs"}
    assert required <= set(data)
    assert (data["id"], data["task_type"]) == (echo_id, "echo")
    assert (data["phase"], data["phase_version"], data["reason"], data["attempt"]) == ("SUCCESS", 0, None, 1)
    assert data["inputs"] == data["outputs"] == {"greeting": "hello"}
    assert data["finalized"] is True
    human = dict(line.split(None, 1) for line in ok(cli("get", echo_id)).splitlines() if " " in line)
    assert (human["id"], human["phase"], human["outputs"]) == (echo_id, "SUCCESS", '{"greeting": "hello"}')
    refused(cli("get", "--json", UNKNOWN_ID), 1, f"no execution with id {UNKNOWN_ID}")
    refused(cli("get", UNKNOWN_ID), 1, f"no execution with id {UNKNOWN_ID}")

    successes = json.loads(ok(cli("list", "--json", "--phase", "SUCCESS")))
    assert sorted(item["id"] for item in successes) == sorted([echo_id, second["id"]])
    header, *rows = ok(cli("list", "--phase", "running")).strip().splitlines()
    assert header.split()[:2] == ["ID", "TASK"]
    assert [row.split()[:3] for row in rows] == [[sleep_id, "core-sleep", "RUNNING"]]
    several = json.loads(ok(cli("list", "--json", "--phase", "QUEUED", "--phase", "RUNNING")))
    assert [item["id"] for item in several] == [sleep_id]
    everything = json.loads(ok(cli("list", "--json")))
    assert {item["id"] for item in everything} == {echo_id, second["id"], sleep_id}
    unknown_phase = cli("list", "--phase", "DONE")
    assert unknown_phase.returncode == 2  # usage
    assert "unknown phase 'DONE'" in unknown_phase.stderr

    events = [(e["seq"], e["phase"], e["reason"]) for e in json.loads(ok(cli("events", "--json", echo_id)))]
    assert events == [(1, "QUEUED", "Submitted"), (2, "SUCCESS", None)]
    header, *event_rows = ok(cli("events", echo_id)).strip().splitlines()
    assert header.split()[:3] == ["#", "ATTEMPT", "PHASE"]
    queued_row, success_row = (row.split() for row in event_rows)
    assert queued_row[:4] == ["1", "1", "QUEUED", "v0"]
    assert queued_row[5:] == [queued_row[5], "Submitted"]  # AT, LASTED, REASON: the columns stay apart
    assert success_row[:4] == ["2", "1", "SUCCESS", "v0"]
    assert success_row[5:] == ["-"]
    refused(cli("events", UNKNOWN_ID), 1, f"no execution with id {UNKNOWN_ID}")


@pytest.mark.usefixtures("migrated")
def test_abort_is_requested_then_carried_out_and_a_finished_execution_is_a_no_op(
    cli: Cli, sqlite_url: str
) -> None:
    sleep_id, echo_id = submit_directly(sqlite_url, ("core-sleep", {"duration": "1h"}), ("echo", {}))
    one_round(sqlite_url)  # core-sleep RUNNING, echo SUCCESS

    requested = cli("abort", sleep_id, "--reason", "changed my mind")
    assert ok(requested).strip() == f"{sleep_id}: abort requested; the daemon aborts it in its next round"
    pending = json.loads(ok(cli("get", "--json", sleep_id)))
    assert (pending["phase"], pending["abort_requested"]) == ("RUNNING", True)

    assert ok(cli("abort", echo_id)).strip() == f"{echo_id}: already finished; nothing to abort"
    assert json.loads(ok(cli("abort", "--json", echo_id))) == {
        "id": echo_id,
        "result": "already_finished",
        "message": "already finished; nothing to abort",
    }
    refused(cli("abort", UNKNOWN_ID), 1, f"no execution with id {UNKNOWN_ID}")

    one_round(sqlite_url)

    data = json.loads(ok(cli("get", "--json", sleep_id)))
    assert (data["phase"], data["reason"], data["finalized"]) == ("ABORTED", "changed my mind", True)
    assert ok(cli("abort", sleep_id)).strip() == f"{sleep_id}: already finished; nothing to abort"


def test_plugins_lists_the_built_in_task_types(cli: Cli, tmp_path: Path) -> None:
    rows = {row["id"]: row for row in json.loads(ok(cli("plugins", "--json")))}
    assert rows["core-sleep"]["task_types"] == ["core-sleep"]
    assert rows["echo"]["task_types"] == ["echo"]
    assert rows["core-sleep"]["source"] == str(BUILTIN_PLUGINS / "sleep.py")
    header, *lines = ok(cli("plugins")).strip().splitlines()
    assert header.split() == ["PLUGIN", "TASK", "TYPES", "DEFAULT", "QUEUE", "PAUSED", "SOURCE"]
    assert ["core-sleep", "core-sleep"] in [line.split()[:2] for line in lines]
    assert ["echo", "echo"] in [line.split()[:2] for line in lines]
    assert not (tmp_path / "executor.db").exists()  # listing plugins needs no database


def test_output_piped_into_a_reader_that_leaves_early_is_not_a_traceback(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "EXECUTOR_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/executor.db",
        "EXECUTOR_PLUGINS_DIR": str(BUILTIN_PLUGINS),
    }
    # `true` exits without reading: the CLI's write meets a closed pipe.
    script = f"{sys.executable} -m executor plugins | true"
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", script],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in result.stderr
    assert "BrokenPipeError" not in result.stderr
    assert result.returncode == 0


def test_the_command_line_does_not_load_the_loop_or_the_http_stack() -> None:
    """Only `executor run` needs them (the composition root imports them when it builds a daemon):
    every other command starts without paying for them."""
    heavy = ("starlette", "hypercorn", "prometheus_client", "executor.http", "executor.runtime")
    probe = f"import sys, executor.cli; print([m for m in sys.modules if m.startswith({heavy!r})])"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.usefixtures("migrated")
def test_tables_keep_their_rows_with_multi_line_and_long_values(cli: Cli, sqlite_url: str) -> None:
    """A reason of several lines, or longer than the screen, wraps inside its column: every row
    still starts at the left edge and every continuation line sits under the REASON column."""
    multi_id = ok(cli("submit", "core-sleep", "--inputs", '{"duration": "1h"}')).strip()
    long_id = ok(cli("submit", "core-sleep", "--inputs", '{"duration": "1h"}')).strip()
    reason = "stopped by the operator\nsee ticket [bold]OPS-1[/bold]\n\tthird line"
    ok(cli("abort", multi_id, "--reason", reason))
    long_reason = "x" * 150 + " " + "y" * 150
    ok(cli("abort", long_id, "--reason", long_reason))
    one_round(sqlite_url)

    events = json.loads(ok(cli("events", "--json", multi_id)))
    assert events[-1]["phase"] == "ABORTED"
    assert events[-1]["reason"] == reason  # --json is unchanged: the reason as stored

    table = ok(cli("events", multi_id))
    assert "\x1b" not in table  # no colour or bold when the output is not a terminal
    header, *lines = table.rstrip("\n").splitlines()
    reason_column = header.index("REASON")
    rows = [line for line in lines if not line.startswith(" ")]
    assert [row.split()[:3] for row in rows] == [["1", "1", "QUEUED"], ["2", "1", "ABORTED"]]
    aborted = lines.index(rows[1])
    assert lines[aborted][reason_column:] == "stopped by the operator"
    continued = lines[aborted + 1 :]
    assert [line[reason_column:].strip() for line in continued] == [
        "see ticket [bold]OPS-1[/bold]",
        "third line",
    ]
    assert all(not line[:reason_column].strip() for line in continued)  # nothing spills into other columns

    header, *lines = ok(cli("events", long_id)).rstrip("\n").splitlines()
    reason_column = header.index("REASON")
    assert len(lines) > 2  # the long reason wrapped ...
    assert all(len(line) <= 200 for line in lines)  # ... within the width of piped output
    assert all(line[0] != " " or not line[:reason_column].strip() for line in lines)
    assert "".join(line[reason_column:].strip() for line in lines[1:]) == long_reason.replace(" ", "")

    header, *lines = ok(cli("list")).rstrip("\n").splitlines()
    assert [line.split()[0] for line in lines if not line.startswith(" ")] == [long_id, multi_id]
