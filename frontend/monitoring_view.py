"""What the Monitoring page shows, computed without Streamlit: the status table, sentences and altair charts.

Text for the page is Markdown source in which everything from the log (model versions, paths from the settings)
goes through ``escape_markdown``; class labels appear only in tables (shown as plain text by Streamlit's data grid)
and in charts (drawn as text by Vega), cut to ``MAX_LABEL_CHARS``.
"""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd  # type: ignore[import-untyped]

from frontend.drift import CONTINUOUS, DESCRIPTIONS, TITLES, ColumnDrift, DriftReport, Monitoring
from frontend.presentation import escape_markdown

__all__ = [
    "BADGE_COLOURS",
    "classes_chart",
    "daily_chart",
    "distribution_chart",
    "status_table",
    "verdict",
    "windows_text",
]

# the same colours as the HTML report (frontend.drift_report.STATUS_COLOURS), in Streamlit's names
BADGE_COLOURS = {"drift": "red", "watch": "orange", "stable": "green", "too few records": "gray"}
CELL_COLOURS = {"drift": "#ffcdd2", "watch": "#ffe0b2", "stable": "#c8e6c9", "too few records": "#eeeeee"}
WINDOW_COLOURS = alt.Scale(domain=["reference", "current"], range=["#78909c", "#e65100"])
MAX_LABEL_CHARS = 60


def verdict(report: DriftReport) -> str:
    """drift, watch, stable or too few records: the page's headline colour."""
    if any(c.status == "too few records" for c in report.columns):
        return "too few records"
    if report.drift:
        return "drift"
    return "watch" if report.named("watch") else "stable"


def windows_text(monitoring: Monitoring) -> str:
    """Which records were compared (Markdown; the model versions come from the log)."""
    report, windows = monitoring.report, monitoring.windows
    versions = ", ".join(escape_markdown(v, 40) for v in monitoring.versions[:5]) or "none"
    if len(monitoring.versions) > 5:
        versions += f" and {len(monitoring.versions) - 5} more"
    return (
        f"**Reference:** {escape_markdown(windows.reference_text)}, {report.reference_rows:,} records  \n"
        f"**Current:** {escape_markdown(windows.current_text)}, {report.current_rows:,} records  \n"
        f"**Model versions in the current window:** {versions}"
    )


def status_table(report: DriftReport) -> pd.DataFrame:
    """One row per column: its status (as a word; the page colours the cell), the figures, and why."""
    rows = [
        {
            "column": c.title,
            "status": c.status,
            "PSI": c.psi,
            "test": c.test,
            "effect": c.effect,
            "p (adjusted)": c.p_value,
            "why": c.reason,
            "what it is": DESCRIPTIONS.get(c.column, ""),
        }
        for c in report.columns
    ]
    return pd.DataFrame(rows)


def styled(table: pd.DataFrame) -> Any:
    """The table with each status cell coloured (the word stays: colour is not the only cue)."""
    return table.style.map(lambda value: f"background-color: {CELL_COLOURS.get(value, '')}", subset=["status"]).format(
        {"PSI": "{:.3f}", "effect": "{:.3f}", "p (adjusted)": "{:.2g}"}, na_rep="-"
    )


def _cut(label: str) -> str:
    return label if len(label) <= MAX_LABEL_CHARS else label[: MAX_LABEL_CHARS - 1] + "…"


def classes_chart(column: ColumnDrift) -> alt.Chart:
    """The top classes' shares, reference and current side by side."""
    order = [_cut(c.label) for c in column.classes]
    rows = [
        {"class": _cut(c.label), "window": window, "share": share, "records": count}
        for c in column.classes
        for window, share, count in (
            ("reference", c.reference_share, c.reference_count),
            ("current", c.current_share, c.current_count),
        )
    ]
    data = alt.Data(values=rows)  # type: ignore[no-untyped-call]
    chart: alt.Chart = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            y=alt.Y("class:N", sort=order, title=None),
            yOffset=alt.YOffset("window:N", sort=["reference", "current"]),
            x=alt.X("share:Q", axis=alt.Axis(format="%"), title="share of records"),
            color=alt.Color("window:N", scale=WINDOW_COLOURS, title=None, legend=alt.Legend(orient="top")),
            tooltip=[
                alt.Tooltip("class:N"),
                alt.Tooltip("window:N"),
                alt.Tooltip("share:Q", format=".1%"),
                alt.Tooltip("records:Q", format=","),
            ],
        )
        .properties(height=alt.Step(12))
    )
    return chart


def distribution_chart(column: ColumnDrift) -> alt.Chart | None:
    """The share of records per bin, reference and current overlaid (the bins are equal-width, for reading)."""
    if not column.edges:
        return None
    rows = [
        {"from": column.edges[i], "to": column.edges[i + 1], "window": window, "share": shares[i]}
        for window, shares in (("reference", column.reference_hist), ("current", column.current_hist))
        for i in range(len(shares))
    ]
    data = alt.Data(values=rows)  # type: ignore[no-untyped-call]
    chart: alt.Chart = (
        alt.Chart(data)
        .mark_bar(opacity=0.55, binSpacing=0)
        .encode(
            x=alt.X("from:Q", bin="binned", title=TITLES.get(column.column, column.column)),
            x2="to:Q",
            y=alt.Y("share:Q", stack=None, axis=alt.Axis(format="%"), title="share of records"),
            color=alt.Color("window:N", scale=WINDOW_COLOURS, title=None, legend=alt.Legend(orient="top")),
            tooltip=[
                alt.Tooltip("window:N"),
                alt.Tooltip("from:Q", format=".3g"),
                alt.Tooltip("to:Q", format=".3g"),
                alt.Tooltip("share:Q", format=".1%"),
            ],
        )
        .properties(height=180)
    )
    return chart


def daily_chart(daily: list[dict[str, object]], column: str = "probability") -> alt.Chart:
    """The daily mean of ``column``, one point a day, coloured by window."""
    rows = [
        {"day": row["day"], "window": row["window"], "mean": row[column], "records": row["records"]} for row in daily
    ]
    data = alt.Data(values=rows)  # type: ignore[no-untyped-call]
    chart: alt.Chart = (
        alt.Chart(data)
        .mark_line(point=True)
        .encode(
            x=alt.X("day:T", title="day (UTC)", axis=alt.Axis(format="%b %d")),
            y=alt.Y("mean:Q", title=f"daily mean {TITLES.get(column, column)}", scale=alt.Scale(zero=False)),
            color=alt.Color("window:N", scale=WINDOW_COLOURS, title=None, legend=alt.Legend(orient="top")),
            tooltip=[
                alt.Tooltip("day:T", format="%Y-%m-%d"),
                alt.Tooltip("window:N"),
                alt.Tooltip("mean:Q", format=".3g"),
                alt.Tooltip("records:Q", format=","),
            ],
        )
        .properties(height=220)
    )
    return chart


SERIES = {TITLES[name]: name for name in CONTINUOUS}
