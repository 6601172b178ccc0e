"""``python -m bench --peers``: the harness installs a peer, starts it, checks its answer and measures it.

The end-to-end test runs the cheapest peer to install (LitServe, about 20 MB beside uv's cache) for one very
short round beside our server: the peer's venv is made from its pinned, hash-checked requirements, and the
peer is measured only after it answered the photo's top class as ours does, so a row for it proves that.
No figure is judged. The rest checks, without servers, how answers are read and where the section goes.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from bench.peers.contenders import top1_of_ours, top1_of_predictions, top1_of_v2_classification
from bench.peers.report import write_section
from bench.report import KEPT_SECTION, PEERS_SECTION, peers_section
from tests.helpers import CAT_CLASSES, ROOT, need_executable


@pytest.mark.slow
def test_litserve_is_installed_started_and_answers_the_photos_class(model_cache: Path, tmp_path: Path) -> None:
    need_executable("wrk")
    report, raw = tmp_path / "BENCHMARKS.md", tmp_path / "peers.json"
    report.write_text(f"# Benchmarks\n\n## Server over HTTP\n\nkept\n\n{KEPT_SECTION}\n\nby hand\n", encoding="utf-8")
    command = [
        sys.executable,
        "-m",
        "bench",
        "--peers",
        "--peer=litserve",
        "--rounds=1",
        "--warmup=1",
        "--duration=3",  # long enough for a few answers at 16 clients on a busy machine
        f"--cache-dir={model_cache}",
        f"--output={report}",
        f"--json={raw}",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]

    results = json.loads(raw.read_text(encoding="utf-8"))
    assert results["skipped"] == {}, results["skipped"]
    assert results["expected"].split(" (")[0] in CAT_CLASSES
    assert results["contenders"]["litserve"]["version"] == "0.2.19"
    rows = {row["contender"]: row for row in results["rows"]}
    assert "litserve" in rows
    assert "ours" in rows
    for row in rows.values():
        for run in (row["one"], row["many"]):
            assert run["requests"] > 0, row
            assert run["errors"] == 0, row
        assert row["pss_bytes"] > 0, row
        assert 0 < row["ready_s"] <= row["first_answer_s"], row
    assert (ROOT / ".venv-peers" / "litserve" / ".installed").is_file()

    text = report.read_text(encoding="utf-8")
    assert text.index("## Server over HTTP") < text.index(PEERS_SECTION) < text.index(KEPT_SECTION)
    assert "| LitServe 0.2.19 |" in text
    assert "by hand" in text


def test_answers_are_read_down_to_the_top_class() -> None:
    top5 = [{"index": i, "label": str(i), "probability": 0.1} for i in (285, 282, 281, 287, 904)]
    assert top1_of_predictions(json.dumps({"predictions": top5}).encode(), {}) == 285
    assert top1_of_predictions(json.dumps([{"predictions": top5[1:]}]).encode(), {}) == 282
    assert top1_of_ours(json.dumps({"results": [{"predictions": top5[2:]}]}).encode(), {}) == 281
    header = json.dumps({"outputs": [{"name": "PROBABILITIES", "datatype": "BYTES", "shape": [1, 2]}]}).encode()
    data = b"".join(struct.pack("<I", len(x)) + x for x in (b"0.394247:285", b"0.350613:282"))
    assert top1_of_v2_classification(header + data, {"inference-header-content-length": str(len(header))}) == 285
    as_json = json.dumps({"outputs": [{"name": "PROBABILITIES", "data": ["0.5:7", "0.2:3"]}]}).encode()
    assert top1_of_v2_classification(as_json, {}) == 7


def test_the_peers_section_replaces_its_old_self_and_a_run_of_the_rest_keeps_it(tmp_path: Path) -> None:
    report = tmp_path / "BENCHMARKS.md"
    report.write_text(f"# Benchmarks\n\n## Memory\n\nm\n\n{KEPT_SECTION}\n\nby hand\n", encoding="utf-8")
    write_section(report, f"{PEERS_SECTION}\n\nfirst\n")
    assert report.read_text(encoding="utf-8") == (
        f"# Benchmarks\n\n## Memory\n\nm\n\n{PEERS_SECTION}\n\nfirst\n\n{KEPT_SECTION}\n\nby hand\n"
    )
    write_section(report, f"{PEERS_SECTION}\n\nsecond\n")
    text = report.read_text(encoding="utf-8")
    assert "first" not in text
    assert text.count(PEERS_SECTION) == 1
    assert text.index("## Memory") < text.index("second") < text.index(KEPT_SECTION)
    assert peers_section(report) == f"\n{PEERS_SECTION}\n\nsecond\n"  # what python -m bench puts back

    alone = tmp_path / "new.md"
    write_section(alone, f"{PEERS_SECTION}\n\nonly\n")
    assert alone.read_text(encoding="utf-8") == f"# Benchmarks\n\n{PEERS_SECTION}\n\nonly\n"
