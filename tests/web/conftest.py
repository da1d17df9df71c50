"""Browser fixtures for dashboard tests: Debian's Chromium driven by Playwright's async API.

Playwright uses the system browser (``executable_path``, ``/usr/bin/chromium`` or ``chromium`` on
PATH; ``PIXELMINT_CHROMIUM`` to point elsewhere), never a browser of its own (no ``playwright
install``). Without it the browser tests skip, saying so. The async API, because the sync one
clashes with pytest-asyncio's loop.

- ``browser``: one Chromium for the session.
- ``desktop`` / ``phone``: a fresh browser context (its own cookies) at 1280×800, or at a phone's
  390×844 with touch; each page it opens records console errors (``page_errors(page)``), so a test
  can assert that the CSP blocked nothing.
- ``screenshot(page, name)``: a full-page PNG ``<name>-<desktop|phone>.png`` in
  ``$PIXELMINT_SCREENSHOTS_DIR`` (default ``test-artifacts/screenshots/``, ignored by git);
  ``index.txt`` there lists them with their pages' paths.
- ``no_horizontal_scroll(page)``: the page is no wider than the viewport.

A page test: ``async def test_x(live_service, desktop, screenshot): page = await desktop.new_page();
await page.goto(live_service + "/app/…")``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
PHONE = {
    "viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True,
    "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                  "Version/18.0 Mobile/15E148 Safari/604.1",
}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}


def chromium_path() -> str | None:
    configured = os.environ.get("PIXELMINT_CHROMIUM")
    if configured:
        return configured if Path(configured).exists() else None
    return shutil.which("chromium") or (str(Path("/usr/bin/chromium")) if Path("/usr/bin/chromium").exists() else None)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("browser tests skipped: Debian's chromium is not installed (apt-get install chromium; "
                    ".ci/run installs it)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("browser tests skipped: the playwright package is not installed (pip install -e '.[dev]')")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            await chromium.close()


def _track_errors(context: Any) -> None:
    def on_page(page: Any) -> None:
        errors: list[str] = []
        page.pixelmint_errors = errors
        page.set_default_timeout(15_000)
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))

    context.on("page", on_page)


def page_errors(page: Any) -> list[str]:
    """Console errors and uncaught exceptions of the page so far (CSP violations among them)."""
    return list(getattr(page, "pixelmint_errors", []))


@pytest.fixture
async def desktop(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(**DESKTOP)
    context.device_name = "desktop"
    _track_errors(context)
    yield context
    await context.close()


@pytest.fixture
async def phone(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(**PHONE)
    context.device_name = "phone"
    _track_errors(context)
    yield context
    await context.close()


@pytest.fixture(scope="session")
def screenshots_dir() -> Iterator[Path]:
    """The screenshots folder; at the end of the run ``index.txt`` there lists what this run took
    (file, then the page's path), and the run's summary names the folder."""
    folder = Path(os.environ.get("PIXELMINT_SCREENSHOTS_DIR") or ROOT / "test-artifacts" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    yield folder
    if TAKEN:  # with the entries another worker process of this run wrote
        index = folder / "index.txt"
        earlier = [line.split("\t") for line in index.read_text().splitlines()] if index.exists() else []
        fresh = {name: path for name, path in earlier if (folder / name).exists() and (folder / name).stat().st_mtime >= started}
        lines = [f"{name}\t{path}" for name, path in sorted({**fresh, **TAKEN}.items())]
        index.write_text("\n".join(lines) + "\n")


# Screenshots taken in this process: file name → the page's path and query.
TAKEN: dict[str, str] = {}


@pytest.fixture
def screenshot(screenshots_dir: Path) -> Callable[[Any, str], Awaitable[Path]]:
    async def take(page: Any, name: str) -> Path:
        path = screenshots_dir / f"{name}-{page.context.device_name}.png"
        await page.screenshot(path=str(path), full_page=True)
        url = urlsplit(page.url)
        TAKEN[path.name] = url.path + (f"?{url.query}" if url.query else "")
        return path

    return take


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TAKEN:
        folder = Path(os.environ.get("PIXELMINT_SCREENSHOTS_DIR") or ROOT / "test-artifacts" / "screenshots")
        terminalreporter.write_line(f"{len(TAKEN)} dashboard screenshots in {folder} (index.txt lists them)")


async def no_horizontal_scroll(page: Any) -> None:
    widths = await page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"{page.url} scrolls sideways: {widths[0]} px wide in a {widths[1]} px viewport"
