"""The dashboard's failures panel and retry button in a real browser (skipped where Chromium is
missing, as the other dashboard tests): an aborted execution is counted in the panel, and the
Retry button on its page starts attempt 2."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import test_http_dashboard as dashboard
from test_http_dashboard import ARTIFACTS, AUTH, CHROMIUM_ARGS, TOKEN

pytestmark = pytest.mark.process

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
chromium = dashboard.chromium  # the fixtures, shared
daemon = dashboard.daemon


def test_the_dashboard_counts_failures_and_retries_one(chromium: Path, daemon: str) -> None:
    submitted = httpx.post(
        f"{daemon}/api/v1/executions",
        json={"task_type": "core-sleep", "inputs": {"duration": "60s"}},
        headers=AUTH,
    )
    assert submitted.status_code == 201, submitted.text
    execution_id = submitted.json()["id"]
    httpx.post(f"{daemon}/api/v1/executions/{execution_id}/abort", headers=AUTH).raise_for_status()
    deadline = time.monotonic() + 20
    while True:
        shown = httpx.get(f"{daemon}/api/v1/executions/{execution_id}", headers=AUTH).json()
        if shown["phase"] == "ABORTED" and shown["finalized"]:
            break
        assert time.monotonic() < deadline, shown
        time.sleep(0.1)
    expect = playwright_api.expect
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 860})
            page.goto(f"{daemon}/")
            page.fill("#token", TOKEN)
            page.click("#token-form button")
            row = page.locator("#failure-counts tr[data-phase='ABORTED']")
            expect(row).to_be_visible(timeout=10_000)
            expect(row.locator("td").nth(2)).to_have_text("1")
            row.locator("a").click()
            expect(page.locator(f"#failure-items li[data-id='{execution_id}']")).to_be_visible(timeout=10_000)
            expect(page.locator("#retry-failures")).to_have_text("Retry these 1")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard-failures.png"), full_page=True)
            page.goto(f"{daemon}/#/executions/{execution_id}")
            page.click("#retry")
            expect(page.locator("#timeline section[data-attempt='2']")).to_be_visible(timeout=10_000)
            expect(page.locator("#execution")).not_to_have_attribute("data-phase", "ABORTED", timeout=10_000)
        finally:
            browser.close()
    events = httpx.get(f"{daemon}/api/v1/executions/{execution_id}/events", headers=AUTH).json()["items"]
    assert any(e["reason"] == "Requeued by the dashboard" for e in events)
