"""The dashboard's pause control in a real browser: a click pauses a task type on every replica
(the API then lists it as paused), the row says so, and a second click resumes it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import test_http_dashboard as dashboard
from test_http_dashboard import ARTIFACTS, AUTH, CHROMIUM_ARGS, TOKEN

pytestmark = pytest.mark.process

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
chromium = dashboard.chromium  # the fixtures, shared
daemon = dashboard.daemon


def paused(daemon: str) -> list[str]:
    listed = httpx.get(f"{daemon}/api/v1/paused", headers=AUTH)
    assert listed.status_code == 200, listed.text
    return [row["task_type"] for row in listed.json()["items"]]


def test_the_dashboard_pauses_and_resumes_a_task_type(chromium: Path, daemon: str) -> None:
    expect = playwright_api.expect
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 860})
            page.goto(f"{daemon}/")
            page.fill("#token", TOKEN)
            page.click("#token-form button")
            row = page.locator("#task-types tr[data-task-type='echo']")
            expect(row).to_be_visible(timeout=10_000)
            expect(row).to_contain_text("default")  # its queue
            assert paused(daemon) == []

            row.locator("button").click()
            expect(row.locator("button")).to_have_text("Resume", timeout=10_000)
            expect(row).to_contain_text("(paused)")
            assert paused(daemon) == ["echo"]
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard-paused.png"), full_page=True)

            row.locator("button").click()
            expect(row.locator("button")).to_have_text("Pause", timeout=10_000)
            assert paused(daemon) == []
        finally:
            browser.close()
