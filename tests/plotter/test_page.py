"""The page (Streamlit's ``AppTest``) with and without a plotter: unchanged without one, the chart in an
expander with one, and a slow or broken plotter costing a page run PLOTTER_TIMEOUT_S at most and one caption."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator

import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.helpers import ROOT
from tests.helpers.fakes import BackendBehaviour, FakeServer, Reply, fake_backend, running
from tests.plotter.conftest import RunningPlotter

pytestmark = pytest.mark.slow  # page runs with AppTest: a second or two each

APP = str(ROOT / "frontend" / "app.py")
EXPANDER = "Chart (R/ggplot2)"


@pytest.fixture
def page(frontend_env: None) -> Iterator[AppTest]:
    st.cache_resource.clear()
    st.cache_data.clear()
    yield AppTest.from_file(APP, default_timeout=90)
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture
def backend() -> Iterator[FakeServer]:
    with running(fake_backend(BackendBehaviour())) as server:
        yield server


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def pick_cat(at: AppTest) -> float:
    """Pick the cat sample; the seconds that page run took."""
    at.pills(key="samples").set_value(["cat"])
    started = time.monotonic()
    run(at)
    return time.monotonic() - started


def chart_expanders(at: AppTest) -> list[object]:
    return [e for e in at.expander if e.label == EXPANDER]


def captions(at: AppTest) -> list[str]:
    return [str(c.value) for c in at.caption]


def slow_caption(at: AppTest) -> bool:
    """The one caption a slow plotter gets: the page stopped waiting, or the request's own deadline passed
    (both are 1 s here, so either may come first)."""
    said = [caption for caption in captions(at) if caption.startswith("No chart")]
    return (
        len(said) == 1
        and re.fullmatch(r"No chart this time: The (chart did not come|plotter did not answer) within 1 s\.", said[0])
        is not None
    )


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, "PNG")
    return buffer.getvalue()


def test_without_a_plotter_the_page_is_unchanged(
    page: AppTest, backend: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKEND_URL", backend.url)
    run(page)
    pick_cat(page)
    assert any(s.value.startswith("Most likely:") for s in page.subheader)
    assert not chart_expanders(page)
    assert not any("chart" in caption.lower() for caption in captions(page))


def test_the_plotters_chart_is_shown_under_the_results(
    page: AppTest, backend: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    chart = png(800, 400)  # one image: bars, 800 x 400 (frontend.plotter_client.chart_size)
    with running(FakeServer(lambda _r: Reply(200, chart, {"Content-Type": "image/png"}))) as plotter:
        monkeypatch.setenv("BACKEND_URL", backend.url)
        monkeypatch.setenv("PLOTTER_URL", plotter.url)
        run(page)
        pick_cat(page)
        (expander,) = chart_expanders(page)
        assert len(plotter.requests) == 1
        assert "chart=bars" in plotter.requests[0].path
    (image,) = expander.get("image")  # type: ignore[attr-defined]
    (shown,) = image.proto.imgs
    assert shown.url.endswith(".png")  # as it came: not re-encoded as JPEG (text in charts would blur)


def test_a_slow_plotter_costs_a_page_run_its_budget_once_and_the_page_still_renders(
    page: AppTest, backend: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = Reply(200, png(800, 400), {"Content-Type": "image/png"}, delay_s=30)
    with running(FakeServer(lambda _r: slow)) as plotter:
        monkeypatch.setenv("BACKEND_URL", backend.url)
        monkeypatch.setenv("PLOTTER_URL", plotter.url)
        monkeypatch.setenv("PLOTTER_TIMEOUT_S", "1")
        run(page)  # the first run starts the previewer's processes: not what is measured
        waited = pick_cat(page)
        assert any(s.value.startswith("Most likely:") for s in page.subheader)  # the results are there
        assert slow_caption(page)
        # the budget (1 s) and the page's own work (a fake backend: milliseconds; more on a busy machine), far
        # from the plotter's 30 s
        assert 1.0 <= waited < 8.0, waited
        run(page)  # the next run does not ask (nor wait) again: the client leaves the plotter alone for a while
        assert slow_caption(page)
        assert len(plotter.requests) == 1


def test_a_broken_plotter_is_one_caption(page: AppTest, backend: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    with running(FakeServer(lambda _r: Reply(500, b"<html>oops</html>", {"Content-Type": "text/html"}))) as plotter:
        monkeypatch.setenv("BACKEND_URL", backend.url)
        monkeypatch.setenv("PLOTTER_URL", plotter.url)
        run(page)
        pick_cat(page)
    assert any(s.value.startswith("Most likely:") for s in page.subheader)
    said = [caption for caption in captions(page) if caption.startswith("No chart")]
    assert said == ["No chart this time: The plotter answered 500."]
    assert not page.error


def test_the_real_plotters_chart_on_the_page(
    page: AppTest, backend: FakeServer, plotter: RunningPlotter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKEND_URL", backend.url)
    monkeypatch.setenv("PLOTTER_URL", plotter.url)
    monkeypatch.setenv("PLOTTER_TIMEOUT_S", "10")
    run(page)
    pick_cat(page)
    (expander,) = chart_expanders(page)
    assert len(expander.get("image")) == 1  # type: ignore[attr-defined]
    assert not [caption for caption in captions(page) if caption.startswith("No chart")]
