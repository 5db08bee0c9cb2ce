"""The three doors agree: `executor submit` (a real process), the Python client and
`POST /api/v1/executions` (the real ASGI app, built by the composition root as the daemon builds
it) refuse the same submissions for the same reason and store the same record, for every setting
and option that shapes a submission; and they print executions and replicas in one shape.

Each case is submitted through all three doors into one database; records are compared through
the one formatter (`executor.views.execution_dict`) without what differs by nature (ids, times
of submission). Idempotency keys get a suffix per door: the same key would (rightly) return the
first door's id to the other two.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from executor.app.parts import connect, task_types
from executor.app.process import DaemonParts, daemon_parts
from executor.client import SubmissionError
from executor.core import parse_duration
from executor.http import create_app
from executor.settings import Settings, load_settings
from executor.store.replicas import ReplicaStatus, beat
from executor.views import execution_dict

pytestmark = [pytest.mark.anyio, pytest.mark.process]

REPO_PLUGINS = Path(__file__).resolve().parent.parent / "plugins"

TYPED_PLUGIN = '''
"""typed: a plugin with an input model, for the doors to validate against."""

from pydantic import BaseModel, Field

from executor import plugin_registry
from executor.core import PhaseInfo, Plugin, PluginEntry, do_transition


class Order(BaseModel):
    item: str
    quantity: int = Field(ge=1)


class Typed(Plugin):
    id = "typed"

    async def handle(self, tctx):
        return do_transition(PhaseInfo.success())


plugin_registry().register_core_plugin(
    PluginEntry(id="typed", registered_task_types=["typed"], input_model=Order, load_plugin=lambda s: Typed())
)
plugin_registry().register_core_plugin(
    PluginEntry(
        id="placed",
        registered_task_types=["placed"],
        queue="gpu",
        pin_to_host=True,
        load_plugin=lambda s: Typed(),
    )
)
'''

FUNCTION_TASK = '''
"""resize: a function task, whose parameters are its input model and which says its own defaults."""

from executor.functions import task


@task("resize", max_attempts=3, timeout="2m")
def resize(path: str, width: int = 256) -> None:
    pass
'''

DURATIONS = ("timeout", "deadline", "backoff_base", "backoff_max")
#: What differs between two submissions of the same thing by nature: ids and moments of submission.
VOLATILE = {"id", "created_at", "updated_at", "next_round_at", "deadline_at"}


@dataclass(frozen=True)
class Case:
    name: str
    task_type: str = "echo"
    inputs: dict[str, Any] = field(default_factory=dict)
    #: The options in the CLI's words: durations as text, not_before as ISO 8601.
    options: dict[str, Any] = field(default_factory=dict)
    #: EXECUTOR_* variables of the door's process.
    env: dict[str, str] = field(default_factory=dict)
    #: Words of the refusal; None: stored.
    refused: str | None = None
    #: What the stored execution shows beyond the options given (defaults from the plugin entry).
    shows: dict[str, Any] = field(default_factory=dict)


EVERY_OPTION = {
    "labels": {"team": "search", "note": "a=b"},
    "priority": -3,
    "max_attempts": 3,
    "not_before": "2999-01-01T00:00:00+00:00",
    "timeout": "5s",
    "deadline": "1h",
    "idempotency_key": "order-17",
    "backoff_base": "2s",
    "backoff_max": "1m30s",
    "queue": "gpu",
    "pin_to_host": True,
}

CASES = [
    Case("plain", inputs={"greeting": "hello"}),
    # Issue 20: queues and pinning, and the plugin entry's defaults for them (`placed`).
    Case("a queue", options={"queue": "gpu"}),
    Case("the plugin's queue and pin", task_type="placed", shows={"queue": "gpu", "pin_to_host": True}),
    Case(
        "a queue beats the plugin's",
        task_type="placed",
        options={"queue": "cpu"},
        shows={"queue": "cpu", "pin_to_host": True},
    ),
    Case("an empty queue", options={"queue": ""}, refused="queue must be 1 to 255 characters, got 0"),
    Case(
        "a queue name too long",
        options={"queue": "q" * 256},
        refused="queue must be 1 to 255 characters, got 256",
    ),
    Case("every option", inputs={"n": 1}, options=EVERY_OPTION),
    Case(
        "defaults from settings",
        env={
            "EXECUTOR_DEFAULT_TIMEOUT": "5s",
            "EXECUTOR_DEFAULT_DEADLINE": "10m",
            "EXECUTOR_DEFAULT_MAX_ATTEMPTS": "4",
        },
    ),
    Case("an option beats its default", options={"timeout": "7s"}, env={"EXECUTOR_DEFAULT_TIMEOUT": "5s"}),
    Case("inputs within the payload limit", inputs={"a": "b"}, env={"EXECUTOR_MAX_PAYLOAD_BYTES": "100"}),
    Case(
        "inputs over the payload limit",
        inputs={"text": "x" * 200},
        env={"EXECUTOR_MAX_PAYLOAD_BYTES": "100"},
        refused="inputs are 211 bytes as JSON, over the limit of 100 bytes (EXECUTOR_MAX_PAYLOAD_BYTES)",
    ),
    Case("inputs fitting the input model", task_type="typed", inputs={"item": "tea", "quantity": "2"}),
    Case(
        "inputs not fitting the input model",
        task_type="typed",
        inputs={"item": "tea", "quantity": 0},
        refused="inputs do not fit Order for task type 'typed'",
    ),
    # Issue 15: a function task's `@task(max_attempts=, timeout=)` are its submissions' defaults.
    Case(
        "a function task's own defaults",
        task_type="resize",
        inputs={"path": "cat.png"},
        env={"EXECUTOR_DEFAULT_MAX_ATTEMPTS": "5", "EXECUTOR_DEFAULT_TIMEOUT": "5s"},
        shows={"max_attempts": 3, "timeout": 120.0, "inputs": {"path": "cat.png", "width": 256}},
    ),
    Case(
        "options beat a function task's defaults",
        task_type="resize",
        inputs={"path": "cat.png"},
        options={"max_attempts": 1, "timeout": "7s"},
    ),
    Case(
        "inputs not fitting a function's parameters",
        task_type="resize",
        inputs={"path": "cat.png", "widht": 3},
        refused="inputs do not fit ResizeInputs for task type 'resize': widht: Extra inputs are not",
    ),
    Case("an unknown task type", task_type="nope", refused="unknown task type 'nope'; known task types: "),
    Case("no attempts", options={"max_attempts": 0}, refused="max_attempts must be at least 1, got 0"),
    Case("a zero timeout", options={"timeout": "0s"}, refused="timeout must be a positive duration, got 0s"),
    Case(
        "a deadline that is no duration", options={"deadline": "soon"}, refused="deadline: invalid duration"
    ),
    Case(
        "a backoff base over its maximum",
        options={"backoff_base": "1m", "backoff_max": "10s"},
        refused="backoff_base must not exceed backoff_max",
    ),
    Case(
        "an idempotency key too long",
        options={"idempotency_key": "k" * 256},
        refused="idempotency_key must be 1 to 255 characters",
    ),
    # Issue 16: what the store cannot hold is refused at every door, naming the field.
    Case(
        "a priority beyond 64 bits",
        options={"priority": 2**63},
        refused="priority must be at most 2147483647 (a 32-bit integer), got 9223372036854775808",
    ),
    Case(
        "a priority beyond 32 bits",
        options={"priority": 2**31},
        refused="priority must be at most 2147483647 (a 32-bit integer), got 2147483648",
    ),
    Case("a priority below 32 bits", options={"priority": -(2**31) - 1}, refused="priority must be at least"),
    Case(
        "max_attempts beyond 32 bits", options={"max_attempts": 2**31}, refused="max_attempts must be at most"
    ),
    Case(
        "a not-before no calendar formats in UTC",
        options={"not_before": "9999-12-31T23:59:59-23:59"},
        refused="not_before must be between 1970-01-01 and 9000-01-01 (UTC)",
    ),
    Case(
        "a deadline beyond a century",
        options={"deadline": "1000000h"},
        refused="deadline must be at most 100 years",
    ),
    Case(
        "inputs nested too deep",
        inputs=json.loads('{"a":' * 100 + "1" + "}" * 100),
        refused="inputs cannot be stored: nested more than 64 levels deep",
    ),
    Case(
        "inputs holding a lone surrogate",
        inputs={"text": "\ud800"},
        refused="inputs cannot be stored: .text: a string contains a lone surrogate",
    ),
    Case(
        "too many labels",
        options={"labels": {f"k{i}": "v" for i in range(65)}},
        refused="labels: 65 labels, over the limit of 64",
    ),
    Case(
        "a label value too long",
        options={"labels": {"big": "x" * 1025}},
        refused="labels: the value of 'big' is 1025 characters, over the limit of 1024",
    ),
]


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "plugins"
    directory.mkdir()
    (directory / "echo.py").write_text((REPO_PLUGINS / "echo.py").read_text())
    (directory / "typed.py").write_text(textwrap.dedent(TYPED_PLUGIN))
    (directory / "resize.py").write_text(textwrap.dedent(FUNCTION_TASK))
    return directory


def door_env(database_url: str, plugins_dir: Path, case: Case) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("EXECUTOR_")}
    env.update(
        EXECUTOR_DATABASE_URL=database_url,
        EXECUTOR_PLUGINS_DIR=str(plugins_dir),
        EXECUTOR_PLUGIN_ENTRY_POINTS="false",
        EXECUTOR_HTTP_ADDR="",
        EXECUTOR_LOG_FORMAT="json",
        **case.env,
    )
    return env


def settings_for(env: dict[str, str]) -> Settings:
    """The settings a process with `env` would load, for the doors that run in this process."""
    return load_settings(
        **{
            key.removeprefix("EXECUTOR_").lower(): value
            for key, value in env.items()
            if key.startswith("EXECUTOR_")
        }
    )


@dataclass(frozen=True)
class Outcome:
    execution_id: str | None = None
    refusal: str | None = None


def with_key_of(options: dict[str, Any], door: str) -> dict[str, Any]:
    key = options.get("idempotency_key")
    return {**options, "idempotency_key": f"{key}-{door}"} if key and len(key) < 200 else options


def cli_argv(case: Case, options: dict[str, Any]) -> list[str]:
    argv = ["submit", case.task_type, "--inputs", json.dumps(case.inputs)]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if name == "labels":
            argv += [arg for key, text in value.items() for arg in ("--label", f"{key}={text}")]
        elif value is True:
            argv.append(flag)
        else:
            argv += [flag, str(value)]
    return argv


def submit_with_the_cli(env: dict[str, str], cwd: Path, case: Case) -> Outcome:
    done = subprocess.run(
        [sys.executable, "-m", "executor", *cli_argv(case, with_key_of(case.options, "cli"))],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode == 0:
        return Outcome(execution_id=done.stdout.strip())
    assert done.returncode == 1, done.stderr  # refused, not a usage error
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("executor: submission refused: "), line
    return Outcome(refusal=line.removeprefix("executor: submission refused: "))


def client_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options as a Python caller passes them: durations as timedelta, times as datetime."""
    converted = dict(options)
    for name in DURATIONS:
        if name in converted:
            with contextlib.suppress(ValueError):  # text the client must refuse itself
                converted[name] = parse_duration(converted[name])
    if "not_before" in converted:
        converted["not_before"] = datetime.fromisoformat(converted["not_before"])
    return converted


async def submit_with_the_client(settings: Settings, case: Case) -> Outcome:
    client = await connect(settings, task_types=task_types(settings))
    try:
        options = client_options(with_key_of(case.options, "client"))
        return Outcome(execution_id=await client.submit(case.task_type, case.inputs, **options))
    except SubmissionError as err:
        return Outcome(refusal=str(err))
    finally:
        await client.close()


def api_body(case: Case, options: dict[str, Any]) -> dict[str, Any]:
    """The options as a JSON caller sends them: durations in seconds where they parse."""
    body: dict[str, Any] = {"task_type": case.task_type, "inputs": case.inputs, **options}
    for name in DURATIONS:
        if name in body:
            with contextlib.suppress(ValueError):
                body[name] = parse_duration(body[name]).total_seconds()
    return body


@pytest.fixture
async def api_parts(database_url: str, plugins_dir: Path) -> AsyncIterator[Any]:
    """Builds the daemon's parts, as `executor run` does, for a case's settings."""
    opened: list[Any] = []

    async def build(case: Case) -> DaemonParts:
        manager = daemon_parts(settings_for(door_env(database_url, plugins_dir, case)))
        opened.append(manager)
        return await manager.__aenter__()

    yield build
    for manager in reversed(opened):
        await manager.__aexit__(None, None, None)


def asgi_client(parts: DaemonParts) -> httpx.AsyncClient:
    """The daemon's ASGI app, called in process."""
    app = create_app(
        client=parts.client, plugins=parts.plugins, settings=parts.settings, metrics=parts.metrics
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://executor")


async def submit_with_the_api(parts: DaemonParts, case: Case) -> Outcome:
    app = create_app(
        client=parts.client, plugins=parts.plugins, settings=parts.settings, metrics=parts.metrics
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://executor") as http:
        # Encoded here, escaped: httpx writes UTF-8, which a lone surrogate cannot be.
        body = json.dumps(api_body(case, with_key_of(case.options, "api")))
        response = await http.post(
            "/api/v1/executions", content=body, headers={"Content-Type": "application/json"}
        )
    if response.status_code == 201:
        return Outcome(execution_id=response.json()["id"])
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] in ("invalid_submission", "unknown_task_type"), error
    return Outcome(refusal=error["message"].removeprefix("submission refused: "))


def comparable(shown: dict[str, Any], door: str) -> dict[str, Any]:
    kept = {key: value for key, value in shown.items() if key not in VOLATILE}
    if kept["idempotency_key"] is not None:
        kept["idempotency_key"] = kept["idempotency_key"].removesuffix(f"-{door}")
    return kept


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_the_doors_refuse_and_store_alike(
    case: Case, database_url: str, plugins_dir: Path, tmp_path: Path, api_parts: Any
) -> None:
    parts = await api_parts(case)  # also brings the schema to head, as the daemon does
    env = door_env(database_url, plugins_dir, case)
    outcomes = {
        "cli": submit_with_the_cli(env, tmp_path, case),
        "client": await submit_with_the_client(settings_for(env), case),
        "api": await submit_with_the_api(parts, case),
    }
    stored = await parts.store.list_executions(limit=10)

    if case.refused is not None:
        refusals = {door: outcome.refusal for door, outcome in outcomes.items()}
        assert refusals["client"] is not None and case.refused in refusals["client"], refusals
        assert refusals == dict.fromkeys(outcomes, refusals["client"])
        assert stored == []
        return

    assert all(outcome.execution_id for outcome in outcomes.values()), outcomes
    assert len(stored) == 3
    shown = {}
    for door, outcome in outcomes.items():
        assert outcome.execution_id is not None
        record = await parts.store.get(outcome.execution_id)
        assert record is not None
        shown[door] = comparable(execution_dict(record), door)
    assert shown["cli"] == shown["client"] == shown["api"]
    expected = {key: value for key, value in case.options.items() if key not in DURATIONS}
    expected.pop("not_before", None)
    assert {key: shown["cli"][key] for key in expected} == expected
    assert {key: shown["cli"][key] for key in case.shows} == case.shows
    for name in DURATIONS:
        if name in case.options:
            assert shown["cli"][name] == parse_duration(case.options[name]).total_seconds()


def test_get_json_and_the_api_show_every_option_in_one_shape(
    database_url: str, plugins_dir: Path, tmp_path: Path
) -> None:
    case = Case("every option", inputs={"n": 1}, options=EVERY_OPTION)
    env = door_env(database_url, plugins_dir, case)
    outcome = submit_with_the_cli(env, tmp_path, case)
    assert outcome.execution_id is not None
    shown = subprocess.run(
        [sys.executable, "-m", "executor", "get", "--json", outcome.execution_id],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    from_cli = json.loads(shown.stdout)

    async def from_api() -> dict[str, Any]:
        async with daemon_parts(settings_for(env)) as parts, asgi_client(parts) as http:
            response = await http.get(f"/api/v1/executions/{outcome.execution_id}")
            assert response.status_code == 200
            return dict(response.json())

    import anyio

    assert anyio.run(from_api) == from_cli
    deadline = datetime.fromisoformat(from_cli["deadline_at"]) - datetime.fromisoformat(
        from_cli["created_at"]
    )
    assert {
        "labels": from_cli["labels"],
        "priority": from_cli["priority"],
        "max_attempts": from_cli["max_attempts"],
        "not_before": from_cli["not_before"],
        "timeout": from_cli["timeout"],
        "deadline": from_cli["deadline"],
        "idempotency_key": from_cli["idempotency_key"],
        "backoff_base": from_cli["backoff_base"],
        "backoff_max": from_cli["backoff_max"],
        "queue": from_cli["queue"],
        "pin_to_host": from_cli["pin_to_host"],
    } == {
        **EVERY_OPTION,
        "not_before": datetime(2999, 1, 1, tzinfo=UTC).isoformat(),
        "timeout": 5.0,
        "deadline": 3600.0,
        "idempotency_key": "order-17-cli",
        "backoff_base": 2.0,
        "backoff_max": 90.0,
    }
    assert abs(deadline.total_seconds() - 3600) < 0.001


def test_replicas_json_and_the_api_show_replicas_in_one_shape(
    database_url: str, plugins_dir: Path, tmp_path: Path
) -> None:
    env = door_env(database_url, plugins_dir, Case("replicas"))

    async def seed_and_ask_the_api() -> list[dict[str, Any]]:
        async with daemon_parts(settings_for(env)) as parts:
            await beat(parts.store, "host-a:1", ReplicaStatus(5, time.time(), 2), first=True)
            async with asgi_client(parts) as http:
                response = await http.get("/api/v1/replicas")
                assert response.status_code == 200
                return list(response.json()["items"])

    import anyio

    from_api = {item["id"]: item for item in anyio.run(seed_and_ask_the_api)}
    shown = subprocess.run(
        [sys.executable, "-m", "executor", "replicas", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    [from_cli] = json.loads(shown.stdout)
    seen_by_api = from_api["host-a:1"]
    assert set(from_cli) == set(seen_by_api)  # one shape; the API also names itself (`this`)
    assert from_cli["silent_for"] >= seen_by_api["silent_for"]  # asked later
    assert {k: v for k, v in from_cli.items() if k != "silent_for"} == {
        k: v for k, v in seen_by_api.items() if k != "silent_for"
    }
    assert (from_cli["id"], from_cli["rounds"], from_cli["in_flight"], from_cli["this"]) == (
        "host-a:1",
        5,
        2,
        False,
    )


def test_the_doors_filter_by_label_and_retry_alike(
    database_url: str, plugins_dir: Path, tmp_path: Path
) -> None:
    """`list --label`, `Client.list_executions(labels=)` and `GET /executions?label=` find the same
    executions and refuse the same filter; `executor retry`, `History.retry` and
    `POST /executions/{id}/retry` refuse a running execution for the same reason."""
    from executor.history import History
    from executor.store import Submission

    env = door_env(database_url, plugins_dir, Case("labels"))

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "executor", *argv],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    async def seed_and_ask() -> dict[str, Any]:
        async with daemon_parts(settings_for(env)) as parts:
            now = time.time()
            nightly = await parts.store.submit(Submission("echo", labels={"schedule": "nightly"}), now=now)
            await parts.store.submit(Submission("echo", labels={"schedule": "hourly"}), now=now)
            found = await parts.client.list_executions(labels={"schedule": "nightly"})
            with pytest.raises(SubmissionError) as refused:
                await parts.client.list_executions(labels={"": "x"})
            retried = await History(parts.client).retry(nightly, by="x")
            async with asgi_client(parts) as http:
                listed = await http.get("/api/v1/executions", params={"label": "schedule=nightly"})
                bad = await http.get("/api/v1/executions", params={"label": "=x"})
                api_retry = await http.post(f"/api/v1/executions/{nightly}/retry")
            return {
                "id": nightly,
                "client": [r.id for r in found],
                "client_refusal": str(refused.value),
                "api": [item["id"] for item in listed.json()["items"]],
                "api_refusal": bad.json()["error"]["message"],
                "retry": retried.message,
                "api_retry": (api_retry.status_code, api_retry.json()["error"]["message"]),
            }

    import anyio

    seen = anyio.run(seed_and_ask)
    listed = cli("list", "--json", "--label", "schedule=nightly")
    assert listed.returncode == 0, listed.stderr
    assert [item["id"] for item in json.loads(listed.stdout)] == seen["client"] == seen["api"] == [seen["id"]]
    bad = cli("list", "--label", "=x")
    assert bad.returncode == 2
    assert (
        bad.stderr.strip() == f"executor: {seen['client_refusal']}"
        and seen["api_refusal"] == seen["client_refusal"]
    )
    retried = cli("retry", seen["id"])
    assert retried.returncode == 1
    assert retried.stdout.strip() == f"{seen['id']}: {seen['retry']}"
    assert seen["api_retry"] == (409, seen["retry"])
    assert "still running (QUEUED)" in seen["retry"]


#: Waits each door must refuse alike: (as the CLI takes it, as the client takes it, the refusal).
BAD_WAITS = [
    ("soon", "soon", "invalid duration 'soon'"),
    ("0s", 0, "must be a positive duration, got 0s"),
    ("-1", "-1", "invalid duration '-1'"),
]


@pytest.mark.parametrize(("text", "value", "refusal"), BAD_WAITS, ids=[w[0] for w in BAD_WAITS])
async def test_the_doors_refuse_a_wait_alike(
    text: str,
    value: object,
    refusal: str,
    database_url: str,
    plugins_dir: Path,
    tmp_path: Path,
    api_parts: Any,
) -> None:
    """`executor wait --timeout`, `Client.wait(timeout=)` and `?wait=` refuse the same durations
    in the same words (each naming its own option), and a wait that runs out says QUEUED in all."""
    case = Case("wait")
    parts = await api_parts(case)
    env = door_env(database_url, plugins_dir, case)
    execution_id = await parts.client.submit("echo")

    import anyio

    cli = await anyio.run_process(
        [sys.executable, "-m", "executor", "wait", execution_id, "--timeout", text],
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert cli.returncode == 2, cli.stderr
    [line] = cli.stderr.decode().strip().splitlines()
    with pytest.raises(SubmissionError) as refused:
        await parts.client.wait(execution_id, timeout=value)  # type: ignore[arg-type]
    async with asgi_client(parts) as http:
        api = await http.get(f"/api/v1/executions/{execution_id}", params={"wait": text})
    assert api.status_code == 400, api.text
    assert refusal in str(refused.value)
    assert line == f"executor: --timeout: {refused.value}"
    assert api.json()["error"]["message"] == str(refused.value).replace("timeout", "wait", 1)


# -- many at once: `Client.submit_many`, `executor submit --from`, `POST /executions:batch` --------

#: A batch as JSON rows, the second one bad: nothing of it may be stored, at any door.
BAD_BATCH = [
    {"inputs": {"n": 1}},
    {"inputs": {"n": 2}, "timeout": "0s"},
    {"inputs": {"n": 3}, "labels": {"team": "search"}},
    {"task_type": "nope"},
]


def rows_for(rows: list[dict[str, Any]], door: str) -> list[dict[str, Any]]:
    return [with_key_of(row, door) for row in rows]


def batch_with_the_cli(env: dict[str, str], cwd: Path, rows: list[dict[str, Any]]) -> Outcome:
    lines = "".join(json.dumps(row) + "\n" for row in rows_for(rows, "cli"))
    done = subprocess.run(
        [sys.executable, "-m", "executor", "submit", "echo", "--from", "-", "--json"],
        env=env,
        cwd=cwd,
        input=lines,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode == 0:
        return Outcome(execution_id=",".join(json.loads(done.stdout)["ids"]))
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("executor: submission refused: "), line
    return Outcome(refusal=line.removeprefix("executor: submission refused: "))


async def batch_with_the_client(settings: Settings, rows: list[dict[str, Any]]) -> Outcome:
    client = await connect(settings, task_types=task_types(settings))
    try:
        python_rows = [client_options(row) for row in rows_for(rows, "client")]
        return Outcome(execution_id=",".join(await client.submit_many(python_rows, task_type="echo")))
    except SubmissionError as err:
        return Outcome(refusal=str(err))
    finally:
        await client.close()


async def batch_with_the_api(parts: DaemonParts, rows: list[dict[str, Any]]) -> tuple[Outcome, Any]:
    body = {"executions": [{"task_type": "echo", **row} for row in rows_for(rows, "api")]}
    async with asgi_client(parts) as http:
        response = await http.post("/api/v1/executions:batch", json=body)
    if response.status_code == 201:
        return Outcome(execution_id=",".join(response.json()["ids"])), None
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_batch", error
    return Outcome(refusal=error["message"].removeprefix("submission refused: ")), error["details"]


async def test_a_batch_with_bad_rows_stores_nothing_at_any_door(
    database_url: str, plugins_dir: Path, tmp_path: Path, api_parts: Any
) -> None:
    case = Case("a bad batch")
    parts = await api_parts(case)
    env = door_env(database_url, plugins_dir, case)
    api, details = await batch_with_the_api(parts, BAD_BATCH)
    outcomes = {
        "cli": batch_with_the_cli(env, tmp_path, BAD_BATCH),
        "client": await batch_with_the_client(settings_for(env), BAD_BATCH),
        "api": api,
    }
    refusals = {door: outcome.refusal for door, outcome in outcomes.items()}
    assert refusals == dict.fromkeys(outcomes, refusals["client"]), refusals
    assert refusals["client"].startswith(
        "2 of 4 rows refused, nothing stored: row 2: timeout must be a positive duration, got 0s; "
        "row 4: unknown task type 'nope'; known task types: echo, "
    )
    assert [(d["row"], d["field"]) for d in details] == [(2, "timeout"), (4, "task_type")]
    assert await parts.store.list_executions(limit=10) == []


async def test_a_batch_honours_idempotency_keys_per_row_at_every_door(
    database_url: str, plugins_dir: Path, tmp_path: Path, api_parts: Any
) -> None:
    case = Case("idempotent rows")
    parts = await api_parts(case)
    env = door_env(database_url, plugins_dir, case)
    rows = [
        {"inputs": {"n": 1}, "idempotency_key": "a"},
        {
            "inputs": {"n": 2},
            "idempotency_key": "b",
            **{k: v for k, v in EVERY_OPTION.items() if k != "idempotency_key"},
        },
        {"inputs": {"n": 3}, "idempotency_key": "a"},  # repeated in the batch: the first row's id
        {"inputs": {"n": 4}},
    ]

    async def three_doors() -> dict[str, list[str]]:
        api, _ = await batch_with_the_api(parts, rows)
        outcomes = {
            "cli": batch_with_the_cli(env, tmp_path, rows),
            "client": await batch_with_the_client(settings_for(env), rows),
            "api": api,
        }
        assert all(o.execution_id for o in outcomes.values()), outcomes
        return {door: (o.execution_id or "").split(",") for door, o in outcomes.items()}

    first = await three_doors()
    for ids in first.values():
        assert len(ids) == 4 and ids[0] == ids[2] and len(set(ids)) == 3
    assert len(await parts.store.list_executions(limit=20)) == 9  # three new rows per door
    again = await three_doors()  # the keyed rows find their first ids; the unkeyed one is new
    for door, ids in again.items():
        assert ids[:3] == first[door][:3] and ids[3] != first[door][3]
    assert len(await parts.store.list_executions(limit=20)) == 12
    shown = {}
    for door, ids in first.items():
        record = await parts.store.get(ids[1])
        assert record is not None
        shown[door] = comparable(execution_dict(record), door)
    assert shown["cli"] == shown["client"] == shown["api"]
    assert shown["api"]["labels"] == EVERY_OPTION["labels"] and shown["api"]["timeout"] == 5.0
