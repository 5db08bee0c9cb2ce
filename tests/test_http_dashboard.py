"""The status dashboard in a real browser: Debian's Chromium, driven by Playwright, against
`executor run` started as a process (SQLite), with an API token so the page must ask for it.

It loads the page, submits through the API, watches the row appear and reach SUCCESS, opens the
execution's timeline, uses the filters and the id search, and saves screenshots to
test-artifacts/. The page must load nothing from anywhere but the daemon.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from http_support import BUILTIN_PLUGINS, free_port

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TOKEN = "dashboard-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

pytestmark = pytest.mark.process

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: `make test` installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing: `make test` (or apt-get install chromium) installs it")
    return CHROMIUM


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[str]:
    """`executor run` on a fresh SQLite file and a free port; yields its base URL."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("EXECUTOR_")}
    env.update(
        EXECUTOR_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/executor.db",
        EXECUTOR_PLUGINS_DIR=str(BUILTIN_PLUGINS),
        EXECUTOR_HTTP_ADDR=f"127.0.0.1:{port}",
        EXECUTOR_API_TOKEN=TOKEN,
        EXECUTOR_POLL_INTERVAL="200ms",
        EXECUTOR_LOG_FORMAT="json",
        # One declared shell command, whose log the dashboard links (test_dashboard_shows_a_shell_log).
        EXECUTOR_PLUGIN_CONFIG=json.dumps(
            {
                "shell": {
                    "commands": {
                        "greet": {
                            "argv": [
                                sys.executable,
                                "-c",
                                "import sys; print('hello', sys.argv[1])",
                                "{name}",
                            ]
                        }
                    },
                    "log_dir": str(tmp_path / "shell-logs"),
                    "poll_interval": "0.1s",
                }
            }
        ),
    )
    log = tmp_path / "daemon.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "executor", "run"], env=env, cwd=tmp_path, stdout=sink, stderr=sink
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, f"the daemon exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the daemon never became ready:\n{log.read_text()}"
            time.sleep(0.05)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=15) == 0, log.read_text()
        finally:
            if process.poll() is None:
                process.kill()
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / "dashboard-daemon.log").write_text(log.read_text())


def submit(base: str, task_type: str, inputs: dict[str, object]) -> str:
    response = httpx.post(
        f"{base}/api/v1/executions", json={"task_type": task_type, "inputs": inputs}, headers=AUTH
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_dashboard_shows_an_execution_from_submission_to_success(chromium: Path, daemon: str) -> None:
    expect = playwright_api.expect
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 860})
            requested: list[str] = []
            page.on("request", lambda request: requested.append(request.url))
            page.goto(f"{daemon}/")

            # The API wants the token: the page asks for it, keeps it, and loads.
            expect(page.locator("#token-form")).to_be_visible()
            page.fill("#token", TOKEN)
            page.click("#token-form button")
            expect(page.locator("#plugins tr[data-plugin='core-sleep']")).to_be_visible()
            expect(page.locator("#replicas tbody tr")).to_have_count(1)
            expect(page.locator("#empty")).to_be_visible()

            # Submitted through the API, the row appears and moves to SUCCESS by itself.
            execution_id = submit(daemon, "core-sleep", {"duration": "600ms"})
            row = page.locator(f"#executions tbody tr[data-id='{execution_id}']")
            expect(row).to_be_visible(timeout=5_000)
            expect(row.locator("td.task-type")).to_have_text("core-sleep")
            expect(row).to_have_attribute("data-phase", "SUCCESS", timeout=10_000)
            failed = submit(daemon, "core-sleep", {"duration": "soon"})
            echoed = submit(daemon, "echo", {"hello": "world"})
            for other, phase in ((failed, "PERMANENT_FAILURE"), (echoed, "SUCCESS")):
                expect(page.locator(f"tr[data-id='{other}']")).to_have_attribute(
                    "data-phase", phase, timeout=5_000
                )

            # Reloaded, the chart shows what finished this minute.
            page.reload()
            expect(page.locator("#chart rect[data-outcome='SUCCESS']")).to_have_count(1)
            expect(page.locator("#chart rect[data-outcome='PERMANENT_FAILURE']")).to_have_count(1)
            expect(page.locator("#phase-counts li[data-phase='SUCCESS'] b")).to_have_text("2")
            page.screenshot(path=str(ARTIFACTS / "dashboard-executions.png"), full_page=True)

            # Filters: by phase, then by task type.
            page.select_option("#filter-phase", "PERMANENT_FAILURE")
            expect(page.locator("#executions tbody tr")).to_have_count(1)
            expect(page.locator(f"tr[data-id='{failed}']")).to_be_visible()
            page.select_option("#filter-phase", "")
            page.select_option("#filter-task-type", "echo")
            expect(page.locator("#executions tbody tr")).to_have_count(1)
            expect(page.locator(f"tr[data-id='{echoed}']")).to_be_visible()
            page.select_option("#filter-task-type", "")
            expect(page.locator("#executions tbody tr")).to_have_count(3)

            # The execution's page: its timeline across the phases it went through.
            row.click()
            expect(page).to_have_url(re.compile(f"#/executions/{execution_id}$"))
            expect(page.locator("#execution")).to_have_attribute("data-phase", "SUCCESS")
            timeline = page.locator("#timeline .attempt[data-attempt='1'] li")
            expect(timeline).to_have_count(3)
            phases = timeline.evaluate_all("items => items.map(item => item.dataset.phase)")
            assert phases == ["QUEUED", "RUNNING", "SUCCESS"]
            expect(page.locator("#execution")).to_contain_text('"duration": "600ms"')
            page.screenshot(path=str(ARTIFACTS / "dashboard-execution.png"), full_page=True)

            # Search by id: a known one opens its page, an unknown one says so.
            page.click("text=all executions")
            page.fill("#search", failed)
            page.press("#search", "Enter")
            expect(page.locator("#execution")).to_have_attribute("data-phase", "PERMANENT_FAILURE")
            expect(page.locator("#execution")).to_contain_text("InvalidInput")
            page.click("text=all executions")
            page.fill("#search", "no-such-execution")
            page.press("#search", "Enter")
            expect(page.locator("#not-found")).to_have_text("No execution with id no-such-execution.")

            # Abort from the execution's page.
            sleeper = submit(daemon, "core-sleep", {"duration": "1h"})
            page.goto(f"{daemon}/#/executions/{sleeper}")
            expect(page.locator("#execution")).to_have_attribute("data-phase", "RUNNING", timeout=5_000)
            page.click("#abort")
            expect(page.locator("#execution")).to_have_attribute("data-phase", "ABORTED", timeout=5_000)
            expect(page.locator("#timeline li").last).to_contain_text("Aborted from the dashboard")
            expect(page.locator("#abort")).to_have_count(0)
        finally:
            browser.close()

    strangers = [url for url in requested if not url.startswith(daemon)]
    assert strangers == [], f"the page fetched from elsewhere: {strangers}"


def test_dashboard_shows_a_shell_commands_log(chromium: Path, daemon: str) -> None:
    """The execution's page links the TaskLog the shell plugin reports; the link shows the
    command's output, fetched with the page's token."""
    expect = playwright_api.expect
    execution_id = submit(daemon, "shell", {"command": "greet", "params": {"name": "dashboard"}})
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{daemon}/")
            page.fill("#token", TOKEN)
            page.click("#token-form button")
            page.goto(f"{daemon}/#/executions/{execution_id}")
            expect(page.locator("#execution")).to_have_attribute("data-phase", "SUCCESS", timeout=15_000)
            link = page.locator("#execution a.log-link")
            expect(link).to_have_text("output")
            link.click()
            expect(page.locator("#log")).to_have_text("hello dashboard\n")
        finally:
            browser.close()
