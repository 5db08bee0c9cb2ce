"""The history routes of `/api/v1` over a real store (SQLite and PostgreSQL), in process through
httpx's ASGI transport: `GET /executions?label=`, `POST /executions/{id}/retry`, `POST /retries`,
`GET /failures`. They answer as `executor retry` / `failures` / `list --label` do (one service)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from http_support import Served, serve_app

from executor.core import Phase
from executor.store import Store, Submission
from tests.test_history import finish

pytestmark = pytest.mark.anyio


@pytest.fixture
async def served(store: Store, database_url: str) -> Served:
    return await serve_app(store, database_url)


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return dict(error)


async def test_list_executions_by_label(served: Served) -> None:
    http, store = served.http, served.store
    tagged = await store.submit(Submission("echo", labels={"schedule": "nightly"}), now=time.time())
    await store.submit(Submission("echo", labels={"schedule": "hourly"}), now=time.time())
    response = await http.get("/api/v1/executions", params={"label": "schedule=nightly"})
    assert response.status_code == 200, response.text
    assert [item["id"] for item in response.json()["items"]] == [tagged]
    both = await http.get("/api/v1/executions", params=[("label", "schedule=nightly"), ("label", "x=y")])
    assert both.json()["items"] == []
    error_of(await http.get("/api/v1/executions", params={"label": "no-equals"}), 400, "invalid_parameter")
    error_of(await http.get("/api/v1/executions", params={"label": "=v"}), 400, "invalid_parameter")


async def test_retry_one_and_refusals(served: Served) -> None:
    http, store = served.http, served.store
    failed = await store.submit(Submission("echo"), now=time.time())
    await finish(store, [failed], Phase.PERMANENT_FAILURE, time.time(), code="Boom")
    response = await http.post(f"/api/v1/executions/{failed}/retry", json={"by": "ops"})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["result"] == "requeued" and body["execution"]["phase"] == "QUEUED"
    assert body["execution"]["attempt"] == 2
    events = (await http.get(f"/api/v1/executions/{failed}/events")).json()["items"]
    assert events[-1]["reason"] == "Requeued by ops"
    # Queued now: refused with the reason, and nothing changes.
    error = error_of(await http.post(f"/api/v1/executions/{failed}/retry"), 409, "not_retryable")
    assert "still running (QUEUED)" in error["message"]
    error_of(await http.post("/api/v1/executions/nope/retry"), 404, "not_found")
    error_of(await http.post(f"/api/v1/executions/{failed}/retry", json={"who": "x"}), 422, "invalid_request")


async def test_bulk_retry_and_failures(served: Served) -> None:
    http, store = served.http, served.store
    now = time.time()
    ids = [await store.submit(Submission("echo", labels={"team": "a"}), now=now) for _ in range(3)]
    await finish(store, ids[:2], Phase.PERMANENT_FAILURE, now + 1, code="Boom")
    await finish(store, ids[2:], Phase.ABORTED, now + 2, reason="Aborted by user")

    failures = await http.get("/api/v1/failures", params={"label": "team=a"})
    assert failures.status_code == 200, failures.text
    assert failures.json()["counts"] == [
        {"phase": "PERMANENT_FAILURE", "error_code": "Boom", "count": 2},
        {"phase": "ABORTED", "error_code": None, "count": 1},
    ]
    only_boom = await http.get("/api/v1/failures", params={"error_code": "Boom"})
    assert sorted(item["id"] for item in only_boom.json()["items"]) == sorted(ids[:2])
    error_of(await http.get("/api/v1/failures", params={"since": "yesterday"}), 400, "invalid_parameter")
    error_of(await http.get("/api/v1/failures", params={"phase": "DONE"}), 400, "invalid_parameter")

    dry = await http.post("/api/v1/retries", json={"labels": {"team": "a"}, "dry_run": True})
    assert dry.status_code == 200, dry.text
    assert (dry.json()["matched"], dry.json()["requeued"]) == (3, 0)
    error_of(await http.post("/api/v1/retries", json={"phases": ["SUCCESS"]}), 422, "invalid_filter")
    error_of(await http.post("/api/v1/retries", json={"labels": {"team": 1}}), 422, "invalid_request")
    done = await http.post("/api/v1/retries", json={"error_code": "Boom", "by": "ops"})
    assert (done.json()["matched"], done.json()["requeued"]) == (2, 2)
    assert sorted(done.json()["ids"]) == sorted(ids[:2])
    left = await http.get("/api/v1/failures")
    assert left.json()["counts"] == [{"phase": "ABORTED", "error_code": None, "count": 1}]
