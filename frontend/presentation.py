"""What the page shows, computed without Streamlit: sentences, captions and the top-k chart."""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Sequence

import altair as alt
from PIL import Image, ImageOps

from frontend.backend_client import BackendError, BackendStatus, ImageResult, Prediction

PREVIEW_SIZE = (640, 640)


def preview(data: bytes) -> bytes | None:
    """A small upright PNG/JPEG of an uploaded image for the page, or None if Pillow cannot read it.

    The backend is the judge of what it accepts; this only decides whether the page can show a picture.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                image = ImageOps.exif_transpose(opened)
                image.thumbnail(PREVIEW_SIZE)
                has_alpha = image.mode in ("RGBA", "LA", "P")
                image = image.convert("RGBA" if has_alpha else "RGB")
                out = io.BytesIO()
                image.save(out, "PNG" if has_alpha else "JPEG", **({} if has_alpha else {"quality": 85}))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None
    return out.getvalue()


def percent(probability: float) -> str:
    """62% for most values; one decimal under 10% so small probabilities do not all read 0% or 1%."""
    value = probability * 100
    return f"{value:.1f}%" if value < 10 else f"{value:.0f}%"


def top1_sentence(result: ImageResult) -> str:
    if not result.predictions:
        return "The backend returned no classes."
    best = result.predictions[0]
    return f"Most likely: {best.label} ({percent(best.probability)})"


def timing_caption(result: ImageResult) -> str:
    return (
        f"{result.width} x {result.height} {result.format} · backend {result.backend_ms:.0f} ms · "
        f"round trip {result.round_trip_ms:.0f} ms · {result.model}"
    )


def predictions_chart(predictions: Sequence[Prediction]) -> alt.LayerChart:
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


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~$])")


def escape_markdown(text: str) -> str:
    """Text people chose (file names) shown literally in Streamlit's markdown, not as formatting."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def image_error_text(filename: str, error: BackendError) -> str:
    """A file the backend rejected, with the backend's explanation."""
    return f"**{escape_markdown(filename)}**: {escape_markdown(error.detail or error.title)}"


def not_classified_text(filename: str) -> str:
    return f"{escape_markdown(filename)} was not classified: see the message above."


def no_preview_text(filename: str) -> str:
    return f"{escape_markdown(filename)}: no preview (this page cannot display it)."


def error_text(error: BackendError) -> str:
    """The headline, then the backend's own explanation when it gave one (shown literally)."""
    return f"**{escape_markdown(error.title)}** {escape_markdown(error.detail)}".strip()


def status_text(status: BackendStatus) -> str:
    """The sidebar's status: a bold headline, then the details on a line of their own."""
    line = f"**{escape_markdown(status_line(status))}**"
    return f"{line}  \n{escape_markdown(status.detail)}" if status.detail else line


def status_line(status: BackendStatus) -> str:
    if status.ready:
        return "Ready"
    names = {
        "loading": "Loading the model",
        "unreachable": "Not answering",
        "not_configured": "Not configured",
        "unauthorized": "Refusing requests",
        "timeout": "Too slow to answer",
        "auth": "No identity token",
    }
    return names.get(status.state, f"Not ready ({status.state})")
