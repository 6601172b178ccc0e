"""The Monitoring page (frontend/monitoring_page.py), run by Streamlit's AppTest through the app's navigation, on
synthetic prediction logs with drift injected and without, and without a usable log."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.helpers import ROOT
from tests.monitoring.synthetic_log import Drift, write_log

APP = str(ROOT / "frontend" / "app.py")
MONITORING_VARIABLES = (
    "PREDICTION_LOG_DIR",
    "MONITORING_REFERENCE",
    "MONITORING_CURRENT_HOURS",
    "MONITORING_REFERENCE_DAYS",
    "MONITORING_MAX_ROWS",
    "MONITORING_MAX_MB",
    "BACKEND_URL",
)
HOSTILE = "![x](http://127.0.0.1:9/x.png) :red[**b**] <b>h</b> $x$"  # under MAX_LABEL_CHARS


@pytest.fixture
def monitoring(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[AppTest]:
    """The Monitoring page, reached as a visitor does: the app first (its default page), then the page."""
    for name in MONITORING_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-credentials.json"))
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    st.cache_data.clear()
    st.cache_resource.clear()
    yield AppTest.from_file(APP, default_timeout=60)
    st.cache_data.clear()
    st.cache_resource.clear()


def open_page(at: AppTest) -> AppTest:
    at.run()
    at.switch_page("monitoring_page.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["Monitoring"]
    return at


def plain(elements: object) -> list[str]:
    """What the elements say, without Markdown's backslash escapes."""
    return [re.sub(r"\\(.)", r"\1", str(e.value)) for e in elements]  # type: ignore[attr-defined]


def statuses(at: AppTest) -> dict[str, str]:
    table = at.dataframe[0].value
    return dict(zip(table["column"], table["status"], strict=True))


def badges(at: AppTest) -> list[str]:
    """The status badges above each chart (st.badge: colour, icon and the word), in page order."""
    return [str(m.value) for m in at.markdown if "-badge[" in str(m.value)]


def charts(at: AppTest) -> list[tuple[dict[str, object], list[dict[str, object]]]]:
    found = []
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        rows = pa.ipc.open_stream(chart.proto.data.data).read_all().to_pylist() if chart.proto.data.data else []
        found.append((spec, rows))
    return found


def test_drift_is_flagged(monitoring: AppTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = write_log(tmp_path / "log", seed=11, drift=Drift(brightness=-35, class_mix=True, labels=(HOSTILE,)))
    monkeypatch.setenv("PREDICTION_LOG_DIR", str(log))
    at = open_page(monitoring)
    assert plain(at.error) == ["**Drift in class distribution and brightness.**"]
    assert not at.success
    found = statuses(at)
    assert found["brightness"] == "drift"
    assert found["class distribution"] == "drift"
    assert {found[name] for name in ("confidence", "contrast", "sharpness")} == {"stable"}
    # a badge per chart, in colour and words: the classes first, then confidence ... sharpness
    shown = badges(at)
    assert len(shown) == 8
    assert shown[0] == shown[4] == ":red-badge[:material/warning: drift]"  # classes, brightness
    assert shown[1] == ":green-badge[:material/check_circle: stable]"  # confidence
    # charts: classes, one per continuous column, and the daily series
    specs = charts(at)
    assert len(specs) == 1 + 7 + 1
    class_rows = specs[0][1]
    assert HOSTILE in {row["class"] for row in class_rows}  # as data, drawn as text by Vega
    assert {row["window"] for row in class_rows} == {"reference", "current"}
    # nothing from the log is Markdown on the page: the label appears in no Markdown element
    shown = [str(e.value) for e in (*at.markdown, *at.caption, *at.error, *at.warning, *at.info)]
    assert not any("![x]" in text or ":red[" in text or "<b>" in text for text in shown)


def test_no_drift_is_not_flagged(monitoring: AppTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREDICTION_LOG_DIR", str(write_log(tmp_path / "log", seed=12)))
    at = open_page(monitoring)
    assert plain(at.success) == ["**No drift: all 8 columns stable.**"]
    assert not at.error
    assert set(statuses(at).values()) == {"stable"}
    assert set(badges(at)) == {":green-badge[:material/check_circle: stable]"}
    assert any("Reference:" in str(m.value) and "7 days before" in str(m.value) for m in at.markdown)
    # the time series switches column
    at.selectbox(key="series").set_value("brightness").run()
    assert not at.exception
    spec, _ = charts(at)[-1]
    assert "brightness" in json.dumps(spec)


def test_a_reference_set_from_the_settings(
    monitoring: AppTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = write_log(tmp_path / "reference", seed=1, days=3, per_day=300)
    log = write_log(tmp_path / "log", seed=2, days=2, per_day=300, drift=Drift(confidence=True))
    monkeypatch.setenv("PREDICTION_LOG_DIR", str(log))
    monkeypatch.setenv("MONITORING_REFERENCE", str(reference))
    at = open_page(monitoring)
    assert plain(at.error) == ["**Drift in confidence, margin and entropy.**"]
    assert any("the reference set" in str(m.value) for m in at.markdown)


def test_without_a_log_the_page_says_what_to_set(monitoring: AppTest) -> None:
    at = open_page(monitoring)
    (info,) = at.info
    assert "No prediction log is configured" in info.value
    assert "PREDICTION_LOG_DIR" in info.value
    assert not at.dataframe


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda root: root / "missing", "does not exist"),
        (lambda root: root, "holds no records yet"),
    ],
)
def test_a_missing_or_empty_log_says_so(
    monitoring: AppTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: object, expected: str
) -> None:
    assert callable(make)
    monkeypatch.setenv("PREDICTION_LOG_DIR", str(make(tmp_path)))
    at = open_page(monitoring)
    (warning,) = at.warning
    assert expected in plain([warning])[0]
    assert not at.dataframe


def test_a_log_of_junk_files_says_so(monitoring: AppTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "date=2026-11-30").mkdir()
    (tmp_path / "date=2026-11-30" / "a.parquet").write_bytes(b"PAR1" + b"\0" * 100)
    monkeypatch.setenv("PREDICTION_LOG_DIR", str(tmp_path))
    at = open_page(monitoring)
    (warning,) = at.warning
    assert "could be read" in plain([warning])[0]


def test_too_few_records_say_so(monitoring: AppTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREDICTION_LOG_DIR", str(write_log(tmp_path, seed=3, days=2, per_day=50)))
    at = open_page(monitoring)
    (info,) = at.info
    assert plain([info])[0].startswith("**Not enough records to test")
    assert set(statuses(at).values()) == {"too few records"}


def test_the_classify_page_is_the_default(monitoring: AppTest) -> None:
    monitoring.run()
    assert not monitoring.exception
    assert [t.value for t in monitoring.title] == ["Image classifier"]
