"""The batch job against the in-process ceiling: ``python -m backend.batch`` (one task, a fresh process, as a
Cloud Run job runs it) on a folder of copies of the ceiling's own 640x480 JPEG, images/s from the task's
summary (its pipeline, from the first file read to the last result; the model load and the listing are
reported beside it, not counted).

``python -m bench.batch [--images N] [--rounds R]`` measures it alone, interleaved with the in-process
pipeline ceiling (the same runtime), and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.inprocess import RuntimeCeiling

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.9  # the batch job's images/s, at least this fraction of the in-process pipeline ceiling
MIN_IMAGES = 300


@dataclass(frozen=True)
class BatchRun:
    """One run of the batch job (one task) over ``images`` copies of one photo."""

    runtime: str
    images: int
    seconds: float  # the pipeline
    load_seconds: float  # model and decoders, before it
    wall_seconds: float  # the whole process
    errors: int

    @property
    def per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def _summary(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            record: dict[str, Any] = json.loads(line)
            if record.get("message") == "batch task finished":
                return record
    raise RuntimeError(f"the batch job wrote no summary line:\n{stdout[-2000:]}")


def measure_batch(
    cache_dir: Path, jpeg: bytes, runtime: str, ceilings: Mapping[str, RuntimeCeiling], pipeline_seconds: float
) -> BatchRun:
    """``python -m bench``'s batch line: enough images for about three times ``pipeline_seconds`` at the
    runtime's in-process ceiling (already measured), at least ``MIN_IMAGES``."""
    rate = ceilings[runtime].ceiling.rate.per_second if runtime in ceilings else 0.0
    return run_batch(cache_dir, jpeg, max(MIN_IMAGES, int(3 * pipeline_seconds * rate)), runtime)


def run_batch(cache_dir: Path, jpeg: bytes, images: int, runtime: str) -> BatchRun:
    """Run ``python -m backend.batch`` over ``images`` copies of ``jpeg`` (in a temporary folder)."""
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        source = Path(tmp) / "images"
        source.mkdir()
        for i in range(images):
            (source / f"{i:06d}.jpg").write_bytes(jpeg)
        env = {
            **os.environ,
            "MODEL_CACHE_DIR": str(cache_dir),
            "RUNTIME": runtime,
            "CLOUD_RUN_TASK_INDEX": "0",
            "CLOUD_RUN_TASK_COUNT": "1",
        }
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "backend.batch", str(source), str(Path(tmp) / "results")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"python -m backend.batch exited with {done.returncode}:\n{done.stdout[-3000:]}")
    summary = _summary(done.stdout)
    run = BatchRun(
        runtime,
        int(summary["classified"]),
        float(summary["seconds"]),
        float(summary["load_seconds"]),
        wall,
        int(summary["errors"]),
    )
    logger.info(
        "batch job, %s, %d images: %.1f images/s (load %.2f s, process %.1f s)",
        runtime,
        run.images,
        run.per_second,
        run.load_seconds,
        run.wall_seconds,
    )
    return run


def main(argv: list[str] | None = None) -> None:
    from backend.config import Settings
    from bench import photos
    from bench.inprocess import measure_runtime
    from bench.report import load_average

    parser = argparse.ArgumentParser(prog="python -m bench.batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="images per batch run (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="ceiling and batch runs, interleaved")
    parser.add_argument("--pipeline-seconds", type=float, default=3.0, help="per pipeline ceiling measurement")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    settings = Settings()
    vga = photos.photo("chelsea", photos.VGA)
    print(f"load average at start: {load_average()}")
    for _ in range(args.rounds):
        ceiling = measure_runtime(
            settings.runtime,
            settings.model_cache_dir,
            {vga.label: vga.jpeg},
            vga=vga.label,
            batch_sizes=[1],
            model_seconds=0.5,
            pipeline_seconds=args.pipeline_seconds,
        ).ceiling
        run = run_batch(settings.model_cache_dir, vga.jpeg, args.images, settings.runtime)
        ratio = run.per_second / ceiling.rate.per_second
        print(
            f"{settings.runtime}: batch job {run.per_second:.1f} images/s, in-process ceiling "
            f"{ceiling.rate.per_second:.1f} ({ceiling.mode}, batch {ceiling.batch_size}): {ratio:.2f}x "
            f"(load average {load_average()})"
        )


if __name__ == "__main__":
    main()
