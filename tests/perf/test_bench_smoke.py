"""The benchmark's machinery, end to end in a very short mode: real servers, real wrk, a full report.

No figure is judged here (the machine is shared and tiny runs are noisy): the test checks that every
measurement ran, that no request failed, and that the report, the plot and the JSON are complete.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import SECTIONS
from tests.support import ROOT, need_executable

pytestmark = pytest.mark.slow


def test_a_very_short_benchmark_writes_every_section(model_cache: Path, tmp_path: Path) -> None:
    need_executable("wrk")
    report, plot, raw = tmp_path / "BENCHMARKS.md", tmp_path / "docs" / "plot.png", tmp_path / "bench.json"
    command = [
        sys.executable,
        "-m",
        "bench",
        "--quick",
        "--model-seconds=0.1",
        "--pipeline-seconds=0.2",
        "--warmup=1",
        "--duration=1",
        "--batch-sizes=1,2",
        "--clients=1,4",
        "--cold-starts=1",
        "--memory-requests=8",
        f"--cache-dir={model_cache}",
        f"--output={report}",
        f"--plot={plot}",
        f"--json={raw}",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=540, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output  # non-zero also when any request failed under load

    text = report.read_text(encoding="utf-8")
    positions = [text.find(section) for section in SECTIONS]
    assert all(p >= 0 for p in positions), [s for s, p in zip(SECTIONS, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    assert "Not measured" not in text
    assert "![throughput against concurrency](docs/plot.png)" in text
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    results = json.loads(raw.read_text(encoding="utf-8"))
    assert set(results["ceilings"]) == {"onnx", "torch"}
    for ceiling in results["ceilings"].values():
        assert set(ceiling["model"]) == {"1", "2"}
        assert {run["mode"] for run in ceiling["pipeline"]} == {"sequential", "overlapped"}
        assert ceiling["single_image_ms"] > 0
    runs = {(r["config"], r["image"], r["clients"]) for r in results["load"]}
    assert runs == {
        (config, image, clients)
        for config in ("naive", "fast")
        for image, clients in (("640x480", 1), ("640x480", 4), ("4032x3024", 1))
    }
    assert all(r["requests"] > 0 and r["errors"] == 0 and r["wrk_cpu_s"] >= 0 for r in results["load"])
    assert set(results["cold_starts"]) == {"fast", "naive"}
    assert [s["requests"] for s in results["memory"]] == [0, 2, 4, 6, 8, 10, 12, 14, 16]
    assert len(results["targets"]) == 6
    assert all(t["met"] in (True, False) for t in results["targets"])

    assert "verdict" in done.stdout  # the tables are printed too
    assert "images/s" in done.stdout
