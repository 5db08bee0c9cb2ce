"""Issue 16, one regression test per numbered item: nothing a caller sends can break a read, fake
an outage or leak a secret.

Each test replays what the issue reproduced, on both stores where the store matters, through the
real doors: the ASGI app the daemon serves (built by the composition root), the `executor` command
as a process, and the real daemon where the item is about the running daemon.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import httpx
import pytest
import structlog
from http_support import BUILTIN_PLUGINS, Served, serve_app
from test_daemon_process import Daemon, daemon_env, executor

from executor.http import HttpServer, Metrics, create_app
from executor.http.app import bind
from executor.logging import configure_logging
from executor.redaction import MASK, Redactor
from executor.runtime import RoundStats
from executor.settings import SettingsError, load_settings
from executor.store import Store, Submission

pytestmark = pytest.mark.anyio

#: What the issue stored: a not-before whose UTC time is in the year 10000.
BEYOND_THE_CALENDAR = "9999-12-31T23:59:59-23:59"


@pytest.fixture
async def served(store: Store, database_url: str) -> Served:
    return await serve_app(store, database_url)


async def stored(store: Store) -> int:
    return sum((await store.count_by_phase()).values())


def error_of(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error, dict)
    return error


# -- 1. one stored row breaks every read of it ----------------------------------------------------


async def test_1_a_not_before_beyond_the_calendar_is_refused_and_nothing_stored(served: Served) -> None:
    response = await served.http.post(
        "/api/v1/executions", json={"task_type": "echo", "not_before": BEYOND_THE_CALENDAR}
    )
    error = error_of(response, 422)
    assert error["details"][0]["field"] == "not_before"  # type: ignore[index]
    assert "not_before must be between 1970-01-01 and 9000-01-01 (UTC)" in str(error["message"])
    assert await stored(served.store) == 0


async def test_1_a_row_no_calendar_formats_breaks_no_read(
    served: Served, database_url: str, tmp_path: Path
) -> None:
    """A row written before the doors refused such values (or by other means) is still read."""
    year_10000 = 253402387140.0
    bad = await served.store.submit(
        Submission(task_type="echo", not_before=year_10000, deadline=1e300), now=time.time()
    )
    await served.store.submit(Submission(task_type="echo"), now=time.time())

    listing = await served.http.get("/api/v1/executions")
    assert listing.status_code == 200, listing.text
    assert len(listing.json()["items"]) == 2
    one = await served.http.get(f"/api/v1/executions/{bad}")
    assert one.status_code == 200, one.text
    assert one.json()["not_before"] is None and one.json()["deadline_at"] is None

    env = daemon_env(database_url)
    for args in (["get", bad], ["get", "--json", bad], ["list"], ["list", "--json"]):
        done = executor(env, tmp_path, *args)
        assert done.returncode == 0, (args, done.stderr)
        assert "Traceback" not in done.stderr


# -- 2. numbers that do not fit a column ----------------------------------------------------------


@pytest.mark.parametrize("field", ["priority", "max_attempts"])
@pytest.mark.parametrize("value", [2**63, 2**31, -(2**63) - 1])
async def test_2_numbers_beyond_the_column_are_422_naming_the_field(
    served: Served, field: str, value: int
) -> None:
    response = await served.http.post("/api/v1/executions", json={"task_type": "echo", field: value})
    error = error_of(response, 422)
    assert error["code"] == "invalid_submission"
    assert error["details"][0]["field"] == field  # type: ignore[index]
    assert await stored(served.store) == 0


def test_2_the_cli_refuses_a_priority_beyond_the_column_in_one_line(sqlite_url: str, tmp_path: Path) -> None:
    done = executor(daemon_env(sqlite_url), tmp_path, "submit", "echo", "--priority", str(2**63))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"executor: submission refused: priority must be at most 2147483647 (a 32-bit integer), got {2**63}"
    ]


# -- 3. deep or huge JSON -------------------------------------------------------------------------


async def test_3_deep_and_huge_json_are_4xx(served: Served) -> None:
    deep = '{"task_type":"echo","inputs":' + '{"a":' * 1000 + "1" + "}" * 1000 + "}"
    error = error_of(await served.http.post("/api/v1/executions", content=deep), 400)
    assert error["code"] == "bad_json"
    nested = '{"task_type":"echo","inputs":' + '{"a":' * 100 + "1" + "}" * 100 + "}"
    error = error_of(await served.http.post("/api/v1/executions", content=nested), 422)
    assert error["details"][0]["field"] == "inputs"  # type: ignore[index]
    huge = '{"task_type":"echo","inputs":{"n":' + "9" * 5000 + "}}"
    error = error_of(await served.http.post("/api/v1/executions", content=huge), 400)
    assert error["code"] == "bad_json"
    assert await stored(served.store) == 0


# -- 4. strings the database refuses --------------------------------------------------------------


async def test_4_strings_the_database_refuses_are_4xx_not_an_outage(served: Served) -> None:
    execution_id = (await served.http.post("/api/v1/executions", json={"task_type": "echo"})).json()["id"]
    assert error_of(await served.http.get("/api/v1/executions/%00"), 404)["code"] == "not_found"
    assert error_of(await served.http.get("/api/v1/executions/%00/events"), 404)["code"] == "not_found"
    assert error_of(await served.http.post("/api/v1/executions/%00/abort"), 404)["code"] == "not_found"
    error = error_of(await served.http.get("/api/v1/executions", params={"task_type": "\x00"}), 400)
    assert error["code"] == "invalid_parameter"
    error = error_of(
        await served.http.post(f"/api/v1/executions/{execution_id}/abort", json={"reason": "a\x00b"}), 422
    )
    assert error["details"][0]["field"] == "reason"  # type: ignore[index]
    cursor = base64.urlsafe_b64encode(b'[1e300,"\\ud800"]').decode().rstrip("=")
    error = error_of(await served.http.get("/api/v1/executions", params={"cursor": cursor}), 400)
    assert error["code"] == "invalid_parameter"
    record = await served.store.get(execution_id)
    assert record is not None and not record.abort_requested


# -- 5. secrets leak when escaped -----------------------------------------------------------------

#: Quotes of both kinds and a backslash: every escaping changes it.
TRICKY = "p\"a'ss\\w0rd-42"


def test_5_a_secret_is_masked_in_every_escaped_form() -> None:
    redactor = Redactor()
    redactor.add(TRICKY)
    leaks = [
        str(KeyError(TRICKY)),
        repr(KeyError(TRICKY)),
        repr([TRICKY]),
        json.dumps(TRICKY),
        json.dumps(str(KeyError(TRICKY))),
        json.dumps({"error": repr(TRICKY)}, ensure_ascii=False),
        repr('with "quotes" around ' + TRICKY),
    ]
    for leak in leaks:
        masked = redactor.text(leak)
        assert MASK in masked, leak
        for piece in ("ss\\", "w0rd", 'p"a', 'p\\"a'):
            assert piece not in masked, (leak, masked)


def test_5_the_standard_logging_module_is_masked(capsys: pytest.CaptureFixture[str]) -> None:
    from executor.redaction import REDACTOR

    REDACTOR.add(TRICKY)
    configure_logging("info", "json")
    try:
        logging.getLogger("some.plugin").warning("the key is %s", TRICKY)
        try:
            raise KeyError(TRICKY)
        except KeyError:
            logging.getLogger("some.plugin").exception("lookup failed")
    finally:
        structlog.reset_defaults()
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines()]
    assert [line["event"] for line in lines] == ["the key is [REDACTED]", "lookup failed"]
    assert "w0rd" not in err


LEAKY_PLUGIN = '''
"""leaky: raises KeyError(secret) and logs the secret with the standard logging module."""

import logging

from executor import plugin_registry
from executor.core import Plugin, PluginEntry


class Leaky(Plugin):
    id = "leaky"

    async def handle(self, tctx):
        secret = tctx.secret_manager.get("y")
        logging.getLogger("leaky").warning("calling with %s", secret)
        raise KeyError(secret)


plugin_registry().register_core_plugin(
    PluginEntry(id="leaky", registered_task_types=["leaky"], load_plugin=lambda s: Leaky())
)
'''


@pytest.mark.process
def test_5_a_daemon_masks_a_secret_a_plugin_raises_and_logs(sqlite_url: str, tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "leaky.py").write_text(textwrap.dedent(LEAKY_PLUGIN))
    env = daemon_env(
        sqlite_url,
        plugins,
        EXECUTOR_SECRET_Y=TRICKY,
        EXECUTOR_MAX_SYSTEM_FAILURES="1",
        EXECUTOR_LOG_LEVEL="info",
    )
    submitted = executor(env, tmp_path, "submit", "leaky")
    assert submitted.returncode == 0, submitted.stderr
    execution_id = submitted.stdout.strip()
    daemon = Daemon(env, tmp_path, tmp_path / "daemon.log")
    try:
        deadline = time.monotonic() + 30
        while True:
            shown = executor(env, tmp_path, "get", "--json", execution_id)
            if json.loads(shown.stdout)["finished_at"] is not None:
                break
            assert time.monotonic() < deadline, shown.stdout
            time.sleep(0.2)
        events = executor(env, tmp_path, "events", "--json", execution_id).stdout
    finally:
        daemon.process.terminate()
        daemon.wait()
    log = daemon.log.read_text()
    assert "calling with [REDACTED]" in log
    assert "[REDACTED]" in shown.stdout
    for text in (log, shown.stdout, events):
        assert "w0rd" not in text


# -- 6. settings that start a broken daemon -------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("replica_id", "r" * 300, "EXECUTOR_REPLICA_ID="),
        ("replica_id", "a\x00b", "contains a NUL character"),
        ("heartbeat_interval", "0", "EXECUTOR_HEARTBEAT_INTERVAL='0': must be at least 0.1s"),
        ("poll_interval", "0", "EXECUTOR_POLL_INTERVAL='0': must be more than 0s"),
        ("default_max_attempts", str(2**31), "EXECUTOR_DEFAULT_MAX_ATTEMPTS="),
        ("max_system_failures", str(2**31), "EXECUTOR_MAX_SYSTEM_FAILURES="),
        ("resource_quotas", '{"x": -1}', "EXECUTOR_RESOURCE_QUOTAS[x]=-1"),
        ("lease_ttl", "1e12", "must be at most 100 years"),
        ("default_deadline", "0", "EXECUTOR_DEFAULT_DEADLINE"),
    ],
)
def test_6_settings_beyond_what_the_store_and_loop_take_are_refused(
    variable: str, value: str, words: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(**{variable: json.loads(value) if value.startswith("{") else value})
    assert words in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.process
def test_6_a_bad_setting_stops_run_in_one_line_with_exit_2(sqlite_url: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "executor", "run"],
        env=daemon_env(sqlite_url, EXECUTOR_HEARTBEAT_INTERVAL="0"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "executor: invalid setting EXECUTOR_HEARTBEAT_INTERVAL='0': must be at least 0.1s"
    ]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.process
@pytest.mark.parametrize("args", [["run"], ["submit", "echo"], ["list"]])
def test_6_an_unreachable_database_is_one_line_naming_the_setting(args: list[str], tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://someone:hunter2@127.0.0.1:{_closed_port()}/nothing"
    env = {**daemon_env(url), "EXECUTOR_PLUGINS_DIR": str(BUILTIN_PLUGINS)}
    done = executor(env, tmp_path, *args)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("{")]  # info logs
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("executor: the database does not answer (EXECUTOR_DATABASE_URL=postgresql")
    assert "hunter2" not in done.stderr


# -- 7. a slow body holds a connection ------------------------------------------------------------


async def test_7_a_body_that_does_not_arrive_is_cut_with_408(store: Store, database_url: str) -> None:
    served = await serve_app(store, database_url, api_token="t0ken")
    app = create_app(
        client=served.client,
        plugins=served.plugins,
        settings=served.settings,
        metrics=served.metrics,
        body_timeout=0.5,
    )
    server = HttpServer(app, bind("127.0.0.1", 0), metrics=served.metrics)
    async with anyio.create_task_group() as group:
        group.start_soon(server.run)
        with anyio.fail_after(10):
            while True:
                try:
                    stream = await anyio.connect_tcp(server.host, server.port)
                    break
                except OSError:
                    await anyio.sleep(0.02)
        async with stream:
            started = time.monotonic()
            await stream.send(
                b"POST /api/v1/executions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken\r\n"
                b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"task_type"'
            )
            received = b""
            with anyio.fail_after(10):
                while True:
                    try:
                        chunk = await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        break
                    received += chunk
            waited = time.monotonic() - started
        group.cancel_scope.cancel()
    assert received.startswith(b"HTTP/1.1 408"), received
    assert b"did not arrive within 0.5s" in received
    assert waited < 5


# -- 8. /healthz says ok while every round fails --------------------------------------------------


async def test_8_liveness_fails_when_rounds_fail_for_long(store: Store, database_url: str) -> None:
    now = [1000.0]
    served = await serve_app(store, database_url, poll_interval="1s", handle_timeout="2s", lease_ttl="10s")
    metrics = Metrics(clock=lambda: now[0])
    app = create_app(client=served.client, plugins=served.plugins, settings=served.settings, metrics=metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as http:
        metrics.round_finished(RoundStats(1, 0, 0, 0, 0), 0.01)
        for _ in range(80):  # a round fails every second, the loop turning all along
            now[0] += 1
            metrics.store_error()
            live = await http.get("/healthz")
            if live.status_code != 200:
                break
        assert live.status_code == 503, live.json()
        assert live.json()["status"] == "failing"
        assert "no round has completed for 71.0s: 71 rounds in a row failed" in live.json()["reason"]
        ready = await http.get("/readyz")
        assert ready.status_code == 503 and not ready.json()["checks"]["rounds"]["ok"]

        metrics.round_finished(RoundStats(2, 0, 0, 0, 0), 0.01)  # the database is back
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200


async def test_8_a_short_outage_leaves_the_replica_live_but_not_ready(
    store: Store, database_url: str
) -> None:
    now = [1000.0]
    served = await serve_app(store, database_url, poll_interval="1s", handle_timeout="2s", lease_ttl="10s")
    metrics = Metrics(clock=lambda: now[0])
    app = create_app(client=served.client, plugins=served.plugins, settings=served.settings, metrics=metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as http:
        metrics.round_finished(RoundStats(1, 0, 0, 0, 0), 0.01)
        for _ in range(10):
            now[0] += 1
            metrics.store_error()
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 503


# -- 9. the small ones ----------------------------------------------------------------------------


async def test_9_a_405_lists_every_method_of_the_path(served: Served) -> None:
    response = await served.http.delete("/api/v1/executions")
    assert response.status_code == 405
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


async def test_9_the_openapi_document_names_401_on_every_operation(served: Served) -> None:
    document = (await served.http.get("/api/v1/openapi.json")).json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "401" in operation["responses"], (method, path)


async def test_9_labels_and_reasons_are_bounded(served: Served) -> None:
    big = await served.http.post(
        "/api/v1/executions", json={"task_type": "echo", "labels": {"k": "x" * 3_500_000}}
    )
    assert error_of(big, 422)["details"][0]["field"] == "labels"  # type: ignore[index]
    many = {f"k{i}": "v" for i in range(100_000)}
    crowd = await served.http.post("/api/v1/executions", json={"task_type": "echo", "labels": many})
    assert error_of(crowd, 422)["details"][0]["field"] == "labels"  # type: ignore[index]
    execution_id = (await served.http.post("/api/v1/executions", json={"task_type": "echo"})).json()["id"]
    long = await served.http.post(f"/api/v1/executions/{execution_id}/abort", json={"reason": "r" * 5000})
    assert error_of(long, 422)["details"][0]["field"] == "reason"  # type: ignore[index]
    assert await stored(served.store) == 1


async def test_9_the_dashboard_sends_security_headers(served: Served) -> None:
    for path in ("/", "/static/app.js", "/api/v1/executions"):
        response = await served.http.get(path)
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_an_unknown_query_parameter_is_refused_not_ignored(served: Served) -> None:
    await served.http.post("/api/v1/executions", json={"task_type": "echo"})
    error = error_of(await served.http.get("/api/v1/executions", params={"phases": "FAILED"}), 400)
    assert error["message"] == (
        "unknown query parameter 'phases'; this operation takes: "
        "cursor, label, limit, phase, task_type, unfinalized"
    )
    assert (
        error_of(await served.http.get("/api/v1/plugins", params={"x": "1"}), 400)["code"]
        == "invalid_parameter"
    )
    assert (await served.http.get("/api/v1/executions", params={"phase": "QUEUED"})).status_code == 200
