"""The batch job as Cloud Run runs it: 4 tasks as 4 processes (``CLOUD_RUN_TASK_INDEX`` / ``_COUNT`` set) over
one folder of 2,000 small generated images, real photos and bad files. One task is killed mid-way (SIGKILL,
as when its instance is lost) and one stopped (SIGTERM, as at its timeout); both run again. The union of
the shards then holds every image exactly once, the photos with their classes, the bad files with their
error codes."""

from __future__ import annotations

import collections
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from PIL import Image

from backend.batch import marker_name, task_of
from tests.helpers import CAT, CAT_CLASSES, COFFEE, COFFEE_CLASSES, ROOT, jpeg_bytes

pytestmark = pytest.mark.slow  # model loads and decoder processes, in five processes

GENERATED = 2000
TASKS = 4
KILLED, STOPPED = 2, 1
SHARD_IMAGES = 40
MAX_IMAGE_BYTES = 1_000_000
SHARD = re.compile(r"^results-t(\d{5})-of(\d{5})-(\d{5})\.parquet$")
BAD = {
    "bad/truncated.jpg": "invalid_image",
    "bad/empty.jpg": "invalid_image",
    "bad/notes.txt": "unsupported_image",
    "bad/too-many-bytes.jpg": "image_too_large",
    "bad/bomb.png": "image_too_large",
}
PHOTOS = {"photos/cat.jpg": (CAT_CLASSES, 451, 300), "photos/coffee.png": (COFFEE_CLASSES, 600, 400)}


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's header, no pixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def make_corpus(root: Path) -> set[str]:
    """The input folder; returns every key the results must hold."""
    rng = np.random.default_rng(14)
    keys = set()
    for i in range(GENERATED):
        pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        kind = "PNG" if i % 5 == 0 else "JPEG"
        key = f"generated/{i % 16:02d}/{i:05d}.{kind.lower()}"
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, kind)
        path.write_bytes(out.getvalue())
        keys.add(key)
    (root / "photos").mkdir()
    (root / "photos/cat.jpg").write_bytes(jpeg_bytes(CAT))
    (root / "photos/coffee.png").write_bytes(COFFEE.read_bytes())
    (root / "bad").mkdir()
    (root / "bad/truncated.jpg").write_bytes(jpeg_bytes(CAT)[:2000])
    (root / "bad/empty.jpg").write_bytes(b"")
    (root / "bad/notes.txt").write_text("not an image\n")
    (root / "bad/too-many-bytes.jpg").write_bytes(jpeg_bytes(CAT) + bytes(MAX_IMAGE_BYTES))
    (root / "bad/bomb.png").write_bytes(_png_claiming(100_000, 100_000))
    (root / ".DS_Store").write_bytes(b"hidden: never listed")
    return keys | set(PHOTOS) | set(BAD)


@dataclass
class Run:
    source: Path
    output: Path
    keys: set[str]
    logs: Path
    returncodes: dict[str, int] = field(default_factory=dict)
    after_kill: list[str] = field(default_factory=list)  # the killed task's shards when it was killed
    after_stop: list[str] = field(default_factory=list)
    before_rerun_of_complete: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _env(model_cache: Path, index: int) -> dict[str, str]:
    return {
        **os.environ,
        "MODEL_CACHE_DIR": str(model_cache),
        "CLOUD_RUN_TASK_INDEX": str(index),
        "CLOUD_RUN_TASK_COUNT": str(TASKS),
        "JOB_SHARD_IMAGES": str(SHARD_IMAGES),
        "MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
        # four tasks share this machine's CPUs, as four Cloud Run instances would not
        "INFERENCE_THREADS": "1",
        "DECODE_PROCESSES": "1",
        "LOG_LEVEL": "INFO",
    }


def _start(run: Run, model_cache: Path, index: int, name: str) -> subprocess.Popen[bytes]:
    with (run.logs / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "backend.batch", str(run.source), str(run.output)],
            cwd=ROOT,
            env=_env(model_cache, index),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed with its decoders, as a container is
        )


def _shards(output: Path, index: int | None = None) -> list[str]:
    names = sorted(n for n in os.listdir(output) if SHARD.match(n))
    return [n for n in names if index is None or int(SHARD.match(n)[1]) == index]  # type: ignore[index]


def _wait_for_shards(process: subprocess.Popen[bytes], output: Path, index: int, count: int) -> None:
    deadline = time.monotonic() + 180
    while len(_shards(output, index)) < count:
        assert process.poll() is None, f"task {index} ended (status {process.returncode}) before it could be stopped"
        assert time.monotonic() < deadline, f"task {index} wrote fewer than {count} shards in 180 s"
        time.sleep(0.02)


def _log(run: Run, name: str) -> str:
    return (run.logs / f"{name}.log").read_text(errors="replace")


def _finish(process: subprocess.Popen[bytes], run: Run, name: str, timeout: float = 300) -> None:
    started = time.monotonic()
    run.returncodes[name] = process.wait(timeout=timeout)
    run.seconds[name] = time.monotonic() - started


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Run:
    base = tmp_path_factory.mktemp("batch")
    result = Run(base / "images", base / "results", set(), base / "logs")
    for folder in (result.source, result.output, result.logs):
        folder.mkdir()
    result.keys = make_corpus(result.source)
    started = time.monotonic()
    tasks = {index: _start(result, model_cache, index, f"task{index}") for index in range(TASKS)}
    _wait_for_shards(tasks[KILLED], result.output, KILLED, 2)
    os.killpg(tasks[KILLED].pid, signal.SIGKILL)  # no chance to write anything more
    result.returncodes["killed"] = tasks[KILLED].wait(timeout=30)
    result.after_kill = _shards(result.output, KILLED)
    _wait_for_shards(tasks[STOPPED], result.output, STOPPED, 1)
    tasks[STOPPED].send_signal(signal.SIGTERM)
    _finish(tasks[STOPPED], result, "stopped", timeout=15)  # Cloud Run allows 10 s after SIGTERM
    result.after_stop = _shards(result.output, STOPPED)
    for index in (0, 3):
        _finish(tasks[index], result, f"task{index}")
    # A retry of each: it skips what is in shards, and leaves no temporary file of a killed write behind.
    (result.output / f".results-t{KILLED:05d}-of{TASKS:05d}-00099.parquet.tmp").write_bytes(b"half a shard")
    for index, name in ((KILLED, "retry-killed"), (STOPPED, "retry-stopped")):
        _finish(_start(result, model_cache, index, name), result, name)
    result.before_rerun_of_complete = _shards(result.output)
    _finish(_start(result, model_cache, 0, "rerun-complete"), result, "rerun-complete")
    result.seconds["all"] = time.monotonic() - started
    return result


@pytest.fixture(scope="module")
def rows(run: Run) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = pq.read_table(run.output).to_pylist()
    return records


def test_every_process_ended_as_it_should(run: Run) -> None:
    assert run.returncodes["killed"] == -signal.SIGKILL
    assert run.returncodes["stopped"] == 143, _log(run, f"task{STOPPED}")
    for name in ("task0", "task3", "retry-killed", "retry-stopped", "rerun-complete"):
        assert run.returncodes[name] == 0, _log(run, name)


def test_every_image_is_in_the_results_exactly_once(run: Run, rows: list[dict[str, Any]]) -> None:
    counts = collections.Counter(row["path"] for row in rows)
    duplicates = {path: n for path, n in counts.items() if n > 1}
    assert not duplicates
    assert set(counts) == run.keys  # nothing missing, nothing extra (no hidden file, no output of ours)
    assert len(rows) == GENERATED + len(PHOTOS) + len(BAD)


def test_each_task_wrote_exactly_its_share(run: Run) -> None:
    for name in _shards(run.output):
        index = int(SHARD.match(name)[1])  # type: ignore[index]
        paths = pq.read_table(run.output / name, columns=["path"]).column("path").to_pylist()
        assert {task_of(path, TASKS) for path in paths} == {index}, name
        assert 0 < len(paths) <= SHARD_IMAGES


def test_killed_and_stopped_tasks_kept_their_shards_and_their_retries_did_the_rest(run: Run) -> None:
    assert len(run.after_kill) >= 2
    assert set(run.after_kill) < set(_shards(run.output, KILLED))  # kept, and more written by the retry
    assert run.after_stop
    assert set(run.after_stop) < set(_shards(run.output, STOPPED))
    stopped_log = _log(run, f"task{STOPPED}")
    assert '"message": "batch task stopped"' in stopped_log
    assert not any(name.startswith(".") for name in os.listdir(run.output)), "a temporary file was left"
    retry = _summary(_log(run, "retry-killed"))
    assert retry["already_done"] >= 2 * SHARD_IMAGES
    assert retry["already_done"] + retry["classified"] == retry["assigned"]


def test_a_rerun_of_a_complete_task_skips_it(run: Run) -> None:
    assert _shards(run.output) == run.before_rerun_of_complete
    summary = _summary(_log(run, "rerun-complete"))
    assert summary["skipped_run"] is True
    assert summary["classified"] == 0


def test_every_task_marked_itself_complete_with_its_counts(run: Run, rows: list[dict[str, Any]]) -> None:
    assigned = 0
    for index in range(TASKS):
        marker = json.loads((run.output / marker_name(index, TASKS)).read_text())
        assert marker["complete"] is True
        assert marker["task_index"] == index
        assigned += marker["assigned"]
    assert assigned == len(run.keys)
    assert {(row["model"], row["model_version"]) for row in rows} == {(marker["model"], marker["model_version"])}


def test_real_photos_get_their_classes(rows: list[dict[str, Any]]) -> None:
    by_path = {row["path"]: row for row in rows}
    for path, (classes, width, height) in PHOTOS.items():
        row = by_path[path]
        assert row["error"] is None
        assert row["labels"][0] in classes, row["labels"]
        assert (row["width"], row["height"]) == (width, height)
        assert row["format"] == path.rsplit(".", 1)[1].upper().replace("JPG", "JPEG")
        assert len(row["labels"]) == len(row["indices"]) == len(row["probabilities"]) == 5
        assert row["probabilities"] == sorted(row["probabilities"], reverse=True)


def test_bad_files_are_recorded_with_their_error_codes(rows: list[dict[str, Any]]) -> None:
    by_path = {row["path"]: row for row in rows}
    for path, code in BAD.items():
        row = by_path[path]
        assert row["error"] == code, row
        assert row["error_message"]
        assert row["labels"] is None
    assert "MAX_IMAGE_BYTES" in by_path["bad/too-many-bytes.jpg"]["error_message"]  # refused from its size, unread
    generated = [row for row in rows if row["path"].startswith("generated/")]
    assert all(row["error"] is None and (row["width"], row["height"]) == (32, 24) for row in generated)


def _summary(log: str) -> Mapping[str, Any]:
    for line in reversed(log.splitlines()):
        if line.startswith("{") and '"message": "batch task' in line:
            record: dict[str, Any] = json.loads(line)
            return record
    raise AssertionError(f"no summary line in:\n{log[-3000:]}")
