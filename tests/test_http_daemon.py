"""The HTTP server inside the real daemon: one event loop runs the reconciler and answers HTTP.

`serve(settings)` runs in the test's own loop on a real port (SQLite and PostgreSQL); the
HEALTHCHECK probe, the startup warning, the bind error of `executor run` and `executor config`
are checked as a user meets them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import structlog
from http_support import BUILTIN_PLUGINS, free_port, load, poll, sample

from executor import cli
from executor.app.parts import client_for
from executor.daemon import serve
from executor.http import HttpServer, Metrics
from executor.http import probe as probe_module
from executor.http.app import is_loopback
from executor.settings import load_settings
from executor.store import Store

pytestmark = pytest.mark.anyio


async def get_or_none(http: httpx.AsyncClient, path: str) -> httpx.Response | None:
    try:
        return await http.get(path)
    except httpx.TransportError:
        return None  # not listening yet


async def test_the_daemon_serves_http_from_its_own_loop(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    settings = load_settings(
        database_url=database_url,
        http_addr=f"127.0.0.1:{port}",
        plugins_dir=BUILTIN_PLUGINS,
        plugin_entry_points=False,
        poll_interval="200ms",
    )
    async with anyio.create_task_group() as group:
        group.start_soon(serve, settings)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            ready = await poll(
                lambda: get_or_none(http, "/readyz"), lambda r: r is not None and r.status_code == 200
            )
            assert ready is not None and ready.json()["status"] == "ready"
            assert (await http.get("/healthz")).json()["status"] == "ok"

            created = await http.post("/api/v1/executions", json={"task_type": "echo", "inputs": {"n": 1}})
            assert created.status_code == 201
            execution_id = created.json()["id"]

            async def phase() -> str:
                return str((await http.get(f"/api/v1/executions/{execution_id}")).json()["phase"])

            await poll(phase, lambda p: p == "SUCCESS")

            # A round reports to the metrics once it is over (its finalize included), a moment
            # after its commit made the execution visible: poll rather than read once.
            async def figures() -> tuple[float | None, float | None, float | None]:
                text = (await http.get("/metrics")).text
                return (
                    sample(text, "executor_executions", phase="SUCCESS"),
                    sample(text, "executor_committed_executions_total"),
                    sample(text, "executor_event_loop_lag_seconds_count"),  # the lag watcher runs
                )

            await poll(figures, lambda f: f[0] == 1 and (f[1] or 0) >= 1 and (f[2] or 0) >= 1)
            page = await http.get("/")
            assert page.status_code == 200 and "<title>executor</title>" in page.text
            assert (await http.get("/static/app.js")).status_code == 200

            # The probe Docker's HEALTHCHECK runs, against the same daemon.
            monkeypatch.setenv("EXECUTOR_HTTP_ADDR", f"127.0.0.1:{port}")
            assert await anyio.to_thread.run_sync(probe_module.main, []) == 0
            assert await anyio.to_thread.run_sync(probe_module.main, ["/readyz"]) == 0
            assert await anyio.to_thread.run_sync(probe_module.main, ["/no-such-page"]) == 1

            # Stopping with a keep-alive connection still open must not wait on it.
            stopping = time.monotonic()
            group.cancel_scope.cancel()
    assert time.monotonic() - stopping < 3.0
    monkeypatch.setenv("EXECUTOR_HTTP_ADDR", f"127.0.0.1:{port}")
    assert await anyio.to_thread.run_sync(probe_module.main, []) == 1  # nobody listens any more


async def test_an_open_address_without_a_token_is_warned_about(sqlite_url: str) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.168.1.10")

    store = Store.from_url(sqlite_url)
    try:
        for addr, token, warned in [
            ("0.0.0.0:0", None, True),
            ("0.0.0.0:0", "s3cret", False),
            ("127.0.0.1:0", None, False),
        ]:
            settings = load_settings(database_url=sqlite_url, http_addr=addr, api_token=token)
            plugins = await load(settings)
            with structlog.testing.capture_logs() as logs:
                server = HttpServer.from_settings(
                    settings, client=client_for(settings, store, None), plugins=plugins, metrics=Metrics()
                )
            assert server is not None
            server.close()
            found = [entry for entry in logs if entry["event"] == "http.unauthenticated"]
            assert bool(found) is warned, (addr, token, logs)
            if warned:
                assert "EXECUTOR_API_TOKEN is not set" in found[0]["detail"]
                assert found[0]["log_level"] == "warning"
        off = load_settings(database_url=sqlite_url, http_addr="")
        assert (
            HttpServer.from_settings(
                off, client=client_for(off, store, None), plugins=plugins, metrics=Metrics()
            )
            is None
        )
    finally:
        await store.close()


def _daemon_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("EXECUTOR_")}
    env.update(
        EXECUTOR_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/executor.db",
        EXECUTOR_PLUGINS_DIR=str(BUILTIN_PLUGINS),
        EXECUTOR_LOG_FORMAT="json",
        **extra,
    )
    return env


@pytest.mark.process
def test_executor_run_refuses_an_address_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        addr = f"127.0.0.1:{busy.getsockname()[1]}"
        done = subprocess.run(
            [sys.executable, "-m", "executor", "run"],
            env=_daemon_env(tmp_path, EXECUTOR_HTTP_ADDR=addr),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"executor: invalid setting EXECUTOR_HTTP_ADDR='{addr}': cannot listen there: Address already in use"
    )


@pytest.mark.process
def test_an_invalid_http_address_exits_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "executor", "run"],
        env=_daemon_env(tmp_path, EXECUTOR_HTTP_ADDR="localhost"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "executor: invalid setting EXECUTOR_HTTP_ADDR='localhost': "
        "expected HOST:PORT (such as 127.0.0.1:8420), got 'localhost'"
    )
    assert not (tmp_path / "executor.db").exists()  # refused before touching the store


# -- executor config --------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    for key in list(os.environ):
        if key.startswith("EXECUTOR_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    structlog.reset_defaults()  # `main` configured logging for the whole process


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_executor_config_masks_secrets_and_names_sources(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (clean_env / ".env").write_text(
        "EXECUTOR_POLL_INTERVAL=250ms\nexecutor_batch_size=32\nEXECUTOR_BACTH_SIZE=7\nEXECUTOR_HTTP_ADDR=1.2.3.4:1\n"
    )
    monkeypatch.setenv("EXECUTOR_API_TOKEN", "tok-3f9a-very-secret")
    monkeypatch.setenv("EXECUTOR_DATABASE_URL", "postgresql+asyncpg://app:pg-pass-77@db:5432/executor")
    monkeypatch.setenv("EXECUTOR_HTTP_ADDR", "0.0.0.0:8420")  # the environment wins over .env
    monkeypatch.setenv("EXECUTOR_SECRET_SMTP", "not-a-setting-but-not-a-typo")

    code, out, err = run_cli(capsys, "config", "--json")
    assert code == 0, err
    report = json.loads(out)
    rows = {row["name"]: row for row in report["settings"]}
    assert rows["EXECUTOR_API_TOKEN"] == {
        "name": "EXECUTOR_API_TOKEN",
        "value": "********",
        "source": "environment",
    }
    assert rows["EXECUTOR_DATABASE_URL"]["value"] == "postgresql+asyncpg://app:***@db:5432/executor"
    assert rows["EXECUTOR_HTTP_ADDR"] == {
        "name": "EXECUTOR_HTTP_ADDR",
        "value": "0.0.0.0:8420",
        "source": "environment",
    }
    assert rows["EXECUTOR_POLL_INTERVAL"] == {
        "name": "EXECUTOR_POLL_INTERVAL",
        "value": "0.25s",
        "source": ".env",
    }
    assert rows["EXECUTOR_BATCH_SIZE"]["value"] == 32
    assert rows["EXECUTOR_BATCH_SIZE"]["source"] == ".env (as executor_batch_size)"
    assert rows["EXECUTOR_LEASE_TTL"] == {"name": "EXECUTOR_LEASE_TTL", "value": "120s", "source": "default"}
    assert set(rows) >= {"EXECUTOR_MAX_PARALLELISM", "EXECUTOR_REPLICA_ID", "EXECUTOR_RESOURCE_QUOTAS"}
    assert report["unknown_variables"] == ["EXECUTOR_BACTH_SIZE"]

    code, out, err = run_cli(capsys, "config")
    assert code == 0
    assert "tok-3f9a" not in out + err and "pg-pass-77" not in out + err
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert lines["SETTING"].split() == ["SETTING", "VALUE", "SOURCE"]
    assert lines["EXECUTOR_API_TOKEN"].split() == ["EXECUTOR_API_TOKEN", "********", "environment"]
    assert lines["EXECUTOR_SECRETS_DIR"].split() == ["EXECUTOR_SECRETS_DIR", "-", "default"]
    assert err.strip() == "warning: EXECUTOR_BACTH_SIZE is set but is no setting (a typo?); it is ignored"


def test_executor_config_with_nothing_set(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "config", "--json")
    assert code == 0
    report = json.loads(out)
    assert {row["source"] for row in report["settings"]} == {"default"}
    rows = {row["name"]: row["value"] for row in report["settings"]}
    assert rows["EXECUTOR_API_TOKEN"] is None and rows["EXECUTOR_HTTP_ADDR"] == "127.0.0.1:8420"
