"""The Monitoring page: the prediction log's drift, reference window against current window, at a glance.

A page of ``frontend/app.py``'s ``st.navigation`` (not in a ``pages/`` folder: Streamlit would take that for its
older multipage layout and run the folder's scripts on the first run). The reading and the tests are
``frontend.drift``; tables, sentences and charts are ``frontend.monitoring_view``.
"""

from __future__ import annotations

import logging

import streamlit as st

from frontend.config import ConfigError, FrontendSettings
from frontend.drift import LogError, Monitoring, load
from frontend.logs import configure_logging
from frontend.monitoring_view import (
    BADGE_COLOURS,
    SERIES,
    classes_chart,
    daily_chart,
    distribution_chart,
    status_table,
    styled,
    verdict,
    windows_text,
)
from frontend.presentation import config_error_text, escape_markdown

logger = logging.getLogger("frontend.monitoring")

ICONS = {
    "drift": ":material/warning:",
    "watch": ":material/visibility:",
    "stable": ":material/check_circle:",
    "too few records": ":material/hourglass_empty:",
}


@st.cache_data(ttl=60, max_entries=4, show_spinner="Reading the prediction log…")
def read(*, log_dir: str, reference: str | None, hours: float, days: float, max_rows: int, max_mb: int) -> Monitoring:
    """Read and compare, at most once a minute per configuration (the log grows by files, not by the second)."""
    return load(
        log_dir, reference=reference, current_hours=hours, reference_days=days, max_rows=max_rows, max_mb=max_mb
    )


def headline(monitoring: Monitoring) -> None:
    state = verdict(monitoring.report)
    text = f"**{escape_markdown(monitoring.report.summary)}**"
    if state == "drift":
        st.error(text, icon=ICONS[state])
    elif state == "watch":
        st.warning(text, icon=ICONS[state])
    elif state == "stable":
        st.success(text, icon=ICONS[state])
    else:
        st.info(text, icon=ICONS[state])


def show(monitoring: Monitoring) -> None:
    report = monitoring.report
    headline(monitoring)
    st.markdown(windows_text(monitoring))
    for note in monitoring.notes:
        st.warning(escape_markdown(note, 1500), icon=":material/filter_list:")

    st.subheader("Drift tests")
    st.dataframe(styled(status_table(report)), hide_index=True, width="stretch")
    st.caption(
        "Drift: PSI of 0.2 or more, or a test's p-value under 0.01 (adjusted over the columns) with an effect of "
        "at least 0.1 (KS distance, Cramér's V). Watch: PSI from 0.1 to 0.2."
    )

    label = next((c for c in report.columns if c.column == "label"), None)
    if label is not None and label.classes:
        st.subheader("Class distribution")
        st.badge(label.status, icon=ICONS[label.status], color=BADGE_COLOURS[label.status])  # type: ignore[arg-type]
        st.altair_chart(classes_chart(label), width="stretch")

    st.subheader("Confidence and image statistics")
    continuous = [c for c in report.columns if c.column != "label"]
    for start in range(0, len(continuous), 2):
        for column, place in zip(continuous[start : start + 2], st.columns(2), strict=False):
            with place:
                st.markdown(f"**{column.title}**")
                st.badge(column.status, icon=ICONS[column.status], color=BADGE_COLOURS[column.status])  # type: ignore[arg-type]
                chart = distribution_chart(column)
                if chart is not None:
                    st.altair_chart(chart, width="stretch")
                st.caption(escape_markdown(column.reason))

    if monitoring.daily:
        st.subheader("Over time")
        picked = st.selectbox("Daily mean of", list(SERIES), key="series")
        st.altair_chart(daily_chart(monitoring.daily, SERIES[picked or "confidence"]), width="stretch")


def page() -> None:
    st.set_page_config(page_title="Monitoring · Image classifier", page_icon=":material/monitoring:", layout="wide")
    try:
        settings = FrontendSettings.from_env()
    except ConfigError as exc:
        st.error(config_error_text(exc), icon=":material/settings:")
        st.stop()
    configure_logging(settings.log_level)
    st.title("Monitoring")
    st.caption(
        "What the backend was sent and what it answered, from its prediction log: the current window against a "
        "reference, with a drift test per column."
    )
    if not settings.prediction_log_dir:
        st.info(
            "**No prediction log is configured.** Set PREDICTION_LOG_DIR to the folder the backend writes its "
            "prediction log to (on Cloud Run: the log bucket, mounted read-only into this service). See "
            "docs/monitoring.md.",
            icon=":material/settings:",
        )
        return
    try:
        monitoring = read(
            log_dir=settings.prediction_log_dir,
            reference=settings.monitoring_reference,
            hours=settings.monitoring_current_hours,
            days=settings.monitoring_reference_days,
            max_rows=settings.monitoring_max_rows,
            max_mb=settings.monitoring_max_mb,
        )
    except LogError as exc:
        st.warning(escape_markdown(str(exc), 1500), icon=":material/folder_off:")
        st.button("Read again", key="read_again")
        return
    except Exception:  # a hostile or broken file must not put a traceback on the page
        logger.exception("the prediction log could not be read")
        st.error(
            "The prediction log could not be read (the error is in the frontend's logs). Check that "
            "PREDICTION_LOG_DIR holds only the backend's Parquet files.",
            icon=":material/error:",
        )
        return
    show(monitoring)


page()
