"""Sentences, previews and the chart, computed without Streamlit."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from frontend.backend_client import BackendError, BackendStatus, ImageResult, Prediction
from frontend.presentation import (
    error_text,
    escape_markdown,
    image_error_text,
    no_preview_text,
    not_classified_text,
    percent,
    predictions_chart,
    preview,
    status_text,
    timing_caption,
    top1_sentence,
)
from tests.support import CAT, jpeg_bytes


def result(*predictions: tuple[str, float]) -> ImageResult:
    return ImageResult(
        filename="cat.jpg",
        format="JPEG",
        width=451,
        height=300,
        predictions=tuple(Prediction(i, label, p) for i, (label, p) in enumerate(predictions)),
        model="efficientnet_lite0",
        backend_ms=31.4,
        round_trip_ms=48.9,
    )


@pytest.mark.parametrize(
    ("probability", "text"), [(0.6213, "62%"), (0.999, "100%"), (0.1, "10%"), (0.0625, "6.2%"), (0.0004, "0.0%")]
)
def test_percent(probability: float, text: str) -> None:
    assert percent(probability) == text


def test_top1_and_timing_sentences() -> None:
    cat = result(("tabby", 0.62), ("tiger cat", 0.2))

    assert top1_sentence(cat) == "Most likely: tabby (62%)"
    assert timing_caption(cat) == "451 x 300 JPEG · backend 31 ms · round trip 49 ms · efficientnet_lite0"
    assert top1_sentence(result()) == "The backend returned no classes."


def test_the_chart_draws_every_class_by_name_in_rank_order() -> None:
    chart = predictions_chart(result(("tabby", 0.62), ("tiger cat", 0.2), ("lynx", 0.01)).predictions).to_dict()

    rows = chart["layer"][0].get("data", chart.get("data", {})).get("values") or next(iter(chart["datasets"].values()))
    assert [(r["rank"], r["label"], r["text"]) for r in rows] == [
        (1, "tabby", "62%"),
        (2, "tiger cat", "20%"),
        (3, "lynx", "1.0%"),
    ]
    bars = chart["layer"][0]
    assert bars["mark"]["type"] == "bar"
    assert bars["encoding"]["y"]["field"] == "label"
    assert bars["encoding"]["y"]["sort"] == {"field": "rank", "order": "ascending"}
    assert bars["encoding"]["x"]["scale"]["domain"] == [0, 1]


def test_preview_is_small_and_readable() -> None:
    shown = preview(CAT.read_bytes())  # a 451x300 PNG without alpha -> JPEG

    assert shown is not None
    with Image.open(io.BytesIO(shown)) as image:
        assert image.format == "JPEG"
        assert image.size == (451, 300)

    big = preview(jpeg_bytes(CAT, (2000, 1330)))
    assert big is not None
    with Image.open(io.BytesIO(big)) as image:
        assert max(image.size) == 640


def test_preview_keeps_transparency() -> None:
    out = io.BytesIO()
    Image.new("RGBA", (32, 32), (255, 0, 0, 128)).save(out, "PNG")

    shown = preview(out.getvalue())

    assert shown is not None
    with Image.open(io.BytesIO(shown)) as image:
        assert (image.format, image.mode) == ("PNG", "RGBA")


def test_preview_follows_exif_orientation() -> None:
    """A phone photo stored sideways with an EXIF rotation is shown upright."""
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    Image.new("RGB", (60, 40), "white").save(out, "JPEG", exif=exif)

    shown = preview(out.getvalue())

    assert shown is not None
    with Image.open(io.BytesIO(shown)) as image:
        assert image.size == (40, 60)


@pytest.mark.parametrize("data", [b"", b"not an image at all", jpeg_bytes(CAT)[:2000]])
def test_preview_of_unreadable_bytes_is_none(data: bytes) -> None:
    assert preview(data) is None


def test_file_names_are_shown_literally() -> None:
    rejected = BackendError("rejected", "This image could not be classified.", "*draft*_v2.jpg: not an image.")

    assert escape_markdown("[cat]_*final*.jpg") == r"\[cat\]\_\*final\*.jpg"
    assert image_error_text("*draft*_v2.jpg", rejected) == r"**\*draft\*\_v2.jpg**: \*draft\*\_v2.jpg: not an image."
    assert not_classified_text("a_b.jpg") == r"a\_b.jpg was not classified: see the message above."
    assert no_preview_text("notes.jpg") == "notes.jpg: no preview (this page cannot display it)."


def test_error_and_status_texts() -> None:
    error = BackendError("not_ready", "The backend is not ready yet.", "The model is loading.")

    assert error_text(error) == "**The backend is not ready yet.** The model is loading."
    refused = BackendError("unauthorized", "Refused (401).", "Needs 'Authorization: Bearer <Google ID token>'.")
    # Markdown would swallow <...> as an HTML tag: the backend's words are escaped to be shown as sent.
    assert error_text(refused) == r"**Refused (401).** Needs 'Authorization: Bearer \<Google ID token\>'."
    assert status_text(BackendStatus(None, "loading", "")) == "**Loading the model**"
    assert status_text(BackendStatus(None, "unreachable", "No answer.")) == "**Not answering**  \nNo answer."
    assert status_text(BackendStatus(None, "failed", "")) == "**Not ready (failed)**"
