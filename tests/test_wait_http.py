"""`GET /api/v1/executions/{id}?wait=...`, the long-poll, on the real app over both stores.

The request is held until a real loop's round finishes the execution (and not answered before),
answers with the execution as it is when its time runs out or the server stops, and refuses a
`wait` the client refuses (or one above the API's limit) with a 400 naming it.
"""

from __future__ import annotations

import time

import anyio
import httpx
import pytest
from http_support import Served, poll, serve_app

from executor.http.waits import MAX_WAIT
from executor.runtime import Reconciler
from executor.store import Store

pytestmark = pytest.mark.anyio


@pytest.fixture
async def served(store: Store, database_url: str) -> Served:
    return await serve_app(store, database_url)


async def submit(served: Served, task_type: str = "echo", **inputs: object) -> str:
    response = await served.http.post("/api/v1/executions", json={"task_type": task_type, "inputs": inputs})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def waiters(store: Store, count: int) -> None:
    async def waiting() -> int:
        return store.finish_watch.waiting

    await poll(waiting, lambda found: found >= count)


async def test_a_long_poll_answers_when_a_round_finishes_the_execution(served: Served) -> None:
    execution_id = await submit(served, answer=42)
    responses: list[httpx.Response] = []

    async def long_poll() -> None:
        responses.append(await served.http.get(f"/api/v1/executions/{execution_id}", params={"wait": "20s"}))

    async with anyio.create_task_group() as group:
        group.start_soon(long_poll)
        await waiters(served.store, 1)
        assert responses == []  # held: nothing has run
        await Reconciler(served.store, served.plugins, served.settings).run_round()
    [response] = responses
    assert response.status_code == 200, response.text
    assert response.json()["phase"] == "SUCCESS"
    assert response.json()["outputs"] == {"answer": 42}


async def test_a_long_poll_whose_time_runs_out_answers_with_the_execution_as_it_is(served: Served) -> None:
    execution_id = await submit(served)
    started = time.monotonic()
    response = await served.http.get(f"/api/v1/executions/{execution_id}", params={"wait": "0.3"})
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200, response.text
    assert response.json()["phase"] == "QUEUED"
    assert response.json()["id"] == execution_id


async def test_a_final_execution_or_an_unknown_id_answers_at_once(served: Served) -> None:
    execution_id = await submit(served)
    await Reconciler(served.store, served.plugins, served.settings).run_round()
    started = time.monotonic()
    done = await served.http.get(f"/api/v1/executions/{execution_id}", params={"wait": "30s"})
    assert done.status_code == 200 and done.json()["phase"] == "SUCCESS"
    missing = await served.http.get("/api/v1/executions/nope", params={"wait": "30s"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("wait", "message"),
    [
        ("soon", "wait: invalid duration 'soon'"),
        ("0", "wait must be a positive duration, got 0s"),
        ("-5s", "wait: invalid duration '-5s'"),
        ("", "wait: invalid duration ''"),
        (f"{MAX_WAIT + 1:g}s", f"wait must be at most {MAX_WAIT:g}s, got {MAX_WAIT + 1:g}s"),
    ],
)
async def test_a_bad_wait_is_refused_with_a_400(served: Served, wait: str, message: str) -> None:
    execution_id = await submit(served)
    response = await served.http.get(f"/api/v1/executions/{execution_id}", params={"wait": wait})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_parameter"
    assert message in error["message"], error
    assert error["details"] == [{"field": "wait"}]


async def test_a_stopping_server_answers_its_long_polls_at_once(served: Served) -> None:
    execution_id = await submit(served)
    responses: list[httpx.Response] = []

    async def long_poll() -> None:
        responses.append(await served.http.get(f"/api/v1/executions/{execution_id}", params={"wait": "60s"}))

    started = time.monotonic()
    async with anyio.create_task_group() as group:
        group.start_soon(long_poll)
        group.start_soon(long_poll)
        await waiters(served.store, 2)
        served.app.state.long_polls.close()
    assert [r.json()["phase"] for r in responses] == ["QUEUED", "QUEUED"]
    assert time.monotonic() - started < 30
    late = await served.http.get(f"/api/v1/executions/{execution_id}", params={"wait": "60s"})
    assert late.json()["phase"] == "QUEUED"  # after close, at once too


async def test_the_document_describes_wait(served: Served) -> None:
    document = (await served.http.get("/api/v1/openapi.json")).json()
    operation = document["paths"]["/executions/{id}"]["get"]
    assert [p["name"] for p in operation["parameters"]] == ["id", "wait"]
    assert "400" in operation["responses"]
