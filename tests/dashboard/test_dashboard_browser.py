"""The dashboard in a real browser: Playwright driving Debian's Chromium (installed by
``apt-get`` here when missing; nothing downloads a browser) against a real ``celeriac
dashboard`` process fed by a real worker.

An operator opens the worker list before any worker runs, is sent to the login, logs in with
the token, sees the empty list; then a worker starts, and its row appears in the open page by
server-sent events, without a reload; the page's Content-Security-Policy is never violated
(the script and styles are files, nothing inline).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_support import OPERATOR_TOKEN, Harness
from served import dashboard_process

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
WORKER = "w1@browser"


def ensure_chromium() -> str:
    """Debian's Chromium, installed with apt-get when missing (as root, as CI runs)."""
    if not os.path.exists(CHROMIUM) and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, timeout=300)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"], check=False, env=env, timeout=600
        )
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing and could not be installed"
        if os.environ.get("CELERIAC_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()


def test_login_then_the_worker_list_fills_live(harness: Harness, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = ensure_chromium()
    with dashboard_process(harness) as (_, url), sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=FLAGS)
        try:
            page = browser.new_page()
            violations: list[str] = []
            page.on(
                "console",
                lambda message: (
                    violations.append(message.text)
                    if "Content Security Policy" in message.text
                    else None
                ),
            )
            page.goto(f"{url}/workers")
            assert "/login" in page.url
            page.fill("#secret", "wrong-token-for-sure")
            page.click("button[type=submit]")
            assert "Wrong password or token" in page.inner_text("#login-error")
            page.fill("#secret", OPERATOR_TOKEN)
            page.click("button[type=submit]")
            page.wait_for_url(f"{url}/workers")
            assert page.is_visible("#no-workers")
            page.evaluate("window.stillTheSamePage = true")

            harness.start_worker("-E", name=WORKER)
            row = page.wait_for_selector(f'tr.worker[data-hostname="{WORKER}"]', timeout=20_000)
            assert row is not None
            assert page.evaluate("window.stillTheSamePage") is True  # updated live, no reload
            page.wait_for_function(
                f"""document.querySelector('tr.worker[data-hostname="{WORKER}"]')
                    .innerText.includes('threads')""",
                timeout=20_000,
            )
            assert page.text_content("span.role") == "operator"
            page.screenshot(
                path=os.environ.get("DASHBOARD_SCREENSHOT") or str(tmp_path / "workers.png")
            )
            assert violations == []
        finally:
            browser.close()
