"""A real headless Chromium for tests that drive the Temporal UI the way an operator does.

Playwright cannot download its own browser here, so it drives the system `chromium`. One browser
per session (starting it is the slow part); every test gets its own context, so cookies, storage
and the CSRF token never leak between tests.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page, ViewportSize

CHROMIUM = Path("/usr/bin/chromium")

# Works as root and offline: no sandbox (root), no GPU, no QUIC, and nothing that phones home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Wide enough that the UI renders one copy of its action buttons, not a hidden narrow-screen twin.
VIEWPORT: ViewportSize = {"width": 1600, "height": 1000}

# Per element, not per test: the UI on a busy 2-core machine can take seconds to fill a list.
ELEMENT_TIMEOUT_MS = 60_000


@pytest.fixture(scope="session")
async def chromium_browser() -> AsyncIterator[Browser]:
    """Headless system Chromium through Playwright, with a fresh profile that is removed afterwards."""
    from tests.conftest import require_real

    if not CHROMIUM.is_file():
        require_real("chromium", f"{CHROMIUM} is not installed (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        require_real("chromium", "the playwright module is not installed (pip install playwright)")

    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=ELEMENT_TIMEOUT_MS)  # its default, 5 s, is short for a busy CI machine

    profile = Path(tempfile.mkdtemp(prefix="remedium-chromium-"))
    async with async_playwright() as pw:
        # launch() starts from a throwaway user-data dir of its own; HOME and the XDG dirs point
        # into our temp dir too, so nothing Chromium writes outside its profile survives the run.
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            downloads_path=str(profile / "downloads"),
            env={
                **os.environ,
                "HOME": str(profile),
                "XDG_CONFIG_HOME": str(profile),
                "XDG_CACHE_HOME": str(profile),
            },
        )
        try:
            yield browser
        finally:
            await browser.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
async def browser_context(chromium_browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await chromium_browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(ELEMENT_TIMEOUT_MS)
    context.set_default_navigation_timeout(ELEMENT_TIMEOUT_MS)
    try:
        yield context
    finally:
        await context.close()


@pytest.fixture
async def ui_page(browser_context: BrowserContext) -> Page:
    """A fresh tab, 1600x1000, with generous per-element waits."""
    return await browser_context.new_page()
