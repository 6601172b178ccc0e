"""The benchmark's machinery, end to end in a very short mode: real servers, real wrk, a full report.

No figure is judged here (the machine is shared and tiny runs are noisy): the test checks that every
measurement ran, that no request failed, that each target's verdict is the one its own figures give, and
that the report, the plot and the JSON are complete. The verdicts' rules are checked on made-up figures,
either side of each bound, without running anything.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.inprocess import PipelineRun, Rate, RuntimeCeiling
from bench.report import SECTIONS, Results, targets
from bench.server import LoadResult, MemorySample
from tests.helpers import ROOT, need_executable

MiB = 2**20


def _load(
    config: str, image: str, clients: int, per_second: float = 0.0, p50_ms: float = 0.0, route: str = "predict"
) -> LoadResult:
    return LoadResult(
        config, image, clients, int(per_second * 10), 10.0, 0, p50_ms, p50_ms, p50_ms, p50_ms, p50_ms, 1, 1, route
    )


def _results(
    fast: float = 90,
    naive: float = 20,
    p50: float = 11,
    phone: float = 20,
    cold: float = 0.8,
    rss: float = 104,
    v2: float = 88,
    torchserve: float = 92,
) -> Results:
    """A run whose every figure meets its target unless overridden: ceiling 100 images/s, 10 ms per image;
    /predict beside the protocols 90 images/s over two rounds."""
    default = RuntimeCeiling(
        "openvino", 1, pipeline=[PipelineRun("overlapped", 1, 1, Rate(1000, 10.0))], single_image_ms=10
    )
    return Results(
        command="",
        started="",
        options={},
        machine={},
        ceilings={"openvino": default},
        load=[
            _load("fast", "640x480", 4, per_second=fast),
            _load("naive", "640x480", 4, per_second=naive),
            _load("fast", "640x480", 1, p50_ms=p50),
            _load("fast", "4032x3024", 1, p50_ms=phone),
        ],
        cold_starts={"fast": [cold]},
        memory=[MemorySample(8, 100 * MiB), MemorySample(16, int(rss * MiB))],
        memory_checkpoints=(8, 16),
        protocols=[
            _load("fast", "640x480", 16, per_second=rate, route=route)
            for _ in range(2)
            for route, rate in (("predict", 90), ("v2-binary", v2), ("torchserve", torchserve))
        ],
    )


@pytest.mark.parametrize(
    ("figures", "missed"),
    [
        ({}, None),
        ({"fast": 90, "naive": 90 / 3, "p50": 12, "phone": 24, "cold": 1, "rss": 105}, None),  # each on its bound
        ({"rss": 95}, None),  # shrinking by 5% is within 5% too
        ({"fast": 89.9}, 0),  # below 0.9x the in-process ceiling
        ({"naive": 30.1}, 1),  # under 3x the naive server
        ({"p50": 12.1}, 2),  # over 1.2x the in-process single-image time
        ({"phone": 22.1}, 3),  # a 12-megapixel photo over 2x a 640x480 one
        ({"cold": 1.01}, 4),  # cold start over 1 s
        ({"rss": 105.2}, 5),  # memory grew over 5%
        ({"rss": 94.8}, 5),  # or shrank over 5%
        ({"v2": 85.5, "torchserve": 110}, None),  # 0.95x /predict, and faster than it
        ({"torchserve": 85.4}, 6),  # under 0.95x /predict (routes in key order: torchserve, v2-binary)
        ({"v2": 85.4}, 7),
    ],
)
def test_each_target_is_met_exactly_when_its_figure_is_within_its_bound(
    figures: dict[str, float], missed: int | None
) -> None:
    found = targets(_results(**figures))
    assert len(found) == 8
    assert [t.met for t in found] == [i != missed for i in range(8)], [(t.name, t.measured) for t in found]


def _verdicts_from_figures(results: dict[str, Any]) -> list[bool]:
    """Each target's verdict worked out again from the JSON's raw figures, in the order of the targets."""
    load = {(r["config"], r["image"], r["clients"]): r for r in results["load"]}
    clients = max(c for (_, image, c) in load if image == "640x480")
    fast, naive, one = load["fast", "640x480", clients], load["naive", "640x480", clients], load["fast", "640x480", 1]
    phone = load["fast", "4032x3024", 1]
    default = results["ceilings"]["openvino"]  # the default runtime's
    rss = {sample["requests"]: sample["rss_bytes"] for sample in results["memory"]}
    first, second = results["memory_checkpoints"]
    rates = {
        route: sum(r["requests"] for r in rounds) / sum(r["seconds"] for r in rounds)
        for route in ("predict", "torchserve", "v2-binary")
        for rounds in [[r for r in results["protocols"] if r["route"] == route]]
    }
    logged = {
        config: sum(r["requests"] for r in rounds) / sum(r["seconds"] for r in rounds)
        for config in ("fast", "log")
        for rounds in [[r for r in results["prediction_log"] if r["config"] == config]]
    }
    return [
        fast["per_second"] / default["ceiling"]["rate"]["per_second"] >= 0.9,
        fast["per_second"] / naive["per_second"] >= 3,
        one["p50_ms"] / default["single_image_ms"] <= 1.2,
        phone["p50_ms"] / one["p50_ms"] <= 2,
        statistics.mean(results["cold_starts"]["fast"]) <= 1.0,
        abs(rss[second] - rss[first]) / rss[first] <= 0.05,
        rates["torchserve"] / rates["predict"] >= 0.95,
        rates["v2-binary"] / rates["predict"] >= 0.95,
        results["batch"]["per_second"] / default["ceiling"]["rate"]["per_second"] >= 0.9,  # bench/batch.py
        logged["log"] / logged["fast"] >= 0.97,  # the prediction log on vs off
    ]


@pytest.mark.slow
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
    assert set(results["ceilings"]) == {"onnx", "openvino", "torch"}
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
    for run in results["load"]:
        assert run["requests"] > 0, run
        assert run["errors"] == 0, run
        # Both were measured: any second of load costs the server and wrk some CPU, and one wrk thread can use
        # at most one CPU (plus start-up) while it runs.
        assert run["server_cpu_s"] > 0, run
        assert 0 < run["wrk_cpu_s"] <= run["seconds"] + 1, run
        assert run["wrk_cpu_s"] < run["seconds"] * (os.cpu_count() or 1), run
    assert set(results["cold_starts"]) == {"fast", "naive"}
    assert [s["requests"] for s in results["memory"]] == [0, 2, 4, 6, 8, 10, 12, 14, 16]
    # The protocols beside /predict, at the most clients, one round (--quick), each on its own route.
    assert [(r["route"], r["clients"], r["image"]) for r in results["protocols"]] == [
        (route, 4, "640x480") for route in ("predict", "v2-binary", "torchserve")
    ]
    for run in results["protocols"]:
        assert run["requests"] > 0, run
        assert run["errors"] == 0, run  # a v2 or TorchServe request the server refused would count here
        assert run["server_cpu_s"] > 0, run
    assert "| `v2-binary` |" in text
    assert "| `torchserve` |" in text
    assert results["batch"]["images"] >= 300  # the batch job, one task (bench/batch.py)
    assert results["batch"]["errors"] == 0
    assert len(results["targets"]) == 10  # with the prediction log on vs off
    assert [t["met"] for t in results["targets"]] == _verdicts_from_figures(results)

    assert "verdict" in done.stdout  # the tables are printed too
    assert "images/s" in done.stdout
