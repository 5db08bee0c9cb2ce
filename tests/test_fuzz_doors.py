"""Property tests of the submission path: arbitrary JSON and strings through the client, the API's
body and the CLI's arguments, on both stores.

Whatever a caller passes, a submission is either stored, and then reads back and prints as JSON,
or refused as a submission (`SubmissionError`, a 4xx, exit 1 or 2 in one line): never a store
error, a 5xx or a traceback. Issue 16 found each of these broken by one value; these tests keep
looking for the next one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from http_support import Served, serve_app
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_daemon_process import daemon_env

from executor.app.parts import client_for
from executor.client import Client, SubmissionError
from executor.store import Store
from executor.views import execution_dict

pytestmark = pytest.mark.anyio

#: Examples per property and store: enough to hit every kind of value below, quick on 2 cores.
EXAMPLES = 150
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: Any text: NUL, lone surrogates, every plane.
TEXT = st.text(max_size=40) | st.sampled_from(["", "\x00", "a\x00b", "\ud800", "x" * 300, "é" * 256])
INTEGERS = st.integers() | st.sampled_from([2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63, -(2**63) - 1])
SCALARS = st.none() | st.booleans() | INTEGERS | st.floats() | TEXT
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`usual` four times in five, so that the fields after the first refusal are reached too."""
    return st.integers(0, 4).flatmap(lambda n: odd if n == 0 else usual)


INPUTS = mostly(st.dictionaries(TEXT, JSON, max_size=5), st.integers(0, 200).map(nested) | JSON)
ZONES = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda minutes: timezone(timedelta(minutes=minutes)))
TIMES = st.none() | st.datetimes(timezones=ZONES) | st.datetimes()
DURATIONS = (
    st.none() | st.floats() | INTEGERS | TEXT | st.sampled_from(["5s", "1m30s", "0s", "1e400s", "99999999h"])
)
LABELS = st.none() | st.dictionaries(TEXT, TEXT, max_size=5) | st.dictionaries(TEXT, JSON, max_size=2)

SUBMISSIONS = st.fixed_dictionaries(
    {
        # Mostly a known type: an unknown one is refused before anything else is looked at.
        "task_type": mostly(st.sampled_from(["echo", "core-sleep"]), TEXT),
        "inputs": INPUTS,
    },
    optional={
        "labels": LABELS,
        "priority": INTEGERS,
        "max_attempts": st.none() | INTEGERS,
        "not_before": TIMES,
        "timeout": DURATIONS,
        "deadline": DURATIONS,
        "idempotency_key": st.none() | TEXT,
        "backoff_base": DURATIONS,
        "backoff_max": DURATIONS,
    },
)


@pytest.fixture
async def served(store: Store, database_url: str) -> Served:
    return await serve_app(store, database_url)


def printable(record_json: dict[str, Any]) -> str:
    """What every door prints: strict JSON (no NaN), escaped where UTF-8 cannot carry a string."""
    return json.dumps(record_json, allow_nan=False)


@given(submission=SUBMISSIONS)
@FUZZ
async def test_the_client_stores_or_refuses_any_submission(
    served: Served, submission: dict[str, Any]
) -> None:
    client: Client = client_for(served.settings, served.store, served.plugins.resolver)
    fields = dict(submission)
    try:
        execution_id = await client.submit(fields.pop("task_type"), fields.pop("inputs"), **fields)
    except SubmissionError as err:
        assert str(err)  # a message, and only a refusal: no store error, no other exception
        event(f"refused: {err.field}")
        return
    event("stored")
    record = await client.get(execution_id)
    assert record is not None
    shown = execution_dict(record)
    printable(shown)
    assert shown["priority"] == submission.get("priority", 0)
    listed = await client.list_executions(limit=500)
    assert execution_id in {r.id for r in listed}


BODIES = mostly(
    SUBMISSIONS.map(lambda s: {k: v.isoformat() if isinstance(v, datetime) else v for k, v in s.items()}),
    JSON,
)


@given(body=BODIES)
@FUZZ
async def test_the_api_answers_any_json_body_with_201_or_4xx(served: Served, body: Any) -> None:
    try:
        content = json.dumps(body)
    except ValueError:  # NaN is no JSON; sent as Python writes it, which the API must refuse
        content = json.dumps(body, allow_nan=True)
    before = sum((await served.store.count_by_phase()).values())
    response = await served.http.post(
        "/api/v1/executions", content=content, headers={"Content-Type": "application/json"}
    )
    after = sum((await served.store.count_by_phase()).values())
    assert response.status_code in (201, 400, 422), (response.status_code, response.text)
    assert after - before == (1 if response.status_code == 201 else 0)
    if response.status_code == 201:
        got = await served.http.get(f"/api/v1/executions/{response.json()['id']}")
        assert got.status_code == 200, got.text
    listing = await served.http.get("/api/v1/executions", params={"limit": 500})
    assert listing.status_code == 200, listing.text


#: What a shell can pass: no NUL, no lone surrogate.
ARG = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30)


@pytest.mark.process
@given(
    task_type=ARG,
    inputs=ARG | JSON.map(json.dumps),
    priority=ARG | INTEGERS.map(str),
    not_before=ARG,
    timeout=ARG,
    label=ARG,
)
@settings(max_examples=6, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_the_cli_submits_or_refuses_any_arguments_in_one_line(
    sqlite_url: str,
    tmp_path: Path,
    task_type: str,
    inputs: str,
    priority: str,
    not_before: str,
    timeout: str,
    label: str,
) -> None:
    argv = [
        "submit", task_type, "--inputs", inputs, "--priority", priority, "--not-before", not_before,
        "--timeout", timeout, "--label", label,
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "executor", *[arg for arg in argv]],
        env=daemon_env(sqlite_url),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode in (0, 1, 2), done.stderr
    if done.returncode:
        problems = [line for line in done.stderr.splitlines() if not line.startswith("{")]
        assert problems and problems[-1].startswith(("executor: ", "executor submit: ")), done.stderr
