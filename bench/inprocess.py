"""The ceiling: how fast the classifier is inside one process, with no HTTP in the way.

- model alone: ``Classifier.probabilities`` on batches of already prepared images, per batch size,
  from one thread and, when the runtime runs several calls side by side (``parallel_calls``, as the
  server's batcher then does), from that many threads;
- pipeline: ``Classifier.prepare`` (decode + preprocess a JPEG) then ``Classifier.probabilities``,
  sequentially in one thread, and overlapped: decoding on a thread pool (one thread per CPU, like the
  server's) while ``parallel_calls`` model threads run batches. The faster one is the ceiling.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from backend.classifier import (
    Classifier,
    ImageLimits,
    ModelSpec,
    Precision,
    RuntimeName,
    default_threads,
    load_classifier,
)

logger = logging.getLogger(__name__)

LIMITS = ImageLimits()


@dataclass(frozen=True)
class Rate:
    """``images`` processed in ``seconds``."""

    images: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * self.seconds / self.images if self.images else float("nan")


@dataclass(frozen=True)
class PipelineRun:
    mode: str  # "sequential" or "overlapped"
    batch_size: int
    model_threads: int
    rate: Rate


@dataclass
class RuntimeCeiling:
    runtime: RuntimeName
    parallel_calls: int
    model: dict[int, Rate] = field(default_factory=dict)  # batch size -> model alone, one caller
    model_parallel: dict[int, Rate] = field(default_factory=dict)  # batch size -> parallel_calls callers
    pipeline: list[PipelineRun] = field(default_factory=list)
    single_image_ms: float = float("nan")  # median prepare + probabilities, one 640x480 JPEG at a time
    prepare_ms: dict[str, float] = field(default_factory=dict)  # photo size -> median decode + preprocess

    @property
    def best_model(self) -> tuple[int, int, Rate]:
        """(callers, batch size, rate) of the fastest model-alone run."""
        runs = [(1, b, r) for b, r in self.model.items()]
        runs += [(self.parallel_calls, b, r) for b, r in self.model_parallel.items()]
        return max(runs, key=lambda run: run[2].per_second)

    @property
    def best_batch(self) -> int:
        return self.best_model[1]

    def best(self, mode: str) -> PipelineRun:
        return max((run for run in self.pipeline if run.mode == mode), key=lambda run: run.rate.per_second)

    @property
    def ceiling(self) -> PipelineRun:
        """The faster pipeline, sequential or overlapped: what a server on this machine can approach."""
        return max(self.pipeline, key=lambda run: run.rate.per_second)


def _run_threads(work: Callable[[float], int], threads: int, seconds: float) -> Rate:
    """Run ``work(deadline)`` (which returns how many images it did) on ``threads`` threads at once."""
    counts = [0] * threads
    started = time.perf_counter()
    deadline = started + seconds

    def run(index: int) -> None:
        counts[index] = work(deadline)

    workers = [threading.Thread(target=run, args=(i,), name=f"bench-{i}") for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return Rate(sum(counts), time.perf_counter() - started)


def _until(deadline: float, step: Callable[[], int], min_steps: int = 3) -> int:
    images = steps = 0
    while steps < min_steps or time.perf_counter() < deadline:
        images += step()
        steps += 1
    return images


def measure_model(
    classifier: Classifier, pixels: np.ndarray, batch_sizes: list[int], seconds: float, callers: int = 1
) -> dict[int, Rate]:
    rates: dict[int, Rate] = {}
    for n in batch_sizes:
        batch = np.repeat(pixels[None], n, axis=0)  # a new, writable array, like np.stack gives the batcher
        for _ in range(2):  # warm-up: first runs of a new shape allocate
            classifier.probabilities(batch)

        def step(batch: np.ndarray = batch) -> int:
            classifier.probabilities(batch)
            return len(batch)

        rates[n] = _run_threads(partial(_until, step=step), callers, seconds)
        logger.info("model alone, batch %d, %d caller(s): %.1f images/s", n, callers, rates[n].per_second)
    return rates


def _median_ms(action: Callable[[], object], seconds: float, min_runs: int = 5) -> float:
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        action()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def measure_sequential(classifier: Classifier, jpeg: bytes, batch_size: int, seconds: float) -> Rate:
    def step() -> int:
        batch = np.stack([classifier.prepare(jpeg, LIMITS).pixels for _ in range(batch_size)])
        classifier.probabilities(batch)
        return batch_size

    step()
    return _run_threads(partial(_until, step=step), 1, seconds)


def measure_overlapped(
    classifier: Classifier, jpeg: bytes, batch_size: int, seconds: float, decoders: int, model_threads: int
) -> Rate:
    """``model_threads`` threads run the model on batches of ``batch_size``; each has its next batch decoded
    on a pool of ``decoders`` threads while its current batch runs."""

    def prepare() -> np.ndarray:
        return classifier.prepare(jpeg, LIMITS).pixels

    with ThreadPoolExecutor(decoders, thread_name_prefix="bench-decode") as pool:

        def work(deadline: float) -> int:
            upcoming = [pool.submit(prepare) for _ in range(batch_size)]

            def step() -> int:
                nonlocal upcoming
                current, upcoming = upcoming, [pool.submit(prepare) for _ in range(batch_size)]
                classifier.probabilities(np.stack([job.result() for job in current]))
                return batch_size

            done = _until(deadline, step)
            for job in upcoming:
                job.cancel()
            return done

        work(time.perf_counter())  # warm-up
        return _run_threads(work, model_threads, seconds)


def measure_runtime(
    runtime: RuntimeName,
    cache_dir: Path,
    photos: dict[str, bytes],
    *,
    vga: str,
    batch_sizes: list[int],
    model_seconds: float,
    pipeline_seconds: float,
    threads: int = 0,
    precision: Precision = "fp32",
) -> RuntimeCeiling:
    """Every in-process number for one runtime. ``photos``: size label -> JPEG; ``vga`` names the 640x480 one."""
    classifier = load_classifier(
        ModelSpec(), runtime=runtime, cache_dir=cache_dir, threads=threads, precision=precision
    )
    parallel = classifier.runtime.parallel_calls
    jpeg = photos[vga]
    pixels = classifier.prepare(jpeg, LIMITS).pixels
    result = RuntimeCeiling(runtime, parallel)
    result.model = measure_model(classifier, pixels, batch_sizes, model_seconds)
    if parallel > 1:
        result.model_parallel = measure_model(classifier, pixels, batch_sizes, model_seconds, callers=parallel)
    for label, data in photos.items():
        result.prepare_ms[label] = _median_ms(partial(classifier.prepare, data, LIMITS), pipeline_seconds / 4)

    def one_image() -> np.ndarray:
        return classifier.probabilities(classifier.prepare(jpeg, LIMITS).pixels[None])

    result.single_image_ms = _median_ms(one_image, pipeline_seconds)
    decoders = default_threads()  # what the server's decode pool uses
    for batch_size in sorted({1, result.best_batch}):
        seq = measure_sequential(classifier, jpeg, batch_size, pipeline_seconds)
        result.pipeline.append(PipelineRun("sequential", batch_size, 1, seq))
        over = measure_overlapped(classifier, jpeg, batch_size, pipeline_seconds, decoders, parallel)
        result.pipeline.append(PipelineRun("overlapped", batch_size, parallel, over))
        for run in result.pipeline[-2:]:
            logger.info(
                "pipeline %s, batch %d, %d model thread(s): %.1f images/s",
                run.mode,
                batch_size,
                run.model_threads,
                run.rate.per_second,
            )
    return result
