"""The report keeps what people wrote by hand in BENCHMARKS.md when a run rewrites it."""

from __future__ import annotations

from pathlib import Path

from bench.report import KEPT_SECTION, kept_section
from tests.helpers import ROOT


def test_the_hand_written_section_is_kept_from_the_previous_report(tmp_path: Path) -> None:
    report = tmp_path / "BENCHMARKS.md"
    assert kept_section(report) == ""  # no report yet
    report.write_text(f"# Benchmarks\n\n## Memory\n\n| a |\n\n{KEPT_SECTION}\n\n| what | measured |\n| x | 1 ms |\n")
    assert kept_section(report) == f"\n{KEPT_SECTION}\n\n| what | measured |\n| x | 1 ms |\n"
    report.write_text("# Benchmarks\n\n## Memory\n")  # a report without it
    assert kept_section(report) == ""


def test_the_repository_report_has_the_figures_the_code_points_to() -> None:
    """Comments in backend/ cite BENCHMARKS.md's hand-written section instead of quoting figures."""
    section = kept_section(ROOT / "BENCHMARKS.md")
    assert section.startswith(f"\n{KEPT_SECTION}\n")
    cited = [path for path in (ROOT / "backend").rglob("*.py") if KEPT_SECTION.removeprefix("## ") in path.read_text()]
    assert len(cited) >= 5
    for path in cited:
        assert f"`{path.relative_to(ROOT).as_posix()}`" in section, path
