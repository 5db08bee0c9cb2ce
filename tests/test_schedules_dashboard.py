"""The dashboard's schedules in a real browser: a schedule declared through the API shows its
next and last slot, and a click lists its slots with links to the executions they made."""

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


def test_the_dashboard_shows_schedules_and_links_their_executions(chromium: Path, daemon: str) -> None:
    body = {"name": "heartbeat", "task_type": "echo", "every": 1.0, "inputs": {"ping": True}}
    created = httpx.post(f"{daemon}/api/v1/schedules", json=body, headers=AUTH)
    assert created.status_code == 201, created.text
    expect = playwright_api.expect
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 860})
            page.goto(f"{daemon}/")
            page.fill("#token", TOKEN)
            page.click("#token-form button")
            row = page.locator("#schedules tr[data-schedule='heartbeat']")
            expect(row).to_be_visible(timeout=10_000)
            expect(row.locator("td a.mono")).to_be_visible(timeout=10_000)  # its last slot ran
            row.locator("td a").first.click()
            slots = page.locator("#schedule-slots li[data-slot]")
            expect(slots.first).to_be_visible(timeout=10_000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard-schedules.png"), full_page=True)
            slots.first.locator("a").click()
            expect(page.locator("#execution-view")).to_be_visible()
            expect(page.locator("#execution")).to_contain_text("heartbeat")
        finally:
            browser.close()
