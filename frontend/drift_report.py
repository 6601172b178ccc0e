"""The drift report as one self-contained HTML file: tables, and charts as inline PNG images drawn with Pillow.

Why PNG from Pillow: the report must open offline (a scheduled job's artifact, read later from a bucket), so
no script from a CDN. Altair's ``chart.save("report.html")`` loads vega/vega-lite/vega-embed from a CDN; its
``inline=True`` needs vl-convert, which is not installed in the frontend image (nor is matplotlib, a dev tool
here). Pillow is (Streamlit needs it), and a few bars and lines are all these charts are. A Content-Security-Policy
in the page forbids scripts and any fetch at all: only the inline images and style load.

Everything that comes from the log (class labels, model versions: the model's files and the backend wrote them)
is passed through ``html.escape``; in the charts, labels are pixels.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import re
from html import escape as _escape

from PIL import Image, ImageDraw, ImageFont

from frontend.drift import DESCRIPTIONS, P_VALUE, PSI_DRIFT, PSI_WATCH, ColumnDrift, Monitoring

__all__ = ["STATUS_COLOURS", "html_report"]

STATUS_COLOURS = {"drift": "#c62828", "watch": "#ef8f00", "stable": "#2e7d32", "too few records": "#757575"}
REFERENCE_COLOUR = (120, 144, 156)
CURRENT_COLOUR = (230, 81, 0)
MAX_LABEL_CHARS = 28
# Characters that change how text reads without being seen: controls and bidirectional overrides (as
# frontend.presentation replaces them on the page).
_INVISIBLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escape(text: str) -> str:
    """``text`` as HTML that shows exactly its characters; invisible controls become U+FFFD."""
    return _escape(_INVISIBLE.sub("\ufffd", text), quote=True)


CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#212121;max-width:70rem}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}
th{background:#f5f5f5}.status{color:#fff;font-weight:bold;border-radius:.3rem;padding:.1rem .5rem}
.charts{display:flex;flex-wrap:wrap;gap:1rem}.charts figure{margin:0}figcaption{font-size:.9rem}
.note{background:#fff8e1;padding:.5rem;border-left:4px solid #ef8f00}
"""


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size)


def _png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _legend(draw: ImageDraw.ImageDraw, x: int, y: int) -> None:
    font = _font(12)
    for colour, text in ((REFERENCE_COLOUR, "reference"), (CURRENT_COLOUR, "current")):
        draw.rectangle((x, y + 2, x + 10, y + 12), fill=colour)
        draw.text((x + 14, y), text, fill=(33, 33, 33), font=font)
        x += 90


def histogram_png(column: ColumnDrift, width: int = 420, height: int = 220) -> str | None:
    """Reference (grey bars) against current (orange outline), share of records per bin."""
    if not column.edges:
        return None
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 10, width - 10, 24, height - 22
    bins = len(column.reference_hist)
    peak = max(max(column.reference_hist, default=0), max(column.current_hist, default=0)) or 1
    step = (right - left) / bins
    for i in range(bins):
        x0, x1 = left + i * step, left + (i + 1) * step
        r = column.reference_hist[i] / peak * (bottom - top)
        draw.rectangle((x0 + 1, bottom - r, x1 - 1, bottom), fill=REFERENCE_COLOUR)
    points = []
    for i in range(bins):
        c = bottom - column.current_hist[i] / peak * (bottom - top)
        points += [(left + i * step, c), (left + (i + 1) * step, c)]
    draw.line(points, fill=CURRENT_COLOUR, width=3)
    draw.line((left, bottom, right, bottom), fill=(97, 97, 97))
    font = _font(12)
    draw.text((left, bottom + 4), f"{column.edges[0]:.3g}", fill=(66, 66, 66), font=font)
    high = f"{column.edges[-1]:.3g}"
    draw.text((right - draw.textlength(high, font=font), bottom + 4), high, fill=(66, 66, 66), font=font)
    _legend(draw, left, 4)
    return _png(image)


def classes_png(column: ColumnDrift, width: int = 560) -> str | None:
    """A pair of horizontal bars per class: reference share (grey) above current share (orange)."""
    if not column.classes:
        return None
    row, label_width = 30, 200
    height = 30 + row * len(column.classes)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = _font(12)
    peak = max(max(c.reference_share, c.current_share) for c in column.classes) or 1
    span = width - label_width - 60
    _legend(draw, label_width, 4)
    for i, share in enumerate(column.classes):
        y = 26 + i * row
        label = _INVISIBLE.sub("\ufffd", share.label)
        label = label if len(label) <= MAX_LABEL_CHARS else label[: MAX_LABEL_CHARS - 1] + "…"
        draw.text((4, y + 6), label, fill=(33, 33, 33), font=font)
        for j, (value, colour) in enumerate(
            ((share.reference_share, REFERENCE_COLOUR), (share.current_share, CURRENT_COLOUR))
        ):
            y0 = y + j * 12
            draw.rectangle((label_width, y0, label_width + value / peak * span, y0 + 10), fill=colour)
            draw.text((label_width + value / peak * span + 4, y0 - 1), f"{value:.0%}", fill=(66, 66, 66), font=font)
    return _png(image)


def _status(status: str) -> str:
    return f'<span class="status" style="background:{STATUS_COLOURS[status]}">{escape(status)}</span>'


def _number(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def html_report(monitoring: Monitoring, generated: dt.datetime | None = None) -> str:
    report, windows = monitoring.report, monitoring.windows
    generated = generated or dt.datetime.now(dt.UTC)
    verdict = "drift" if report.drift else ("watch" if report.named("watch") else "stable")
    if any(c.status == "too few records" for c in report.columns):
        verdict = "too few records"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # no script, no fetch: the images are data: URLs, the style is inline
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        "<title>Prediction drift report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Prediction drift report</h1>",
        f"<p>{_status(verdict)} <strong>{escape(report.summary)}</strong></p>",
        "<ul>",
        f"<li>Reference: {escape(windows.reference_text)}, {report.reference_rows:,} records</li>",
        f"<li>Current: {escape(windows.current_text)}, {report.current_rows:,} records</li>",
        f"<li>Model versions in the current window: {escape(', '.join(monitoring.versions) or 'none')}</li>",
        f"<li>Generated {escape(generated.strftime('%Y-%m-%d %H:%M UTC'))}</li>",
        "</ul>",
    ]
    parts += [f'<p class="note">{escape(note)}</p>' for note in monitoring.notes]
    parts += [
        "<h2>Columns</h2>",
        "<table><tr><th>column</th><th>status</th><th>PSI</th><th>test</th><th>effect</th><th>p (adjusted)</th>"
        "<th>median reference → current</th><th>what it is</th></tr>",
    ]
    for c in report.columns:
        effect = "distance" if c.test == "KS" else "Cramér's V"
        median = (
            f"{c.reference_median:.3g} → {c.current_median:.3g}"
            if c.reference_median is not None and c.current_median is not None
            else "-"
        )
        parts.append(
            f"<tr><td>{escape(c.title)}</td><td>{_status(c.status)}</td><td>{_number(c.psi)}</td>"
            f"<td>{escape(c.test)}</td><td>{escape(effect)} {_number(c.effect)}</td>"
            f"<td>{'-' if c.p_value is None else escape(f'{c.p_value:.2g}')}</td><td>{escape(median)}</td>"
            f"<td>{escape(DESCRIPTIONS.get(c.column, ''))}</td></tr>"
        )
    parts.append("</table>")
    parts.append(
        f"<p>Drift: PSI ≥ {PSI_DRIFT:g}, or the test's p-value (Benjamini-Hochberg adjusted over the columns) under "
        f"{P_VALUE:g} with an effect of at least 0.1. Watch: PSI from {PSI_WATCH:g} to {PSI_DRIFT:g}.</p>"
    )
    label = next((c for c in report.columns if c.column == "label"), None)
    if label is not None and label.classes:
        parts += [
            "<h2>Class distribution</h2>",
            "<table><tr><th>class</th><th>reference</th><th>current</th></tr>",
            *(
                f"<tr><td>{escape(s.label)}</td><td>{s.reference_share:.1%} ({s.reference_count:,})</td>"
                f"<td>{s.current_share:.1%} ({s.current_count:,})</td></tr>"
                for s in label.classes
            ),
            "</table>",
        ]
        chart = classes_png(label)
        if chart:
            parts.append(f'<img src="{chart}" alt="class shares, reference and current">')
    parts += ["<h2>Distributions</h2>", '<div class="charts">']
    for c in report.columns:
        chart = histogram_png(c)
        if chart:
            parts.append(
                f'<figure><img src="{chart}" alt="{escape(c.title)}: reference and current">'
                f"<figcaption>{escape(c.title)} {_status(c.status)} {escape(c.reason)}</figcaption></figure>"
            )
    parts.append("</div>")
    if monitoring.daily:
        parts += [
            "<h2>By day</h2>",
            "<table><tr><th>day</th><th>window</th><th>records</th><th>mean confidence</th>"
            "<th>mean brightness</th><th>mean sharpness</th></tr>",
        ]
        for row in monitoring.daily:
            parts.append(
                f"<tr><td>{escape(str(row['day']))}</td><td>{escape(str(row['window']))}</td><td>{row['records']}</td>"
                f"<td>{float(row['probability']):.3f}</td><td>{float(row['brightness']):.1f}</td>"  # type: ignore[arg-type]
                f"<td>{float(row['sharpness']):.0f}</td></tr>"  # type: ignore[arg-type]
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
