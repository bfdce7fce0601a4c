"""Headless Chromium for the tests: Debian's ``/usr/bin/chromium``, driven
through Playwright.

Playwright's own browser builds are downloaded from outside the package
registries, which this project cannot reach: it drives the system browser
instead (``executable_path``), the one users of a Debian machine run. Only
the Python package is installed (``playwright`` in versions.cfg); its
driver ships inside the wheel.

Use the fixtures ``browser`` (one Chromium per test session) and
``browser_context`` (a fresh profile per test: cookies and storage apart,
so two contexts are two users), or :func:`launch` outside pytest. Save
pictures with :func:`screenshot`: they land in :data:`ARTIFACTS`, which CI
keeps.

The Playwright sync API runs its own event loop in a greenlet: never use it
in a process patched by gevent (the tests are not).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.appliance import ROOT

#: Debian's chromium package installs it here (the Makefile installs it).
CHROMIUM = Path(os.environ.get("OE_TEST_CHROMIUM", "/usr/bin/chromium"))

#: Screenshots and other files a person looks at after a run.
ARTIFACTS = ROOT / "var" / "test-artifacts"

#: Flags for a headless Chromium in a container, as root: no sandbox (it
#: needs user namespaces root cannot have here), and none of the
#: background traffic to Google's services, which cannot be reached.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
)

#: Playwright's wait for any one action or navigation, in milliseconds:
#: generous, for a loaded 2-core machine; a test that needs an answer in
#: less says so with its own timeout.
DEFAULT_TIMEOUT_MS = 30_000


def launch(playwright):
    """A headless Debian Chromium, or :func:`pytest.fail` saying why not."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: `make test` installs Debian's chromium "
            "(apt-get install chromium)"
        )
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS)
    )


def screenshot(page, name: str) -> Path:
    """Save a full-page PNG of *page* as ``ARTIFACTS/<name>.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def console_recorder(page) -> list[str]:
    """Collect the page's console messages and uncaught errors, to show
    when a test fails."""
    lines: list[str] = []
    page.on("console", lambda message: lines.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: lines.append(f"pageerror: {error}"))
    return lines


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the test session."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def browser_context(browser):
    """A fresh browser profile (cookies, storage) for one test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    try:
        yield context
    finally:
        context.close()
