"""The JSON API under /api/v1 and the probes, in process over a real store (SQLite and PostgreSQL).

Requests go through httpx's ASGI transport: the real app, routing, auth and store, without a
socket. Every refused request must say why in a JSON error body and leave the store untouched.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_support import Served, poll, serve_app
from sqlalchemy.engine import make_url
from starlette.routing import Mount, Route

from executor.core import Phase
from executor.http import create_app
from executor.http.api import MAX_BODY_BYTES, Event, Execution, ReplicaList, openapi_document
from executor.http.metrics import Metrics
from executor.plugin.registry import LoadedPlugins, TaskTypeResolver
from executor.runtime import Reconciler, RoundStats
from executor.store import Store
from executor.store.replicas import ReplicaStatus, beat
from executor.views import event_dict, execution_dict

pytestmark = pytest.mark.anyio


@pytest.fixture
async def served(store: Store, database_url: str) -> Served:
    return await serve_app(store, database_url)


async def stored(store: Store) -> int:
    return sum((await store.count_by_phase()).values())


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    return dict(error)


async def drive(served: Served, *execution_ids: str, until: Phase = Phase.SUCCESS) -> None:
    """Run rounds of a real loop over the test's store until every execution reaches `until`."""
    reconciler = Reconciler(served.store, served.plugins, served.settings, observer=served.metrics)

    async def phases() -> list[Phase]:
        await reconciler.run_round()
        records = [await served.store.get(i) for i in execution_ids]
        return [r.phase for r in records if r is not None]

    await poll(phases, lambda found: found == [until] * len(execution_ids), every=0.0)


# -- happy paths ------------------------------------------------------------------------------


async def test_submit_get_list_events_abort(served: Served) -> None:
    http = served.http
    response = await http.post(
        "/api/v1/executions",
        json={
            "task_type": "echo",
            "inputs": {"a": 1},
            "labels": {"team": "x"},
            "priority": 3,
            "max_attempts": 2,
        },
    )
    assert response.status_code == 201, response.text
    execution_id = response.json()["id"]
    assert response.headers["location"] == f"/api/v1/executions/{execution_id}"
    created = response.json()["execution"]
    assert (created["phase"], created["inputs"], created["labels"]) == ("QUEUED", {"a": 1}, {"team": "x"})
    assert (created["priority"], created["max_attempts"]) == (3, 2)

    got = (await http.get(f"/api/v1/executions/{execution_id}")).json()
    record = await served.store.get(execution_id)
    assert record is not None
    assert got == execution_dict(record)  # the shape of `executor get --json`

    await drive(served, execution_id)
    got = (await http.get(f"/api/v1/executions/{execution_id}")).json()
    assert (got["phase"], got["outputs"]) == ("SUCCESS", {"a": 1})

    events = (await http.get(f"/api/v1/executions/{execution_id}/events")).json()["items"]
    assert events == [event_dict(e) for e in await served.store.events(execution_id)]
    assert (events[0]["phase"], events[-1]["phase"]) == ("QUEUED", "SUCCESS")

    listed = (await http.get("/api/v1/executions")).json()
    assert [item["id"] for item in listed["items"]] == [execution_id]
    assert listed["next_cursor"] is None

    # Aborting what already finished is a no-op that says so, not an error.
    finished = await http.post(f"/api/v1/executions/{execution_id}/abort")
    assert finished.status_code == 200
    assert finished.json()["result"] == "already_finished"

    sleeping = (
        await http.post("/api/v1/executions", json={"task_type": "core-sleep", "inputs": {"duration": "1h"}})
    ).json()["id"]
    aborted = await http.post(f"/api/v1/executions/{sleeping}/abort", json={"reason": "changed my mind"})
    assert aborted.status_code == 202
    assert aborted.json() == {
        "id": sleeping,
        "result": "requested",
        "message": "abort requested; the daemon aborts it in its next round",
    }
    await drive(served, sleeping, until=Phase.ABORTED)
    assert (await http.get(f"/api/v1/executions/{sleeping}")).json()["reason"] == "changed my mind"


async def test_not_before_and_defaults(served: Served) -> None:
    response = await served.http.post(
        "/api/v1/executions", json={"task_type": "echo", "not_before": "2999-01-01T00:00:00+00:00"}
    )
    assert response.status_code == 201, response.text
    body = response.json()["execution"]
    assert body["next_round_at"].startswith("2999-01-01")
    assert (body["inputs"], body["labels"], body["priority"], body["max_attempts"]) == ({}, {}, 0, 1)


async def test_plugins_replicas_and_stats(served: Served) -> None:
    http = served.http
    plugins = (await http.get("/api/v1/plugins")).json()
    assert {"core-sleep", "echo"} <= set(plugins["task_types"])  # the built-ins, and any others
    by_id = {p["id"]: p["task_types"] for p in plugins["items"]}
    assert (by_id["core-sleep"], by_id["echo"]) == (["core-sleep"], ["echo"])
    assert sorted(t for types in by_id.values() for t in types) == plugins["task_types"]

    ids = [(await http.post("/api/v1/executions", json={"task_type": "echo"})).json()["id"] for _ in range(3)]
    await drive(served, *ids)
    (
        await http.post("/api/v1/executions", json={"task_type": "core-sleep", "inputs": {"duration": "1h"}})
    ).json()

    counts = (await http.get("/api/v1/stats/phases")).json()
    assert counts["counts"]["SUCCESS"] == 3 and counts["counts"]["QUEUED"] == 1 and counts["total"] == 4
    assert set(counts["counts"]) == {phase.name for phase in Phase}

    finished = (await http.get("/api/v1/stats/finished?minutes=5")).json()
    assert finished["outcomes"] == ["SUCCESS", "PERMANENT_FAILURE", "ABORTED"]
    assert len(finished["minutes"]) == 5
    assert sum(m["SUCCESS"] for m in finished["minutes"]) == 3
    assert finished["minutes"][-1]["minute"] <= time.strftime("%Y-%m-%dT%H:%M:59", time.gmtime())

    # Before its first heartbeat, this replica reports what it knows of itself.
    replicas = (await http.get("/api/v1/replicas")).json()["items"]
    assert [(r["id"], r["this"], r["live"]) for r in replicas] == [(served.settings.replica_id, True, True)]
    assert replicas[0]["rounds"] == served.metrics.rounds > 0

    # Replicas with a heartbeat row are listed from it; one holding a lease without one, too.
    await http.post("/api/v1/executions", json={"task_type": "core-sleep", "inputs": {"duration": "1h"}})
    await beat(served.store, served.settings.replica_id, ReplicaStatus(7, time.time(), 0), first=True)
    await beat(served.store, "replica-b", ReplicaStatus(3, None, 1), first=True)
    for owner in ("replica-b", "replica-c"):
        claimed = await served.store.claim(owner=owner, token=owner, limit=1, lease_ttl=60, now=time.time())
        assert len(claimed) == 1
    replicas = (await http.get("/api/v1/replicas")).json()["items"]
    # Listed by start time; the two beats above may share a millisecond, so compare by id.
    assert sorted((r["id"], r["this"], r["live"], r["executions_leased"]) for r in replicas) == sorted(
        [
            (served.settings.replica_id, True, True, 0),
            ("replica-b", False, True, 1),
            ("replica-c", False, None, 1),
        ]
    )
    by_id = {r["id"]: r for r in replicas}
    assert by_id[served.settings.replica_id]["rounds"] == 7 and by_id["replica-b"]["in_flight"] == 1
    ReplicaList.model_validate({"items": replicas})


async def test_list_filters_and_cursor_pagination(served: Served) -> None:
    http = served.http
    echo = [
        (await http.post("/api/v1/executions", json={"task_type": "echo"})).json()["id"] for _ in range(5)
    ]
    sleep = [
        (
            await http.post(
                "/api/v1/executions", json={"task_type": "core-sleep", "inputs": {"duration": "1h"}}
            )
        ).json()["id"]
        for _ in range(2)
    ]
    queued_sleeps = (await http.get("/api/v1/executions?phase=QUEUED&task_type=core-sleep")).json()["items"]
    assert {item["id"] for item in queued_sleeps} == set(sleep)
    await drive(served, *echo)  # one round: every echo succeeds, every sleep is RUNNING

    seen, cursor, pages = [], None, 0
    while True:
        params: dict[str, Any] = {"limit": 3, "task_type": "echo"}
        if cursor:
            params["cursor"] = cursor
        page = (await http.get("/api/v1/executions", params=params)).json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 2
    assert seen == list(reversed(echo))  # newest first, each exactly once

    success = (await http.get("/api/v1/executions?phase=success")).json()["items"]
    assert {item["id"] for item in success} == set(echo)
    running = (await http.get("/api/v1/executions?phase=running")).json()["items"]
    assert {item["id"] for item in running} == set(sleep)
    several = (
        await http.get("/api/v1/executions", params=[("phase", "QUEUED,RUNNING"), ("phase", "SUCCESS")])
    ).json()
    assert len(several["items"]) == 7
    assert (await http.get("/api/v1/executions?phase=ABORTED")).json() == {"items": [], "next_cursor": None}


# -- errors: a clear 4xx with a JSON body, and nothing stored ---------------------------------


BAD_JSON = [b"{bad", b"", b"[1, 2]", b'"echo"', b"\xff\xfe", b"null"]

#: (body, code, the field named in `details` or, for a refusal of the client, words of its message).
INVALID_SUBMISSIONS: list[tuple[dict[str, Any], str, str | None]] = [
    ({"task_type": "no-such-type"}, "unknown_task_type", None),
    ({"task_type": "echo", "inputs": [1, 2]}, "invalid_request", "inputs"),
    ({"task_type": "echo", "inputs": "duration=5s"}, "invalid_request", "inputs"),
    ({"task_type": "echo", "labels": {"a": 1}}, "invalid_request", "labels.a"),
    ({"task_type": "echo", "priority": "1"}, "invalid_request", "priority"),
    (
        {"task_type": "echo", "max_attempts": 0},
        "invalid_submission",
        "max_attempts must be at least 1, got 0",
    ),
    (
        {"task_type": "echo", "not_before": "2030-01-01T00:00:00"},
        "invalid_submission",
        "not_before must be timezone-aware",
    ),
    ({"task_type": "echo", "not_before": "soon"}, "invalid_request", "not_before"),
    (
        {"task_type": "echo", "timeout": 0},
        "invalid_submission",
        "timeout must be a positive duration, got 0s",
    ),
    ({"task_type": "echo", "timeout": "5 parsecs"}, "invalid_submission", "timeout: invalid duration"),
    ({"task_type": "echo", "timeout": [5]}, "invalid_request", "timeout"),
    ({"task_type": "echo", "idempotency_key": ""}, "invalid_submission", "idempotency_key must be 1 to 255"),
    (
        {"task_type": "echo", "backoff_base": "1m", "backoff_max": "10s"},
        "invalid_submission",
        "backoff_base must not exceed backoff_max",
    ),
    ({"task_type": "echo", "surprise": True}, "invalid_request", "surprise"),
    ({"inputs": {}}, "invalid_request", "task_type"),
    ({"task_type": ""}, "invalid_submission", "task_type must be 1 to 255 characters"),
]


async def test_bad_json_is_400_and_stores_nothing(served: Served) -> None:
    for body in BAD_JSON:
        response = await served.http.post(
            "/api/v1/executions", content=body, headers={"content-type": "application/json"}
        )
        assert_error(response, 400, "bad_json")
    assert await stored(served.store) == 0


async def test_invalid_submissions_are_422_and_store_nothing(served: Served) -> None:
    for body, code, field in INVALID_SUBMISSIONS:
        response = await served.http.post("/api/v1/executions", json=body)
        error = assert_error(response, 422, code)
        if code == "invalid_submission":
            assert field is not None
            assert error["message"].startswith("submission refused: "), error
            assert field in error["message"], (body, error)
        elif field is not None:
            assert field in [d["field"] for d in error["details"]], (body, error)
            assert field in error["message"]
        else:
            known = ", ".join(served.plugins.task_types)
            assert error["message"] == f"unknown task type 'no-such-type'; known task types: {known}"
            assert "core-sleep" in known and "echo" in known
    assert await stored(served.store) == 0


async def test_unknown_ids_are_404(served: Served) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    for method, path in [
        ("GET", f"/api/v1/executions/{missing}"),
        ("GET", f"/api/v1/executions/{missing}/events"),
        ("POST", f"/api/v1/executions/{missing}/abort"),
    ]:
        error = assert_error(await served.http.request(method, path), 404, "not_found")
        assert missing in error["message"]
    assert_error(await served.http.get("/api/v1/nothing-here"), 404, "not_found")
    assert_error(await served.http.delete("/api/v1/executions"), 405, "method_not_allowed")


async def test_bad_list_parameters_are_400(served: Served) -> None:
    for query, mentions in [
        ("phase=NOPE", "unknown phase 'NOPE'"),
        ("limit=0", "limit"),
        ("limit=ten", "limit"),
        ("limit=501", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=WzEsMl0", "cursor"),  # valid base64 of [1,2]: an id that is not a string
        ("unfinalized=maybe", "unfinalized"),
    ]:
        error = assert_error(await served.http.get(f"/api/v1/executions?{query}"), 400, "invalid_parameter")
        assert mentions in error["message"], query


async def test_bad_abort_bodies(served: Served) -> None:
    execution_id = (await served.http.post("/api/v1/executions", json={"task_type": "echo"})).json()["id"]
    assert_error(
        await served.http.post(f"/api/v1/executions/{execution_id}/abort", content=b"{"), 400, "bad_json"
    )
    error = assert_error(
        await served.http.post(f"/api/v1/executions/{execution_id}/abort", json={"reason": 5}),
        422,
        "invalid_request",
    )
    assert error["details"][0]["field"] == "reason"
    record = await served.store.get(execution_id)
    assert record is not None and not record.abort_requested


async def test_a_body_over_the_limit_is_413(served: Served) -> None:
    body = json.dumps({"task_type": "echo", "inputs": {"x": "a" * MAX_BODY_BYTES}})
    assert_error(await served.http.post("/api/v1/executions", content=body), 413, "payload_too_large")
    assert await stored(served.store) == 0


# -- the token --------------------------------------------------------------------------------


async def test_bearer_token(store: Store, database_url: str) -> None:
    served = await serve_app(store, database_url, api_token="s3cret-token")
    http = served.http
    submit = {"task_type": "echo"}
    for headers, says in [
        ({}, "needs a bearer token"),
        ({"Authorization": "Basic czNjcmV0LXRva2Vu"}, "needs a bearer token"),
        ({"Authorization": "Bearer "}, "needs a bearer token"),
        ({"Authorization": "Bearer s3cret-tokeN"}, "wrong"),
        ({"Authorization": "Bearer s3cret-token-and-more"}, "wrong"),
        ({"Authorization": "Bearer s"}, "wrong"),
    ]:
        for method, path in [
            ("POST", "/api/v1/executions"),
            ("GET", "/api/v1/executions"),
            ("GET", "/api/v1/openapi.json"),
        ]:
            response = await http.request(
                method, path, json=submit if method == "POST" else None, headers=headers
            )
            error = assert_error(response, 401, "unauthorized")
            assert says in error["message"]
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert await stored(store) == 0

    good = {"Authorization": "Bearer s3cret-token"}
    assert (await http.post("/api/v1/executions", json=submit, headers=good)).status_code == 201
    assert (
        await http.get("/api/v1/executions", headers={"authorization": "bearer s3cret-token"})
    ).status_code == 200
    # Probes, metrics and the dashboard's static page stay open: they are not the API.
    for path in ("/healthz", "/readyz", "/metrics", "/", "/static/app.js"):
        assert (await http.get(path)).status_code == 200, path


# -- the OpenAPI document ---------------------------------------------------------------------


async def test_openapi_documents_every_route(served: Served) -> None:
    document = (await served.http.get("/api/v1/openapi.json")).json()
    assert document == json.loads(json.dumps(openapi_document()))
    assert document["openapi"].startswith("3.")
    mount = next(r for r in served.app.routes if isinstance(r, Mount) and r.path == "/api/v1")
    served_ops = {
        (route.path, method.lower())
        for route in mount.app.app.router.routes  # type: ignore[attr-defined]
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert served_ops == documented
    schemas = document["components"]["schemas"]

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for value in node for r in refs(value)]
        return []

    for ref in refs(document):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


async def test_response_models_match_the_cli_json(served: Served) -> None:
    """The models the OpenAPI document shows are the shapes the API really sends."""
    execution_id = (await served.http.post("/api/v1/executions", json={"task_type": "echo"})).json()["id"]
    await drive(served, execution_id)
    failing = (
        await served.http.post("/api/v1/executions", json={"task_type": "core-sleep", "inputs": {}})
    ).json()["id"]
    await drive(served, failing, until=Phase.PERMANENT_FAILURE)
    for some_id in (execution_id, failing):
        Execution.model_validate((await served.http.get(f"/api/v1/executions/{some_id}")).json())
        for event in (await served.http.get(f"/api/v1/executions/{some_id}/events")).json()["items"]:
            Event.model_validate(event)


# -- probes -----------------------------------------------------------------------------------


async def test_readyz_says_why_while_the_store_is_unreachable(
    served: Served, database_url: str, tmp_path: Path
) -> None:
    ready = await served.http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["plugins"]["task_types"] == served.plugins.task_types

    restore = await make_unreachable(served.store, database_url, tmp_path)
    try:
        down = await served.http.get("/readyz")
        assert down.status_code == 503
        body = down.json()
        assert body["status"] == "not_ready" and body["checks"]["store"]["ok"] is False
        assert body["reason"].startswith("store: the database does not answer")
        assert body["checks"]["plugins"]["ok"] is True
        # The API says the same thing, as a 503 rather than a traceback.
        assert_error(await served.http.get("/api/v1/executions"), 503, "store_unavailable")
        scraped = await served.http.get("/metrics")
        assert scraped.status_code == 200 and "executor_store_up 0.0" in scraped.text
    finally:
        await restore()
    await poll(lambda: served.http.get("/readyz"), lambda r: r.status_code == 200)


async def make_unreachable(store: Store, database_url: str, tmp_path: Path) -> Any:
    """Cut the store off as an outage would: no new connection succeeds; returns how to undo it."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        database = Path(url.database or "")
        await store.engine.dispose()  # drop pooled connections, as a dropped connection would
        _move_database_aside(database, tmp_path / "aside")

        async def restore_sqlite() -> None:
            _put_database_back(database, tmp_path / "aside")

        return restore_sqlite

    import asyncpg

    name = url.database
    admin = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, database="postgres"
    )
    await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = $1 AND pid <> pg_backend_pid()",
        name,
    )

    async def restore_postgres() -> None:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await admin.close()

    return restore_postgres


def _move_database_aside(database: Path, aside: Path) -> None:
    aside.mkdir()
    for suffix in ("", "-wal", "-shm"):
        file = database.with_name(database.name + suffix)
        if file.exists():
            file.rename(aside / file.name)
    database.mkdir()  # a directory where the database was: SQLite cannot open it


def _put_database_back(database: Path, aside: Path) -> None:
    database.rmdir()
    for file in aside.iterdir():
        file.rename(database.parent / file.name)


async def test_readyz_needs_plugins(store: Store, database_url: str) -> None:
    served = await serve_app(store, database_url)
    empty = LoadedPlugins({}, TaskTypeResolver({}, None))
    app = create_app(client=served.client, plugins=empty, settings=served.settings, metrics=served.metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reason"] == "plugins: no plugins are loaded: no execution could run"


async def test_healthz_reports_a_stuck_loop(store: Store, database_url: str) -> None:
    now = [1000.0]
    served = await serve_app(store, database_url, poll_interval="1s", handle_timeout="2s", lease_ttl="10s")
    metrics = Metrics(clock=lambda: now[0])
    app = create_app(client=served.client, plugins=served.plugins, settings=served.settings, metrics=metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as http:
        fresh = await http.get("/healthz")
        assert fresh.status_code == 200 and fresh.json()["status"] == "ok"
        assert fresh.json()["stale_after_seconds"] == 7  # 3 polls + 2 handle timeouts

        now[0] += 6.5
        metrics.round_finished(RoundStats(1, 0, 0, 0, 0), 0.01)
        now[0] += 6.9
        assert (await http.get("/healthz")).status_code == 200

        now[0] += 0.2
        stuck = await http.get("/healthz")
        assert stuck.status_code == 503
        assert stuck.json()["status"] == "stuck"
        assert "has not finished a round for 7.1s" in stuck.json()["reason"]

        metrics.store_error()  # a loop retrying a database error is alive
        assert (await http.get("/healthz")).status_code == 200
