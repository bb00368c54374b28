"""Debian's Chromium driven by Playwright, for the browser tests: found at ``/usr/bin/chromium``
(installed with ``apt-get`` when missing, as root, as CI runs; Playwright never downloads a
browser here), and a logged-in tab that records every Content-Security-Policy violation.

Waits go through Playwright's locators and ``wait_for_*`` with a deadline, never through
``wait_for_function``: that one evaluates a string in the page, which the dashboard's CSP
(no ``unsafe-eval``) rightly refuses.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
#: Milliseconds a wait in the page may take (generous: the machine is shared).
WAIT_MS = 20_000
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def ensure_chromium() -> str:
    """Debian's Chromium, installed with apt-get when missing (as root, as CI runs)."""
    said = ""
    if not os.path.exists(CHROMIUM) and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        # another apt or dpkg at work (a test set-up beside this one, the system's own) is
        # waited for, not a failure
        wait = ["-o", "DPkg::Lock::Timeout=300"]
        for command in (["update", "-qq"], ["install", "-y", "-qq", "chromium"]):
            done = subprocess.run(
                ["apt-get", *wait, *command], env=env, timeout=900, capture_output=True, text=True
            )
            said += done.stdout[-2000:] + done.stderr[-2000:]
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing and could not be installed: {said.strip()[-1500:]}"
        if os.environ.get("CELERIAC_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


def launch(playwright: Any) -> Browser:
    browser: Browser = playwright.chromium.launch(executable_path=ensure_chromium(), args=FLAGS)
    return browser


class Tab:
    """One browser context (its own cookies) with one page, logged in as a role. Tests share
    a tab by navigating its page (a new page or context costs a renderer process)."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.base_url = base_url
        self.context: BrowserContext = browser.new_context(base_url=base_url)
        self.context.set_default_timeout(WAIT_MS)
        self.violations: list[str] = []
        self.page: Page = self.context.new_page()
        self.page.on("console", self._console)
        self.page.on("dialog", lambda dialog: dialog.accept())  # the page's confirmations

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.violations.append(message.text)

    def login(self, secret: str, then: str = "/workers") -> None:
        """Through the login form, as a person would."""
        self.page.goto(f"/login?next={then}")
        self.page.fill("#secret", secret)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(f"{self.base_url}{then}")

    def csrf(self) -> str:
        """The session's CSRF token, from the current page (every page's logout form has it)."""
        found = _CSRF.search(self.page.content())
        assert found is not None, "no CSRF token on the page"
        return found.group(1)

    def close(self) -> None:
        self.context.close()
