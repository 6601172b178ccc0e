"""Sentences and the chart, computed without Streamlit; hostile text shown literally."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from frontend.backend_client import BackendError, BackendStatus, Classification, ClassProbability, ServedModel
from frontend.discovery import BackendLocation
from frontend.presentation import (
    config_error_text,
    error_text,
    escape_markdown,
    image_error_text,
    input_caption,
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


def result(*predictions: tuple[str, float], version: str = "") -> Classification:
    return Classification(
        filename="cat.jpg",
        format="JPEG",
        width=451,
        height=300,
        predictions=tuple(ClassProbability(i, label, p) for i, (label, p) in enumerate(predictions)),
        model="efficientnet_lite0",
        backend_ms=31.4,
        round_trip_ms=48.9,
        model_version=version,
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
    versioned = result(("tabby", 0.62), version="3f9a1c0d5e7b2a64")
    assert rendered(timing_caption(versioned)).text == (
        "451 x 300 JPEG · backend 31 ms · round trip 49 ms · efficientnet_lite0 version 3f9a1c0d5e7b2a64"
    )
    assert top1_sentence(result()) == "The backend returned no classes."


def test_the_chart_draws_every_class_by_name_in_rank_order() -> None:
    """One row per class, each with its bar (probability) and its label (percentage), the most probable on top."""
    chart = predictions_chart(result(("tabby", 0.62), ("tiger cat", 0.2), ("lynx", 0.01)).predictions).to_dict()

    rows = chart["layer"][0].get("data", chart.get("data", {})).get("values") or next(iter(chart["datasets"].values()))
    assert [(r["rank"], r["label"], r["text"]) for r in rows] == [
        (1, "tabby", "62%"),
        (2, "tiger cat", "20%"),
        (3, "lynx", "1.0%"),
    ]
    assert [r["probability"] for r in rows] == [0.62, 0.2, 0.01]  # the bars' length (x) comes from this field
    bars, labels = chart["layer"]
    assert bars["mark"]["type"] == "bar"
    for layer in (bars, labels):
        y, x = layer["encoding"]["y"], layer["encoding"]["x"]
        # A row per class name, in rank order (the backend's order: most probable first), no axis title.
        assert (y["field"], y["type"], y["title"]) == ("label", "nominal", None)
        assert y["sort"] == {"field": "rank", "order": "ascending"}
        # The bar's length is the probability, on a fixed 0..1 axis read as percent and titled so.
        assert (x["field"], x["type"], x["title"]) == ("probability", "quantitative", "probability")
        assert x["scale"]["domain"] == [0, 1]
        assert x["axis"] == {"format": "%"}
        # Hovering shows the class and its probability to two decimals of a percent.
        assert layer["encoding"]["tooltip"] == [
            {"field": "label", "type": "nominal", "title": "class"},
            {"field": "probability", "type": "quantitative", "format": ".2%"},
        ]
    # The percentage is written just right of the bar's end, starting there (not centred over it).
    assert labels["mark"]["type"] == "text"
    assert labels["encoding"]["text"] == {"field": "text", "type": "nominal"}
    assert labels["mark"]["align"] == "left"
    assert labels["mark"]["dx"] > 0
    # Height grows by a fixed step per class, so every class gets a row of its own however many there are.
    assert set(chart["height"]) == {"step"}
    assert chart["height"]["step"] >= 20


@pytest.mark.parametrize("text", [*HOSTILE, "*tabby*_cat", "<b>lynx</b>", r"a\b `c`"])
def test_the_chart_shows_labels_as_they_are(text: str) -> None:
    """Vega-Lite draws text, not Markdown: labels go into the chart unescaped (escaping would show backslashes)."""
    chart = predictions_chart(result((text, 0.5)).predictions).to_dict()

    assert chart["data"]["values"][0]["label"] == text


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


@pytest.mark.parametrize(
    ("state", "headline"),
    [
        ("ready", "Ready"),
        ("starting", "The backend is starting"),
        ("loading", "Loading the model"),
        ("unreachable", "Not answering"),
        ("not_configured", "Not configured"),
        ("metadata", "No metadata server"),
        ("unauthorized", "Refusing the frontend's requests"),
        ("timeout", "Too slow to answer"),
        ("auth", "No identity token"),
        ("failed", "Not ready (failed)"),
        ("STARTING", "Not ready (STARTING)"),  # states are matched exactly
        ("*stopping*_now", r"Not ready (\*stopping\*\_now)"),  # the backend's own words, escaped
    ],
)
def test_every_state_has_its_headline(state: str, headline: str) -> None:
    assert status_line(BackendStatus(None, state, "")) == headline


def test_an_errors_detail_is_cut_at_its_own_longer_limit() -> None:
    """The backend's words and the frontend's advice together: 1500 characters shown, not 500."""
    whole = BackendError("rejected", "Rejected.", "x" * 1500)
    cut = BackendError("rejected", "Rejected.", "y" * 1501)

    assert rendered(error_text(whole)).text == "Rejected. " + "x" * 1500
    assert rendered(error_text(cut)).text == "Rejected. " + "y" * 1499 + "…"


def test_input_caption() -> None:
    model = ServedModel("efficientnet_lite0", "imagenet", "onnxruntime", 1000, (224, 224, 3), None)

    assert input_caption(model) == "Input 224 x 224 x 3"


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
        timing_caption(result(("tabby", 0.62), version=text)): (
            f"451 x 300 JPEG · backend 31 ms · round trip 49 ms · efficientnet_lite0 version {as_shown(text)}"
        ),
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


@pytest.mark.parametrize(
    "text", ["`", "``a``", " x ", "`x` `y`", "a ` b", ":material/home:", "`x", "x`", "ab`", " x", "x ", "a `` b"]
)
def test_code_spans_hold_any_text(text: str) -> None:
    code = markdown_code(text)

    shown = rendered(code)
    assert shown.kinds == {"paragraph", "inline", "code_inline"}, code
    assert shown.text == text
    assert ":material/" not in code  # Streamlit rewrites it in the source, even inside code


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("http://127.0.0.1:8000", "`http://127.0.0.1:8000`"),
        ("X-ray", "`X-ray`"),
        ("iPhone X", "`iPhone X`"),
        ("a ` b", "``a ` b``"),  # the fence: one backtick more than the longest run inside
        ("a `` b ` c", "```a `` b ` c```"),
        ("`x", "`` `x ``"),  # a backtick at either end would join the fence: a space between them
        ("x`", "`` x` ``"),
        ("ab`", "`` ab` ``"),
        (" x", "`  x `"),  # a space at either end: CommonMark takes one off each side, so one is added
        ("x ", "` x  `"),
        ("", ""),
    ],
)
def test_code_spans_are_fenced_as_tightly_as_they_can_be(text: str, code: str) -> None:
    assert markdown_code(text) == code


@pytest.mark.parametrize("shown", [escape_markdown, markdown_code])
def test_text_up_to_the_limit_is_whole_and_longer_text_is_cut_to_it(shown: Callable[[str], str]) -> None:
    assert rendered(shown("x" * 500)).text == "x" * 500
    assert rendered(shown("x" * 501)).text == "x" * 499 + "…"
    assert rendered(shown("x" * 10_000)).text == "x" * 499 + "…"


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
