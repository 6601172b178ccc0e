"""``python -m frontend.drift REFERENCE CURRENT --out report.html``: the report, its escaping, its exit codes."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from frontend import drift
from tests.helpers import ROOT
from tests.monitoring.synthetic_log import Drift, write_log

HOSTILE = '<script>alert(1)</script><img src=x onerror=alert(2)> & "quoted" \u202egpj.exe'


class Elements(HTMLParser):
    """Every tag and attribute of the report, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Elements:
    parser = Elements()
    parser.feed(html)
    return parser


def test_report_with_drift_exits_1_and_escapes_a_hostile_label(tmp_path: Path) -> None:
    log = write_log(tmp_path / "log", seed=5, drift=Drift(brightness=-35, labels=(HOSTILE,)))
    out = tmp_path / "reports" / "report.html"
    assert drift.main([str(log), str(log), "--out", str(out)]) == 1
    html = out.read_text(encoding="utf-8")
    elements = parse(html)
    tags = {tag for tag, _ in elements.tags}
    assert "script" not in tags
    assert not any("onerror" in attrs for _, attrs in elements.tags)
    # images are inline PNGs only, and the page may fetch nothing else
    images = [attrs["src"] for tag, attrs in elements.tags if tag == "img"]
    assert len(images) == 1 + len(drift.CONTINUOUS)
    assert all(src and src.startswith("data:image/png;base64,") for src in images)
    for src in images:
        assert src is not None
        assert Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).format == "PNG"
    assert not re.search(r"(src|href)=\"(https?:|//)", html)
    assert "default-src 'none'" in html
    # the label is in the class table, as its own characters (the bidirectional override replaced)
    assert HOSTILE.replace("\u202e", "\ufffd") in elements.text
    assert "\u202e" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    text = " ".join(elements.text)
    assert "Drift in class distribution and brightness." in text


def test_report_without_drift_exits_0(tmp_path: Path) -> None:
    log = write_log(tmp_path / "log", seed=6)
    out = tmp_path / "report.html"
    assert drift.main([str(log), "--out", str(out)]) == 0  # CURRENT alone: its own windows
    text = " ".join(parse(out.read_text(encoding="utf-8")).text)
    assert "No drift: all 8 columns stable." in text
    assert "stable" in text
    assert "drift</span>" not in out.read_text()


def test_a_reference_set_against_the_whole_current_set(tmp_path: Path) -> None:
    reference = write_log(tmp_path / "reference", seed=1, days=2, per_day=400)
    current = write_log(tmp_path / "current", seed=2, days=1, per_day=400, drift=Drift(confidence=True))
    out = tmp_path / "report.html"
    assert drift.main([str(reference), str(current), "--hours", "0", "--out", str(out)]) == 1
    assert "Drift in confidence, margin and entropy." in out.read_text()


def test_usage_and_input_errors_exit_2_with_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(tmp_path / "log", seed=0, days=2, per_day=100)
    assert drift.main([]) == 2
    assert "REFERENCE" in capsys.readouterr().err
    assert drift.main([str(tmp_path / "missing"), str(log)]) == 2
    assert "does not exist" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert drift.main([str(log), str(tmp_path / "empty")]) == 2
    assert "holds no records yet" in capsys.readouterr().out
    assert drift.main([str(log), str(log), "--hours", "-1"]) == 2
    assert drift.main([str(log), str(log), str(log)]) == 2
    assert "at most two sets" in capsys.readouterr().out
    assert drift.main(["reference", str(tmp_path / "r.parquet"), "--from", str(log), "--since", "tomorrow"]) == 2
    assert "is not a date" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert drift.main([str(log), str(log), "--out", str(blocker / "report.html")]) == 2
    assert "cannot write the report" in capsys.readouterr().out


@pytest.mark.slow
def test_the_module_runs_as_a_command(tmp_path: Path) -> None:
    """As a Cloud Run job runs it: its own process, JSON log lines, the exit status."""
    log = write_log(tmp_path / "log", seed=8, drift=Drift(class_mix=True))
    out = tmp_path / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "frontend.drift", str(log), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert '"drift": true' in done.stdout
    assert '"drifted": ["class distribution"]' in done.stdout
    assert out.stat().st_size > 10_000
