"""``python -m backend.batch INPUT OUTPUT [--format parquet|jsonl] [--top-k K] [--rescan]``

INPUT: a folder of images (searched recursively; hidden names skipped) or a file listing image paths, one a
line (relative to the list's folder). OUTPUT: a folder for the result shards. Settings (the model, limits,
budgets, CLOUD_RUN_TASK_INDEX / CLOUD_RUN_TASK_COUNT, JOB_*) come from the environment, as the service's.

Exit status: 0 when this task's share is all in shards (images that failed included: each is recorded with
its error code), 1 on a failure of the job itself (model, INPUT, OUTPUT), 2 for bad arguments, 143 when
stopped by SIGTERM (or 130 by Ctrl-C) with what was done written.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from backend.classifier import ClassifierError
from backend.config import get_settings
from backend.logs import configure_logging

from ._inputs import InputError
from ._job import DecodersFailed, Summary, Task, TaskConfigError
from ._output import FORMATS, OutputError

logger = logging.getLogger("backend.batch")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m backend.batch",
        description="Classify a folder or a list of images into result shards; one task of a Cloud Run job.",
        epilog="docs/batch.md: the output's columns, deploying it as a Cloud Run job, re-runs and retries.",
    )
    parser.add_argument("input", type=Path, metavar="INPUT", help="a folder of images, or a file listing paths")
    parser.add_argument("output", type=Path, metavar="OUTPUT", help="the folder that receives the result shards")
    parser.add_argument("--format", choices=FORMATS, default="parquet", help="shard format (default: %(default)s)")
    parser.add_argument("--top-k", type=int, default=None, help="classes per image (default: DEFAULT_TOP_K)")
    parser.add_argument(
        "--rescan",
        action="store_true",
        help="list INPUT again even if this task's completion marker exists (to take images added since)",
    )
    args = parser.parse_args(argv)
    if args.top_k is not None and not 1 <= args.top_k <= 1000:
        parser.error(f"--top-k must be 1 to 1000, got {args.top_k}")
    return args


def event_loop() -> asyncio.AbstractEventLoop:
    """The task's event loop: asyncio's own, not uvloop (the service's). uvloop 0.23 closes the descriptor of a
    pipe given to ``connect_read_pipe``/``connect_write_pipe`` twice: libuv closes it, then the file object does
    (at once, or when it is collected if the connection was cancelled): MagicStack/uvloop#763, fix pending in
    #764. The decoder pool gives it its pipes as file objects, and closes them whenever it retires a process
    (with one decoder process, after every image). A file another thread opens between the two closes may be
    given that number: here an image being read or a shard being written, which then fails with EBADF (on a busy
    machine, a SIGTERMed task exited 1 instead of 143) or reads another file's bytes. asyncio's loop closes each
    pipe once (tests/batch/test_stopping.py), and costs the task nothing measurable: 1,500 640x480 JPEGs, two
    interleaved rounds each, 78.2 and 75.8 images/s on asyncio's loop, 77.1 and 73.3 on uvloop (load 6-7)."""
    return asyncio.SelectorEventLoop()


async def _run(task: Task, signals: dict[signal.Signals, int]) -> tuple[Summary, int]:
    """The task's summary, and the exit status: 0, or that of the first signal that stopped it."""
    loop = asyncio.get_running_loop()
    received: list[signal.Signals] = []

    def on_signal(number: signal.Signals) -> None:
        received.append(number)
        task.stop()

    for number in signals:
        loop.add_signal_handler(number, on_signal, number)
    summary = await task.run()
    return summary, signals[received[0]] if received else 0


def _summary_text(summary: Summary) -> str:
    codes = ", ".join(f"{code} {n:,}" for code, n in sorted(summary.errors_by_code.items())) or "none"
    return (
        f"task {summary.task_index} of {summary.task_count}: {summary.classified:,} images classified in "
        f"{summary.seconds:.1f} s ({summary.images_per_second:.1f} images/s), errors: {codes}; "
        f"{summary.already_done:,} of its {summary.assigned:,} were done before; "
        f"{len(summary.shards)} shards written; {'complete' if summary.complete else 'NOT complete'}\n"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level)
    terminal = sys.stderr if sys.stderr.isatty() else None
    try:
        task = Task(
            settings,
            args.input,
            args.output,
            fmt=args.format,
            top_k=args.top_k,
            rescan=args.rescan,
            terminal=terminal,
        )
        with asyncio.Runner(loop_factory=event_loop) as runner:
            summary, status = runner.run(_run(task, {signal.SIGTERM: 143, signal.SIGINT: 130}))
    except (TaskConfigError, InputError, OutputError, DecodersFailed, ClassifierError, OSError) as exc:
        logger.error("the batch task failed", extra={"error": type(exc).__name__, "detail": str(exc)})
        if terminal is not None:
            terminal.write(f"error: {exc}\n")
        sys.exit(1)
    logger.info("batch task finished" if summary.complete else "batch task stopped", extra=summary.as_dict())
    if terminal is not None:
        terminal.write(_summary_text(summary))
    sys.exit(status)


if __name__ == "__main__":
    main()
