"""The page's "Show where the model looked": the client's explain(), the overlay and its legend, the toggle."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from backend.classifier import Preprocessing
from backend.saliency import TURBO, crop_box, heatmap_png
from frontend.backend_client import Backend, BackendError, Explanation, ImageInput
from frontend.config import FrontendSettings
from frontend.overlay import OverlayError, colour_bar, overlay
from frontend.presentation import escape_markdown
from frontend.previews import make_preview
from tests.helpers import CAT, ROOT, jpeg_bytes
from tests.helpers.fakes import BackendBehaviour, FakeServer, Reply

APP = str(ROOT / "frontend" / "app.py")
TOGGLE = "Show where the model looked"
CAT_SIZE = (451, 300)  # the cat sample's


def hot_corner_heatmap(width: int, height: int) -> bytes:
    """The backend's heat map of a ``width`` x ``height`` image whose crop's top left cell is the hottest."""
    scores = np.zeros((7, 7))
    scores[0, 0] = 1.0
    png, _, _ = heatmap_png(scores, crop_box(Preprocessing(), width, height), width, height)
    return png


def explanation_body(label: str = "tabby", png: bytes | None = None) -> dict[str, Any]:
    """A /explain answer in the backend's documented shape (backend.schemas.ExplainResponse)."""
    width, height = CAT_SIZE
    png = png if png is not None else hot_corner_heatmap(width, height)
    box = crop_box(Preprocessing(), width, height)
    scores = [[1.0 if (r, c) == (0, 0) else 0.0 for c in range(7)] for r in range(7)]
    return {
        "model": "efficientnet_lite0",
        "model_version": "0123456789abcdef",
        "filename": "cat.jpg",
        "format": "JPEG",
        "width": width,
        "height": height,
        "explained": {"index": 281, "label": label, "probability": 0.62},
        "predictions": [{"index": 281, "label": label, "probability": 0.62}],
        "method": "occlusion",
        "grid": 7,
        "images": 50,
        "scores": scores,
        "drops": scores,
        "crop_box": {"left": box.left, "top": box.top, "right": box.right, "bottom": box.bottom},
        "heatmap": {"media_type": "image/png", "width": 256, "height": 170, "data": base64.b64encode(png).decode()},
        "colormap": [list(c) for c in TURBO],
        "elapsed_ms": 250.0,
    }


# --- the overlay and the legend


def test_the_overlay_is_the_preview_with_the_heat_laid_over_it() -> None:
    preview = make_preview(jpeg_bytes(CAT))
    photo = Image.open(io.BytesIO(preview)).convert("RGB")
    shown = Image.open(io.BytesIO(overlay(preview, hot_corner_heatmap(*CAT_SIZE))))
    assert shown.size == photo.size
    before, after = np.asarray(photo, dtype=np.int16), np.asarray(shown.convert("RGB"), dtype=np.int16)
    width, height = photo.size
    box = crop_box(Preprocessing(), *CAT_SIZE)
    sx, sy = width / CAT_SIZE[0], height / CAT_SIZE[1]
    # Outside the crop (left of it) the photo is as it was, up to JPEG noise; in the hot cell it is much redder.
    outside = (slice(height // 3, 2 * height // 3), slice(0, int(box.left * sx) - 3))
    assert np.abs(after[outside] - before[outside]).mean() < 4
    cell = int((box.right - box.left) * sx / 7)
    hot = (
        slice(int(box.top * sy) + 3, int(box.top * sy) + cell - 3),
        slice(int(box.left * sx) + 3, int(box.left * sx) + cell - 3),
    )
    assert (after[hot][..., 0] - after[hot][..., 2]).mean() > (before[hot][..., 0] - before[hot][..., 2]).mean() + 40


@pytest.mark.parametrize(
    "heatmap",
    [b"not a png", jpeg_bytes(CAT), b"\x89PNG\r\n\x1a\n" + b"\0" * 40],
    ids=["text", "a jpeg", "a broken png"],
)
def test_a_heat_map_that_is_not_a_png_is_refused(heatmap: bytes) -> None:
    with pytest.raises(OverlayError):
        overlay(make_preview(jpeg_bytes(CAT)), heatmap)


def test_a_heat_map_claiming_a_huge_size_is_refused_from_its_header() -> None:
    out = io.BytesIO()
    Image.new("RGBA", (5000, 2)).save(out, "PNG")
    with pytest.raises(OverlayError, match="5000 x 2"):
        overlay(make_preview(jpeg_bytes(CAT)), out.getvalue())


def test_the_colour_bar_runs_from_the_first_colour_to_the_last() -> None:
    bar = np.asarray(Image.open(io.BytesIO(colour_bar(TURBO, width=200, height=10))))
    assert bar.shape == (10, 200, 3)
    assert tuple(bar[0, 0]) == TURBO[0]
    assert tuple(bar[0, -1]) == TURBO[-1]


# --- the client


def backend_at(url: str, **settings: Any) -> Backend:
    return Backend(FrontendSettings(backend_url=url, **settings))


def test_explain_returns_the_heat_map_and_its_class(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    behaviour.replies["/explain"] = Reply(200, explanation_body("tiger cat"))
    explanation = backend_at(backend.url).explain(ImageInput("cat.jpg", jpeg_bytes(CAT), "image/jpeg"))
    assert isinstance(explanation, Explanation)
    assert explanation.label == "tiger cat"
    assert explanation.grid == 7
    assert Image.open(io.BytesIO(explanation.heatmap_png)).size == (256, 170)
    assert explanation.colormap == TURBO
    assert backend.paths("POST") == ["/explain"]


def test_a_busy_backend_is_a_backend_error(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    behaviour.replies["/explain"] = Reply(
        503, {"detail": "The server is at capacity.", "code": "overloaded"}, {"Retry-After": "1"}
    )
    with pytest.raises(BackendError) as raised:
        backend_at(backend.url).explain(ImageInput("cat.jpg", jpeg_bytes(CAT)))
    assert raised.value.kind == "not_ready"
    assert raised.value.title == "The backend is busy. Retry in 1 s."


@pytest.mark.parametrize(
    "body",
    [
        {"explained": {"label": "tabby"}},
        {**explanation_body(), "heatmap": {"data": base64.b64encode(b"GIF89a").decode()}},
        {**explanation_body(), "heatmap": {"data": "not base64!"}},
        {**explanation_body(), "colormap": [[300, 0, 0], [0, 0, 0]]},
    ],
    ids=["missing fields", "not a png", "not base64", "not colours"],
)
def test_an_answer_not_in_the_documented_shape_is_a_server_error(
    backend: FakeServer, behaviour: BackendBehaviour, body: dict[str, Any]
) -> None:
    behaviour.replies["/explain"] = Reply(200, body)
    with pytest.raises(BackendError) as raised:
        backend_at(backend.url).explain(ImageInput("cat.jpg", jpeg_bytes(CAT)))
    assert raised.value.kind == "server_error"


def test_a_backend_too_slow_to_explain_is_a_timeout(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    behaviour.replies["/explain"] = Reply(200, explanation_body(), delay_s=2.0)
    with pytest.raises(BackendError) as raised:
        backend_at(backend.url, backend_timeout_s=0.3).explain(ImageInput("cat.jpg", jpeg_bytes(CAT)))
    assert raised.value.kind == "timeout"


# --- the page


@pytest.fixture
def page(backend: FakeServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppTest]:
    """The page on the fake backend, the cat sample picked and classified."""
    st.cache_resource.clear()
    st.cache_data.clear()
    monkeypatch.setenv("BACKEND_URL", backend.url)
    at = AppTest.from_file(APP, default_timeout=90)
    run(at)
    at.pills(key="samples").set_value(["cat"])
    run(at)
    yield at
    st.cache_resource.clear()
    st.cache_data.clear()


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def toggles(at: AppTest) -> list[Any]:
    return [t for t in at.toggle if t.label == TOGGLE]


def images(at: AppTest) -> list[Any]:
    return [image for element in at.get("image") for image in element.proto.imgs]


def test_the_toggle_shows_the_heat_map_over_the_photo_and_a_legend(
    page: AppTest, backend: FakeServer, behaviour: BackendBehaviour
) -> None:
    behaviour.replies["/explain"] = Reply(200, explanation_body("tabby"))
    [toggle] = toggles(page)
    assert len(images(page)) == 1  # the photo
    assert "/explain" not in backend.paths()  # nothing asked before the toggle is on
    toggle.set_value(True)
    run(page)
    assert len(images(page)) == 2  # the photo with its heat map over it, and the colour bar
    assert [c.value for c in page.caption if "influence" in c.value] == ["low → high influence on tabby"]
    assert backend.paths("POST").count("/explain") == 1
    # Off and on again: the explanation is remembered for this image, not asked again.
    toggles(page)[0].set_value(False)
    run(page)
    assert len(images(page)) == 1
    toggles(page)[0].set_value(True)
    run(page)
    assert len(images(page)) == 2
    assert backend.paths("POST").count("/explain") == 1


@pytest.mark.parametrize(
    ("reply", "headline"),
    [
        (
            Reply(503, {"detail": "The server is at capacity.", "code": "overloaded"}, {"Retry-After": "1"}),
            "The backend is busy. Retry in 1 s.",
        ),
        (Reply(504, {"detail": "The request took too long.", "code": "timeout"}), "The backend took too long."),
        (Reply(500, b"<html>oops</html>", {"Content-Type": "text/html"}), "The backend failed (500)."),
        (Reply(200, json.dumps({"explained": None}).encode()), "The backend's answer was not the expected JSON."),
    ],
    ids=["busy", "timeout", "html 500", "malformed"],
)
def test_a_failing_explanation_shows_a_short_message_and_the_photo(
    page: AppTest, backend: FakeServer, behaviour: BackendBehaviour, reply: Reply, headline: str
) -> None:
    behaviour.replies["/explain"] = reply
    toggles(page)[0].set_value(True)
    run(page)
    warnings = [str(w.value) for w in page.warning]
    assert len(warnings) == 1
    assert warnings[0].startswith("Where the model looked cannot be shown now.")
    assert warnings[0].endswith(escape_markdown(headline))
    assert len(images(page)) == 1  # the photo, as it was
    # A failure is not remembered: the next run asks again, and shows the heat map once the backend can.
    behaviour.replies["/explain"] = Reply(200, explanation_body())
    run(page)
    assert len(images(page)) == 2
    assert not page.warning


@pytest.mark.slow
def test_the_real_backend_explains_a_sample(live_backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    st.cache_resource.clear()
    st.cache_data.clear()
    monkeypatch.setenv("BACKEND_URL", live_backend)
    at = AppTest.from_file(APP, default_timeout=90)
    run(at)
    at.pills(key="samples").set_value(["coffee"])
    run(at)
    toggles(at)[0].set_value(True)
    run(at)
    assert len(images(at)) == 2
    assert [c.value for c in at.caption if "influence" in c.value] == ["low → high influence on espresso"]
    st.cache_resource.clear()
