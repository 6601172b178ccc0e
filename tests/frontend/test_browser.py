"""End to end in a real browser: Debian's Chromium, driven by Playwright, against the real frontend
(``python -m frontend``) and the real backend (embedded model). Leaves a screenshot in ``artifacts/``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import CAT, CAT_CLASSES, ROOT, frontend_server, need

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "artifacts"
SCREENSHOT = ARTIFACTS / "frontend-e2e.png"
PERCENT = re.compile(r"\(\d+(\.\d)?%\)")
COFFEE_CLASSES = frozenset({"espresso", "cup", "coffee mug", "eggnog"})
TIMEOUT_MS = 90_000


@pytest.fixture
def frontend(live_backend: str, tmp_path: Path) -> Iterator[str]:
    """The real ``python -m frontend`` on a free port, talking to the real backend."""
    with frontend_server(live_backend, tmp_path / "frontend.log") as url:
        yield url


@pytest.mark.browser
@pytest.mark.slow
def test_upload_a_photo_in_chromium(frontend: str) -> None:
    need(CHROMIUM.exists(), "Chromium is not installed: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "the playwright Python package is not installed (pip install playwright; no browser download)")
        raise

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(frontend, wait_until="domcontentloaded")
            page.get_by_text("Ready", exact=True).wait_for()  # the sidebar found the backend ready

            page.locator("input[type=file]").first.set_input_files(str(CAT))  # scikit-image's chelsea.png
            verdict = page.get_by_text("Most likely:").first
            verdict.wait_for()
            text = verdict.inner_text()
            assert any(f"Most likely: {name} (" in text for name in CAT_CLASSES), text
            assert PERCENT.search(text), text
            page.locator(".vega-embed").first.wait_for()  # the top-k chart is drawn
            page.get_by_text("round trip").first.wait_for()  # the timing caption

            # A sample photo with one click, classified beside the upload.
            page.get_by_role("button", name="Coffee").click()
            page.get_by_text("Most likely:").nth(1).wait_for()
            second = page.get_by_text("Most likely:").nth(1).inner_text()
            assert any(f"Most likely: {name} (" in second for name in COFFEE_CLASSES), second
            page.locator(".vega-embed").nth(1).wait_for()  # charts render a moment after the text
            assert page.locator(".vega-embed").count() == 2
            assert not page.get_by_text("Traceback").count()

            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
