"""Headless Chromium for the viewer's browser tests: the system browser, driven by playwright.

Never downloads a browser: it looks for Debian's ``chromium`` (or ``chromium-headless-shell``,
``google-chrome``) on the PATH, or ``EVALSTACK_TEST_CHROMIUM``. :func:`find_browser` says why
there is none, so the tests can skip with that reason.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CANDIDATES = ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class BrowserUnavailable(RuntimeError):
    """No browser (or no playwright) to drive; the message says which and how to get it."""


def find_browser() -> str:
    """The path of a system Chromium; raises BrowserUnavailable saying what is missing."""
    configured = os.environ.get("EVALSTACK_TEST_CHROMIUM")
    if configured:
        if os.access(configured, os.X_OK):
            return configured
        raise BrowserUnavailable(f"EVALSTACK_TEST_CHROMIUM={configured} is not an executable file")
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserUnavailable(
        "no Chromium found on the PATH (looked for " + ", ".join(CANDIDATES) + "); on Debian: "
        "apt-get install chromium (make test does this when it runs as root)"
    )


@contextmanager
def chromium() -> Iterator[Any]:
    """A playwright Browser on the system Chromium (closed on exit)."""
    executable = find_browser()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise BrowserUnavailable(f"playwright is not installed ({exc}); it is in the dev extra") from exc
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
