"""Sentences and the chart, computed without Streamlit; hostile text shown literally."""

from __future__ import annotations

import pytest

from frontend.backend_client import BackendError, BackendStatus, Classification, ClassProbability, ServedModel
from frontend.discovery import BackendLocation
from frontend.presentation import (
    config_error_text,
    error_text,
    escape_markdown,
    image_error_text,
    location_caption,
    location_text,
    markdown_code,
    model_text,
    no_preview_text,
    not_classified_text,
    percent,
    predictions_chart,
    status_line,
    status_text,
    timing_caption,
    too_many_images_text,
    top1_sentence,
)
from tests.frontend.hostile_text import as_shown, hostile_texts, rendered, streamlit_rewrites

PIXEL = "http://127.0.0.1:9/pixel"
HOSTILE = hostile_texts(PIXEL)
PLAIN = frozenset({"paragraph", "inline", "text"})  # a paragraph of plain text, nothing else


def result(*predictions: tuple[str, float]) -> Classification:
    return Classification(
        filename="cat.jpg",
        format="JPEG",
        width=451,
        height=300,
        predictions=tuple(ClassProbability(i, label, p) for i, (label, p) in enumerate(predictions)),
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
    assert rendered(timing_caption(cat)).text == (
        "451 x 300 JPEG · backend 31 ms · round trip 49 ms · efficientnet_lite0"
    )
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


def test_file_names_are_shown_literally() -> None:
    rejected = BackendError("rejected", "This image could not be classified.", "*draft*_v2.jpg: not an image.")

    assert escape_markdown("[cat]_*final*.jpg") == r"\[cat\]\_\*final\*\.jpg"
    shown = rendered(image_error_text("*draft*_v2.jpg", rejected))
    assert shown.text == "*draft*_v2.jpg: *draft*_v2.jpg: not an image."
    assert shown.kinds == PLAIN | {"strong"}  # the file name in bold, and nothing else
    assert rendered(not_classified_text("a_b.jpg")).text == "a_b.jpg was not classified: see the message above."
    assert no_preview_text("notes.jpg") == r"notes\.jpg: no preview (this page cannot display it)."


def test_error_and_status_texts() -> None:
    error = BackendError("not_ready", "The backend is not ready yet.", "The model is loading.")

    assert rendered(error_text(error)).text == "The backend is not ready yet. The model is loading."
    assert rendered(error_text(error)).kinds == PLAIN | {"strong"}
    refused = BackendError("unauthorized", "Refused (401).", "Needs 'Authorization: Bearer <Google ID token>'.")
    # Markdown would swallow <...> as an HTML tag: the backend's words are escaped to be shown as sent.
    assert rendered(error_text(refused)).text == "Refused (401). Needs 'Authorization: Bearer <Google ID token>'."
    assert status_text(BackendStatus(None, "loading", "")) == "**Loading the model**"
    assert rendered(status_text(BackendStatus(None, "unreachable", "No answer."))).text == "Not answering\nNo answer."
    assert status_text(BackendStatus(None, "failed", "")) == "**Not ready (failed)**"


# --- hostile text: whatever the backend or a file name says is shown as those characters


@pytest.mark.parametrize("text", HOSTILE)
def test_escaped_text_is_plain_text_that_reads_the_same(text: str) -> None:
    escaped = escape_markdown(text)

    shown = rendered(escaped)
    assert shown.kinds == PLAIN, escaped  # no image, link, HTML, code, emphasis, table, heading, list, ...
    assert shown.text == as_shown(text).strip()
    assert streamlit_rewrites(escaped) == [], escaped  # no icon, logo, emoji, arrow, colour or bare link


@pytest.mark.parametrize("text", HOSTILE)
def test_escaped_text_stays_literal_inside_the_pages_sentences(text: str) -> None:
    """Escaped pieces are safe next to the page's own Markdown (bold headlines, line breaks)."""
    label = result((text, 0.62))
    model = ServedModel(text, text, text, 1000, (224, 224, 3), None)
    error = BackendError("rejected", text, text)
    location = BackendLocation(text, "cloud_run", text)
    cases = {
        top1_sentence(label): f"Most likely: {as_shown(text)} (62%)",
        timing_caption(label): "451 x 300 JPEG · backend 31 ms · round trip 49 ms · efficientnet_lite0",
        model_text(model): f"Model {as_shown(text)}\n{as_shown(text)} · {as_shown(text)} · 1000 classes",
        error_text(error): f"{as_shown(text)} {as_shown(text)}",
        image_error_text(text, error): f"{as_shown(text)}: {as_shown(text)}",
        not_classified_text(text): f"{as_shown(text)} was not classified: see the message above.",
        no_preview_text(text): f"{as_shown(text)}: no preview (this page cannot display it).",
        status_text(BackendStatus(None, text, text)): f"Not ready ({as_shown(text)})\n{as_shown(text)}",
        location_caption(location): f"Found through {as_shown(text)}.",
        config_error_text(ValueError(text)): f"The frontend's configuration is invalid: {as_shown(text)}",
    }
    for markdown, expected in cases.items():
        shown = rendered(markdown)
        assert shown.kinds <= PLAIN | {"strong", "hardbreak"}, markdown
        assert shown.text == expected, markdown
        assert streamlit_rewrites(markdown) == [], markdown
    assert status_line(BackendStatus(None, text, "")) == f"Not ready ({escape_markdown(text)})"
    code = rendered(location_text(location))
    assert code.kinds == {"paragraph", "inline", "code_inline"}
    assert code.text == as_shown(text)


@pytest.mark.parametrize("text", ["`", "``a``", " x ", "`x` `y`", "a ` b", ":material/home:"])
def test_code_spans_hold_any_text(text: str) -> None:
    code = markdown_code(text)

    shown = rendered(code)
    assert shown.kinds == {"paragraph", "inline", "code_inline"}, code
    assert shown.text == text
    assert ":material/" not in code  # Streamlit rewrites it in the source, even inside code


def test_normal_labels_look_the_same() -> None:
    """Ordinary class names and file names are unchanged, or only backslash-escaped (shown the same)."""
    for label in ("tabby", "tiger cat", "Egyptian cat", "espresso"):
        assert escape_markdown(label) == label
    for label in ("black-and-tan coonhound", "jack-o'-lantern", "carpenter's kit, tool kit", "IMG_2041.JPG"):
        assert rendered(escape_markdown(label)).text == label
        assert "\u2060" not in escape_markdown(label)  # no word joiner where nothing needs breaking


def test_long_text_is_cut() -> None:
    shown = rendered(escape_markdown("x" * 10_000))

    assert len(shown.text) == 500
    assert shown.text.endswith("…")


def test_too_many_images_says_how_many_and_what_to_do() -> None:
    text = too_many_images_text(20, 16)

    assert text.startswith("20 images were chosen; only the first 16 are classified.")
    assert "MAX_FILES" in text
