"""End to end in a real browser: Debian's Chromium, driven by Playwright, against the real frontend
(``python -m frontend``) and the real backend (embedded model). Leaves a screenshot in ``artifacts/``."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.frontend.hostile_text import WORD_JOINER, as_shown, hostile_texts
from tests.helpers import (
    CAT,
    CAT_CLASSES,
    COFFEE_CLASSES,
    ROOT,
    chromium,
    free_port,
    frontend_server,
    jpeg_bytes,
    server_process,
)
from tests.helpers.fakes import MODEL_INFO, BackendBehaviour, FakeServer, Reply, fake_backend, running

ARTIFACTS = ROOT / "artifacts"
SCREENSHOT = ARTIFACTS / "frontend-e2e.png"
PERCENT = re.compile(r"\(\d+(\.\d)?%\)")
TIMEOUT_MS = 90_000


@pytest.fixture
def frontend(live_backend: str, tmp_path: Path) -> Iterator[str]:
    """The real ``python -m frontend`` on a free port, talking to the real backend."""
    with frontend_server(live_backend, tmp_path / "frontend.log") as url:
        yield url


@pytest.mark.browser
@pytest.mark.slow
def test_upload_a_photo_in_chromium(frontend: str) -> None:
    with chromium() as browser:
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
    assert SCREENSHOT.stat().st_size > 10_000


@pytest.mark.browser
@pytest.mark.slow
def test_a_session_landing_on_another_instance_asks_for_the_uploads_again(live_backend: str, tmp_path: Path) -> None:
    """Cloud Run's session affinity is best effort: the page's websocket may reconnect to another instance,
    which has a new session and none of the uploaded bytes. Here the first frontend stops and a second one
    starts on the same address; the page must not list files it will never classify."""
    port = free_port()
    with chromium() as browser:
        from playwright.sync_api import expect

        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.set_default_timeout(TIMEOUT_MS)
        uploader = page.get_by_test_id("stFileUploader")
        sockets: list[str] = []
        page.on("websocket", lambda socket: sockets.append(socket.url))
        with frontend_server(live_backend, tmp_path / "first.log", port) as url:
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_text("Ready", exact=True).wait_for()
            page.locator("input[type=file]").first.set_input_files(str(CAT))
            page.get_by_role("button", name="Coffee").click()
            page.get_by_text("Most likely:").nth(1).wait_for()
            page.locator(".vega-embed").nth(1).wait_for()  # the page is complete: both charts drawn
            assert "chelsea.png" in uploader.inner_text()
        with frontend_server(live_backend, tmp_path / "second.log", port):
            # The page reconnects by itself: a new websocket, to the new instance, a new session there.
            # Depending on timing, Streamlit runs the page again at once or keeps showing the old results until
            # the visitor does something; here the visitor picks another sample photo.
            deadline = time.monotonic() + TIMEOUT_MS / 1000
            while len(sockets) < 2 and time.monotonic() < deadline:
                page.wait_for_timeout(200)
            assert len(sockets) == 2, sockets
            page.get_by_role("button", name="Cat").click()
            # Once that run ends (Streamlit shows the old elements until then), no file is listed that this
            # instance lacks, and the sample photos (no uploads) are classified.
            page.wait_for_function(
                """() => {
                    const boxes = document.querySelectorAll('[data-testid=stFileUploader]');
                    return boxes.length === 1 && !boxes[0].innerText.includes('chelsea.png');
                }""",
                timeout=TIMEOUT_MS,
            )
            expect(page.get_by_text("Most likely:")).to_have_count(2, timeout=TIMEOUT_MS)
            expect(page.get_by_text("chelsea.png")).to_have_count(0)
            page.locator("input[type=file]").first.set_input_files(str(CAT))  # uploading again works
            expect(page.get_by_text("Most likely:")).to_have_count(3, timeout=TIMEOUT_MS)
            assert "chelsea.png" in uploader.inner_text()
            assert not page.get_by_text("Traceback").count()


@pytest.fixture
def pixel() -> Iterator[FakeServer]:
    """A web server standing in for an attacker's: the page must never make the browser call it."""
    with running(FakeServer(lambda request: Reply(200, b"GIF89a"))) as server:
        yield server


@pytest.mark.browser
@pytest.mark.slow
def test_a_hostile_backend_in_chromium(pixel: FakeServer, tmp_path: Path) -> None:
    """A fake backend answers with class labels, a model name and error details made of Markdown, HTML,
    LaTeX and Streamlit's own extensions, with images and links pointing at ``pixel``. The page shows
    each as the characters it is made of, and the browser never calls ``pixel``. A file over
    MAX_UPLOAD_MB is refused by Streamlit's upload widget, with a message."""
    hostile = hostile_texts(pixel.url)
    behaviour = BackendBehaviour(labels={f"{i}.jpg": text for i, text in enumerate(hostile)})
    behaviour.model_info = {**MODEL_INFO, "name": f"![model]({pixel.url}/model.png) :material_home:"}
    bad_name = f"![file]({pixel.url}/file.png) $x$.jpg"
    behaviour.reject = {bad_name}
    behaviour.reject_detail = f'<img src="{pixel.url}/detail.png"> :red[not an image] -> {pixel.url}/why'
    uploads = [
        {"name": f"{i}.jpg", "mimeType": "image/jpeg", "buffer": jpeg_bytes(CAT, (64 + i, 43))}
        for i in range(len(hostile))
    ]
    uploads.append({"name": bad_name, "mimeType": "image/jpeg", "buffer": b"not an image"})
    uploads.append({"name": "big.jpg", "mimeType": "image/jpeg", "buffer": b"\xff\xd8\xff" + b"\0" * 1_500_000})
    env = {"MAX_FILES": str(len(uploads)), "MAX_UPLOAD_MB": "1"}

    with (
        running(fake_backend(behaviour)) as backend,
        server_process(
            "frontend", "/_stcore/health", {"BACKEND_URL": backend.url, **env}, tmp_path / "fe.log", 60
        ) as frontend,
        chromium() as browser,
    ):
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(frontend, wait_until="domcontentloaded")
        page.get_by_text("Ready", exact=True).wait_for()
        page.locator("input[type=file]").first.set_input_files(uploads)  # type: ignore[arg-type]
        verdicts = page.get_by_text("Most likely:")
        verdicts.nth(len(hostile) - 1).wait_for()
        page.locator(".vega-embed").nth(len(hostile) - 1).wait_for()
        page.get_by_text("File must be 1.0MB or smaller.").wait_for()  # Streamlit's own message
        # The chart's tooltip shows the label too: hover the top bar of the first chart.
        chart = page.locator(".vega-embed").first.bounding_box()
        assert chart is not None
        page.mouse.move(chart["x"] + chart["width"] * 0.4, chart["y"] + 12)
        page.wait_for_timeout(2000)  # time for any image, font or link prefetch to be requested

        shown = [text.replace(WORD_JOINER, "") for text in verdicts.all_inner_texts()]
        assert shown == [f"Most likely: {as_shown(text)} (62%)" for text in hostile]
        sidebar = page.locator("[data-testid=stSidebar]").inner_text().replace(WORD_JOINER, "")
        assert f"Model ![model]({pixel.url}/model.png) :material_home:" in sidebar
        main = page.locator("[data-testid=stMain]").inner_text().replace(WORD_JOINER, "")
        assert f"{as_shown(bad_name)}: {as_shown(behaviour.reject_detail)}" in main
        outside = page.evaluate(
            """(pixel) => [...document.querySelectorAll('img[src], a[href], [style*="url("]')]
                .map(e => e.getAttribute('src') || e.getAttribute('href') || e.getAttribute('style'))
                .filter(v => v.includes(pixel))""",
            pixel.url,
        )
        assert outside == []
        assert not page.get_by_text("Traceback").count()
        assert len(backend.paths("POST")) == len(hostile) + 1  # big.jpg never reached the backend
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "frontend-hostile.png"), full_page=True)
    assert pixel.requests == []  # nothing on the page made the browser fetch the attacker's URL


@pytest.mark.browser
@pytest.mark.slow
def test_the_monitoring_page_shows_drift_in_chromium(tmp_path: Path) -> None:
    """The Monitoring page (a second page of the app) on a synthetic prediction log whose last day is darker and
    has another class mix: the headline and the badges say drift, the charts are drawn, no traceback."""
    from tests.monitoring.synthetic_log import Drift, write_log  # only this test needs it

    log = write_log(tmp_path / "log", seed=11, drift=Drift(brightness=-35, class_mix=True))
    env = {"BACKEND_URL": "http://127.0.0.1:9", "PREDICTION_LOG_DIR": str(log)}
    with (
        server_process("frontend", "/_stcore/health", env, tmp_path / "fe.log", 60) as frontend,
        chromium() as browser,
    ):
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(frontend, wait_until="domcontentloaded")
        page.get_by_role("link", name="Monitoring").click()  # the sidebar's navigation
        page.get_by_text("Drift in class distribution and brightness.").wait_for()
        assert page.url.endswith("/monitoring")
        page.locator(".vega-embed").nth(8).wait_for()  # classes, 7 distributions, the daily series
        page.get_by_test_id("stDataFrame").wait_for()  # the status table
        # a badge per column, in words (after its icon's name) and colour: red for drift, green for stable
        badges = page.locator(".stMarkdownBadge")
        words = [text.split()[-1] for text in badges.all_inner_texts()]
        assert words == ["drift", "stable", "stable", "stable", "drift", "stable", "stable", "stable"]
        colours = badges.evaluate_all("(all) => all.map(e => getComputedStyle(e).backgroundColor)")
        assert colours[0] == colours[4] != colours[1]
        assert not page.get_by_text("Traceback").count()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "frontend-monitoring.png"), full_page=True)
