"""What the page shows, computed without Streamlit: sentences, captions and the top-k chart.

Every function here that returns text for the page returns Markdown source (Streamlit renders its
text elements as Markdown), in which whatever the backend or a person chose (class labels, the model's
name, error details, file names, URLs) is passed through ``escape_markdown`` or ``markdown_code``, and
so is shown as the literal characters it is made of.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import altair as alt

from frontend.backend_client import BackendError, BackendStatus, Classification, ClassProbability, ServedModel
from frontend.discovery import BackendLocation


def percent(probability: float) -> str:
    """62% for most values; one decimal under 10% so small probabilities do not all read 0% or 1%."""
    value = probability * 100
    return f"{value:.1f}%" if value < 10 else f"{value:.0f}%"


def top1_sentence(result: Classification) -> str:
    if not result.predictions:
        return "The backend returned no classes."
    best = result.predictions[0]
    return f"Most likely: {escape_markdown(best.label)} ({percent(best.probability)})"


def timing_caption(result: Classification) -> str:
    """Size, format, times, and which model answered: its name and version (as the backend said them, escaped)."""
    version = f" version {escape_markdown(result.model_version)}" if result.model_version else ""
    return (
        f"{result.width} x {result.height} {escape_markdown(result.format)} · backend {result.backend_ms:.0f} ms · "
        f"round trip {result.round_trip_ms:.0f} ms · {escape_markdown(result.model)}{version}"
    )


def model_text(model: ServedModel) -> str:
    """The sidebar's model line: its name in bold, then weights, runtime and number of classes."""
    details = " · ".join(escape_markdown(part) for part in (model.weights, model.runtime) if part)
    return f"**Model** {escape_markdown(model.name)}  \n{details} · {model.num_classes} classes"


def input_caption(model: ServedModel) -> str:
    return "Input " + " x ".join(str(n) for n in model.input_size)


def location_text(location: BackendLocation) -> str:
    """The backend's URL, in code style."""
    return markdown_code(location.url)


def location_caption(location: BackendLocation) -> str:
    return f"Found through {escape_markdown(location.description)}."


def config_error_text(error: Exception) -> str:
    return f"The frontend's configuration is invalid: {escape_markdown(str(error))}"


def too_many_images_text(chosen: int, limit: int) -> str:
    """More images than MAX_FILES in one go: only the first ``limit`` are classified."""
    return (
        f"{chosen} images were chosen; only the first {limit} are classified. Remove some to classify the "
        f"others (whoever runs this page can raise the limit with the MAX_FILES setting)."
    )


def predictions_chart(predictions: Sequence[ClassProbability]) -> alt.LayerChart:
    """A horizontal bar per class, most probable on top, labelled with the class name and its percentage."""
    rows = [
        {"rank": rank, "label": p.label, "probability": p.probability, "text": percent(p.probability)}
        for rank, p in enumerate(predictions, start=1)
    ]
    data = alt.Data(values=rows)  # type: ignore[no-untyped-call]
    base = alt.Chart(data).encode(
        y=alt.Y("label:N", sort=alt.EncodingSortField(field="rank", order="ascending"), title=None),
        x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"), title="probability"),
        tooltip=[alt.Tooltip("label:N", title="class"), alt.Tooltip("probability:Q", format=".2%")],
    )
    bars = base.mark_bar()
    labels = base.mark_text(align="left", dx=4).encode(text="text:N")
    chart: alt.LayerChart = (bars + labels).properties(height=alt.Step(26))
    return chart


WORD_JOINER = "\u2060"  # invisible, and no line break either side
# Every ASCII punctuation character: CommonMark lets each be escaped with a backslash, and any of them
# can start a construct (emphasis, links, images, HTML, code, tables, math, Streamlit's :color[...]).
_ASCII_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
_WHITESPACE = re.compile(r"\s+")
# Characters that change how text is shown without being seen: controls, and bidirectional overrides
# (a file named "photo", U+202E, "gpj.exe" would read "photoexe.jpg").
_INVISIBLE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Streamlit rewrites some text after Markdown's escapes are gone (mdast text nodes), so a backslash
# does not stop these. A word joiner between their characters does, and shows nothing:
_SHORTCODE = re.compile(r":(?=[\w+-])")  # :material_icon:, :streamlit: (its logo), :emoji_name:
_ARROW = re.compile(r"(?<=<)(?=-)|(?<=-)(?=[->])|(?<=[<>~])(?==)")  # ->, <-, <->, --, >=, <=, ~= become arrows
_AUTOLINK = re.compile(r"(?i)(?<!\w)(?=https?:|www\.)")  # GitHub-style bare links: http://..., www....
MAX_SHOWN_CHARS = 500


def escape_markdown(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """``text`` as Markdown that Streamlit shows as exactly these characters, on one line.

    Every ASCII punctuation character is backslash-escaped (no Markdown, HTML, LaTeX ``$...$`` or
    Streamlit ``:red[...]`` directive can start), and a word joiner (U+2060, invisible) breaks what
    Streamlit would still turn into something else: ``:name:`` icons, logo and emoji, typographic
    arrows, bare ``http://``/``www.`` links and e-mail addresses. Runs of whitespace become one space
    (as HTML shows them anyway), invisible controls become U+FFFD, and text over ``limit`` characters
    is cut with an ellipsis.
    """
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = _INVISIBLE.sub("\ufffd", _WHITESPACE.sub(" ", text))
    text = _SHORTCODE.sub(":" + WORD_JOINER, text)
    text = _ARROW.sub(WORD_JOINER, text)
    text = _AUTOLINK.sub(WORD_JOINER, text)
    text = text.replace("@", "@" + WORD_JOINER)
    return _ASCII_PUNCTUATION.sub(r"\\\1", text)


def markdown_code(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """``text`` as an inline code span (monospace), shown as exactly these characters.

    Backslashes do not work inside code spans: the span is fenced with one more backtick than the
    longest run of backticks in ``text``. Streamlit replaces ``:material/`` in the Markdown source
    before parsing, code spans included, so that gets a word joiner too.
    """
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = _INVISIBLE.sub("\ufffd", _WHITESPACE.sub(" ", text)).replace(":material/", ":" + WORD_JOINER + "material/")
    if not text:
        return ""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text[0] in "` " or text[-1] in "` " else ""  # CommonMark strips one space each side
    return f"{fence}{pad}{text}{pad}{fence}"


def image_error_text(filename: str, error: BackendError) -> str:
    """A file the backend rejected, with the backend's explanation."""
    return f"**{escape_markdown(filename)}**: {escape_markdown(error.detail or error.title)}"


def not_classified_text(filename: str) -> str:
    return f"{escape_markdown(filename)} was not classified: see the message above."


def no_preview_text(filename: str) -> str:
    return f"{escape_markdown(filename)}: no preview (this page cannot display it)."


# An error's detail is the backend's words (already cut to 500 characters) and the frontend's own advice
# on what to grant or set: room for both, so that the advice is never the part cut off.
MAX_DETAIL_CHARS = 1500


def error_text(error: BackendError) -> str:
    """The headline, then the explanation: the backend's own when it gave one, and what to do (shown literally)."""
    return f"**{escape_markdown(error.title)}** {escape_markdown(error.detail, MAX_DETAIL_CHARS)}".strip()


def status_text(status: BackendStatus) -> str:
    """The status: a bold headline, then the details on a line of their own."""
    line = f"**{status_line(status)}**"
    return f"{line}  \n{escape_markdown(status.detail)}" if status.detail else line


def status_line(status: BackendStatus) -> str:
    """The status in a few words, for the sidebar (Markdown: an unknown state the backend reported is escaped).
    What is wrong, and what to do about it, is said once, on the page (``error_text(status.problem)``)."""
    if status.ready:
        return "Ready"
    names = {
        "starting": "The backend is starting",
        "loading": "Loading the model",
        "unreachable": "Not answering",
        "not_configured": "Not configured",
        "metadata": "No metadata server",
        "unauthorized": "Refusing the frontend's requests",
        "timeout": "Too slow to answer",
        "auth": "No identity token",
    }
    return names.get(status.state) or f"Not ready ({escape_markdown(status.state)})"


def influence_legend(label: str) -> str:
    """Under the heat map's colour bar: what its colours mean, for the class it explains."""
    return f"low → high influence on {escape_markdown(label)}"


def explanation_error_text(error: BackendError) -> str:
    """A failed explanation, in one short line: the headline of what went wrong (busy, too slow, ...)."""
    return f"Where the model looked cannot be shown now. {escape_markdown(error.title)}"
