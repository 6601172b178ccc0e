"""What a task shows while it runs: a bar on a terminal, JSON progress lines in a log, a summary at the end."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.batch._progress import Progress
from tests.helpers import CAT, CAT_CLASSES, ROOT, jpeg_bytes


def test_on_a_terminal_one_line_is_redrawn_in_place() -> None:
    terminal = io.StringIO()
    progress = Progress(200, interval_s=30.0, terminal=terminal)
    for i in range(50):
        progress.add(failed=i % 10 == 0)
    progress.tick(final=True)
    text = terminal.getvalue()
    assert text.startswith("\r")
    assert text.endswith("\n")
    assert "50/200" in text
    assert "25.0%" in text
    assert "5 errors" in text
    assert "images/s" in text


def test_elsewhere_progress_is_a_json_log_line_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    progress = Progress(10, interval_s=0.0, terminal=None)
    progress.add(failed=False)
    progress.add(failed=True)
    with caplog.at_level("INFO", logger="backend.batch"):
        progress.tick()
    (record,) = caplog.records
    assert record.getMessage() == "progress"
    assert (record.done, record.total, record.errors) == (2, 10, 1)  # type: ignore[attr-defined]
    assert record.images_per_second > 0  # type: ignore[attr-defined]


@pytest.mark.slow
def test_a_task_logs_progress_and_a_summary_and_writes_json_lines(tmp_path: Path, model_cache: Path) -> None:
    source = tmp_path / "images"
    source.mkdir()
    for i in range(30):
        (source / f"cat-{i:02d}.jpg").write_bytes(jpeg_bytes(CAT, (320, 240)))
    (source / "broken.jpg").write_bytes(jpeg_bytes(CAT)[:1500])  # truncated
    env = {**os.environ, "MODEL_CACHE_DIR": str(model_cache), "JOB_PROGRESS_INTERVAL_S": "0.01"}
    command = [sys.executable, "-m", "backend.batch", str(source), str(tmp_path / "out"), "--format=jsonl", "--top-k=3"]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    progress = [line for line in lines if line["message"] == "progress"]
    assert progress, "no progress line:\n" + done.stdout[-3000:]
    assert {"done", "total", "errors", "images_per_second"} <= progress[-1].keys()
    assert progress[-1]["total"] == 31
    (summary,) = [line for line in lines if line["message"] == "batch task finished"]
    assert (summary["classified"], summary["errors"], summary["complete"]) == (31, 1, True)
    assert summary["errors_by_code"] == {"invalid_image": 1}
    assert summary["images_per_second"] > 0
    (shard,) = (tmp_path / "out").glob("results-*.jsonl")
    rows = {row["path"]: row for row in map(json.loads, shard.read_text().splitlines())}
    assert len(rows) == 31
    assert rows["broken.jpg"]["error"] == "invalid_image"
    assert len(rows["cat-00.jpg"]["labels"]) == 3
    assert rows["cat-00.jpg"]["labels"][0] in CAT_CLASSES
    assert done.stderr == ""  # not a terminal: no bar
