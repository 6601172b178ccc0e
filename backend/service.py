"""The model behind the API: loaded once in the background, warmed up, fed through the batcher."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from backend.batching import Batcher, BatchStats, ImageTimes, QueueFull
from backend.classifier import (
    BundleError,
    Classifier,
    DecoderPool,
    DecoderSettings,
    ImageError,
    Prediction,
    PreparedImage,
    default_threads,
    load_classifier,
)
from backend.config import Settings
from backend.metrics import Metrics
from backend.uploads import MemoryBudget, Upload

if TYPE_CHECKING:
    from backend.predictions import PredictionLog

if TYPE_CHECKING:
    from backend.tracing import RequestTracing

logger = logging.getLogger(__name__)

State = Literal["loading", "ready", "failed", "stopping"]


class NotReady(Exception):
    """The model is not serving (still loading, failed to load, or shutting down)."""

    def __init__(self, state: State, message: str) -> None:
        super().__init__(message)
        self.state = state
        self.code = f"model_{state}"
        self.message = message


class ImageFailed(Exception):
    """One image of a request could not be classified; ``error`` says why."""

    def __init__(self, error: ImageError, filename: str | None, index: int) -> None:
        super().__init__(error.message)
        self.error = error
        self.filename = filename
        self.index = index


@dataclass(frozen=True)
class ImageResult:
    filename: str | None
    prepared: PreparedImage
    predictions: list[Prediction]
    probabilities: np.ndarray  # every class's, for protocols that return the whole row (Open Inference v2)


ClassifierFactory = Callable[[Settings], Classifier]


def default_factory(settings: Settings) -> Classifier:
    return load_classifier(
        settings.model_spec,
        runtime=settings.runtime,
        cache_dir=settings.model_cache_dir,
        threads=settings.inference_threads,
        precision=settings.precision,
        model_dir=settings.model_dir,
    )


def decoder_settings(classifier: Classifier, settings: Settings) -> DecoderSettings:
    """The decoder processes, limits and CPU and memory budgets of ``settings`` (the service's; the batch job
    changes only how expensive images are scheduled)."""
    cpus = default_threads()
    return DecoderSettings(
        preprocessing=classifier.info.preprocessing,
        limits=settings.image_limits,
        cpu_seconds=settings.decode_timeout_s,
        memory_bytes=settings.decode_memory_bytes,
        # Two per CPU: while one process waits for its next image, another decodes (one per CPU left
        # the CPUs idle between images: fewer images/s than decoding in threads;
        # BENCHMARKS.md, "Measurements behind the code").
        workers=settings.decode_processes or 2 * cpus,
        slow_workers=cpus,
        statistics=settings.prediction_log_dir is not None,  # the prediction log's, computed on the crop
    )


class ModelService:
    def __init__(self, settings: Settings, metrics: Metrics, factory: ClassifierFactory = default_factory) -> None:
        self.settings = settings
        self.metrics = metrics
        self._factory = factory
        self.state: State = "loading"
        self.error: str | None = None
        self.classifier: Classifier | None = None
        self.batcher: Batcher | None = None
        self.decoders: DecoderPool | None = None
        self.uploads = MemoryBudget(settings.upload_memory_bytes)
        self.load_seconds: float | None = None
        self.draining = False  # SIGTERM arrived: /ready says 503 while accepted requests finish
        self._loader: asyncio.Task[None] | None = None
        self._abort: asyncio.TimerHandle | None = None
        # Images admitted and not yet answered: being decoded, queued, or in the model. Bounding this,
        # not only the batcher's queue, turns excess load into an immediate 503 before any decoding.
        self.admitted = 0
        self.capacity = settings.max_queue_size + settings.max_batch_size
        self.prediction_log: PredictionLog | None = None  # backend.predictions: None when PREDICTION_LOG_DIR is unset
        self.tracing: RequestTracing | None = None  # backend.tracing: None when tracing is off

    def start(self) -> None:
        """Begin loading in the background: the server answers /health (and /ready with 503) meanwhile."""
        self._loader = asyncio.get_running_loop().create_task(self._load(), name="model-loader")

    async def wait_ready(self) -> None:
        if self._loader is not None:
            await self._loader

    async def _load(self) -> None:
        started = time.perf_counter()
        decoders = None
        try:
            classifier = await asyncio.to_thread(self._factory, self.settings)
            decoders = DecoderPool(decoder_settings(classifier, self.settings))
            batch_sizes = tuple(sorted({1, self.settings.max_batch_size}))
            await asyncio.gather(asyncio.to_thread(classifier.warm_up, batch_sizes), decoders.start())
        except BaseException as exc:
            if decoders is not None:
                await asyncio.shield(decoders.close())  # no decoder process outlives a failed or cancelled load
            if not isinstance(exc, Exception):
                raise
            self.state = "failed"
            # /ready is open to everyone: it says what failed, the log says where. A bundle's message names
            # the file within MODEL_DIR and what to do, and no path.
            self.error = (
                exc.message
                if isinstance(exc, BundleError)
                else f"{type(exc).__name__}; the server's log has the details"
            )
            logger.exception("model failed to load")
            return
        self.classifier = classifier
        self.decoders = decoders
        self.batcher = Batcher(
            classifier.probabilities,
            max_batch_size=self.settings.max_batch_size,
            max_delay_s=self.settings.max_batch_delay_ms / 1000.0,
            max_queue_size=self.settings.max_queue_size,
            workers=classifier.runtime.parallel_calls,
            on_batch=self._record_batch,
        )
        self.batcher.start()
        self.capacity = self.settings.max_queue_size + self.batcher.workers * self.settings.max_batch_size
        self.load_seconds = time.perf_counter() - started
        info = classifier.info
        self.metrics.model_info.info(
            {
                "name": info.name,
                "version": classifier.version,
                "weights": info.weights,
                "source": info.source,
                "runtime": classifier.runtime.name,
            }
        )
        if self.state == "loading":
            self.state = "ready"
            self.metrics.ready.set(1)
        logger.info(
            "model ready",
            extra={"model": info.name, "version": classifier.version, "seconds": round(self.load_seconds, 3)},
        )

    def _record_batch(self, stats: BatchStats) -> None:
        self.metrics.batch_size.observe(stats.size)
        self.metrics.inference_latency.observe(stats.seconds)
        self.metrics.queue_depth.set(stats.queue_depth)

    def ensure_ready(self) -> tuple[Classifier, Batcher, DecoderPool]:
        if (
            self.state == "ready"
            and self.classifier is not None
            and self.batcher is not None
            and self.decoders is not None
        ):
            return self.classifier, self.batcher, self.decoders
        if self.state == "loading":
            raise NotReady(self.state, "The model is still loading. Retry in a few seconds.")
        if self.state == "stopping":
            raise NotReady(self.state, "The server is shutting down. Retry; another instance will answer.")
        raise NotReady(self.state, f"The model failed to load ({self.error}).")

    def ensure_capacity(self, images: int = 1) -> None:
        """Raise ``QueueFull`` (503 + Retry-After) if ``images`` more would exceed what the service takes.

        Requests of several images may fill only three quarters of the capacity: the rest stays for
        one-image requests (what the page and most clients send), which eight clients posting 16 images
        at a time otherwise crowded out with 503s.
        """
        limit = self.capacity if images == 1 else max(self.capacity - self.capacity // 4, self.settings.max_files)
        if self.admitted + images > limit:
            self.metrics.rejected.inc()
            raise QueueFull(f"{self.admitted} images are being processed, the limit is {limit}")

    async def classify(
        self, uploads: Sequence[Upload], top_k: int, route: str = "predict", started: float | None = None
    ) -> list[ImageResult]:
        """``route`` and ``started`` (the request's ``time.perf_counter()``) are for the prediction log."""
        started = time.perf_counter() if started is None else started
        classifier, batcher, decoders = self.ensure_ready()
        self.ensure_capacity(len(uploads))
        self.admitted += len(uploads)
        try:
            prepared = await self._prepare_all(decoders, uploads)
            rows = await self._submit(batcher, [p.pixels for p in prepared])
        except QueueFull:
            self.metrics.rejected.inc()
            raise
        finally:
            self.admitted -= len(uploads)
        self.metrics.images.inc(len(rows))
        if (log := self.prediction_log) is not None:
            for p, row in zip(prepared, rows, strict=True):
                log.record(
                    route, started, classifier, row, image=(p.width, p.height, p.format), statistics=p.statistics
                )
        return [
            ImageResult(upload.filename, p, classifier.top_k(row, top_k), row)
            for upload, p, row in zip(uploads, prepared, rows, strict=True)
        ]

    async def classify_pixels(
        self, pixels: Sequence[np.ndarray], route: str = "v2", started: float | None = None
    ) -> list[np.ndarray]:
        """Probabilities for images a client preprocessed itself (``uint8`` ``(H, W, 3)`` crops): the same
        admission, queue and batcher as ``classify``, without the decoders."""
        started = time.perf_counter() if started is None else started
        classifier, batcher, _ = self.ensure_ready()
        self.ensure_capacity(len(pixels))
        self.admitted += len(pixels)
        try:
            rows = await self._submit(batcher, pixels)
        except QueueFull:
            self.metrics.rejected.inc()
            raise
        finally:
            self.admitted -= len(pixels)
        self.metrics.images.inc(len(rows))
        if (log := self.prediction_log) is not None:
            for crop, row in zip(pixels, rows, strict=True):  # no decode: the tensor's size, statistics from it
                image = (crop.shape[1], crop.shape[0], "tensor")
                log.record(route, started, classifier, row, image=image, statistics=None, crop=crop)
        return rows

    async def _submit(self, batcher: Batcher, pixels: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self.tracing is None:
            return await batcher.submit(pixels)
        times: list[ImageTimes] = []
        rows = await batcher.submit(pixels, times)
        self.tracing.record_batcher(times)  # queue wait and inference spans, per image
        return rows

    async def _prepare_all(self, decoders: DecoderPool, uploads: Sequence[Upload]) -> list[PreparedImage]:
        """Decode every image of a request (in the decoder processes); the first failure stops the others."""
        owner = object()  # this request: the pool shares its decoders fairly between requests
        started = time.perf_counter()
        prepare = decoders.prepare if self.tracing is None else self.tracing.decoding(decoders.prepare)
        tasks = [asyncio.ensure_future(prepare(upload.data, owner)) for upload in uploads]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()  # nothing if already done; stops (kills) the rest if one failed or we were cancelled
        for index, (upload, task) in enumerate(zip(uploads, tasks, strict=True)):
            if not task.done() or task.cancelled():
                continue  # stopped because another image of the request failed
            error = task.exception()
            if isinstance(error, ImageError):
                self.metrics.image_errors.labels(error.code).inc()
                raise ImageFailed(error, upload.filename, index)
            if error is not None:
                raise error
        self.metrics.preprocess_latency.observe((time.perf_counter() - started) / len(uploads))
        return [task.result() for task in tasks]

    def health(self) -> str | None:
        """Why the service cannot do its work (liveness), or None."""
        stall = self.settings.stall_timeout_s
        if self.batcher is not None and (running := self.batcher.longest_running_batch_s()) > stall:
            return f"a forward pass has been running for {running:.0f} s (more than {stall:g} s)"
        if self.decoders is not None:
            return self.decoders.health(stall)
        return None

    def begin_shutdown(self, grace_s: float) -> None:
        """SIGTERM: report not-ready now; after ``grace_s``, answer whatever is still in progress with 503."""
        if self.draining:
            return
        self.draining = True
        self.metrics.ready.set(0)
        self._abort = asyncio.get_running_loop().call_later(grace_s, self._abort_in_progress)

    def _abort_in_progress(self) -> None:
        """The grace period is over: stop decoding and queued images, so their requests get a JSON 503."""
        logger.warning("shutdown grace period over; answering requests still in progress with 503")
        self.state = "stopping"
        if self.batcher is not None:
            self.batcher.abort()
        if self.decoders is not None:
            asyncio.get_running_loop().create_task(self.decoders.close())

    async def stop(self, grace_s: float) -> None:
        """Refuse new work, let accepted images finish (up to ``grace_s``), stop the decoders and threads."""
        self.state = "stopping"
        self.metrics.ready.set(0)
        if self._abort is not None:
            self._abort.cancel()
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
        if self.batcher is not None:
            try:
                await asyncio.wait_for(self.batcher.close(), grace_s)
            except TimeoutError:
                logger.warning("shutdown grace period over with images still queued")
        if self.decoders is not None:
            await self.decoders.close()
