"""The model behind the API: loaded once in the background, warmed up, fed through the batcher."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from backend.batching import Batcher, BatchStats, QueueFull
from backend.classifier import Classifier, ImageError, Prediction, PreparedImage, default_threads, load_classifier
from backend.config import Settings
from backend.metrics import Metrics
from backend.uploads import Upload

logger = logging.getLogger(__name__)

State = Literal["loading", "ready", "failed", "stopping"]


class NotReady(Exception):
    """The model is not serving (still loading, failed to load, or shutting down)."""

    def __init__(self, state: State, message: str) -> None:
        super().__init__(message)
        self.state = state
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


ClassifierFactory = Callable[[Settings], Classifier]


def default_factory(settings: Settings) -> Classifier:
    return load_classifier(
        settings.model_spec,
        runtime=settings.runtime,
        cache_dir=settings.model_cache_dir,
        threads=settings.inference_threads,
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
        self.load_seconds: float | None = None
        # Pillow releases the GIL while decoding and resizing, so one thread per CPU decodes in parallel.
        self._decoders = ThreadPoolExecutor(max_workers=default_threads(), thread_name_prefix="decode")
        self._loader: asyncio.Task[None] | None = None
        # Images admitted and not yet answered: being decoded, queued, or in the model. Bounding this,
        # not only the batcher's queue, turns excess load into an immediate 503 before any decoding.
        self.admitted = 0
        self.capacity = settings.max_queue_size + settings.max_batch_size

    def start(self) -> None:
        """Begin loading in the background: the server answers /health (and /ready with 503) meanwhile."""
        self._loader = asyncio.get_running_loop().create_task(self._load(), name="model-loader")

    async def wait_ready(self) -> None:
        if self._loader is not None:
            await self._loader

    async def _load(self) -> None:
        started = time.perf_counter()
        try:
            classifier = await asyncio.to_thread(self._factory, self.settings)
            batch_sizes = tuple(sorted({1, self.settings.max_batch_size}))
            await asyncio.to_thread(classifier.warm_up, batch_sizes)
        except Exception as exc:
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
            logger.exception("model failed to load")
            return
        self.classifier = classifier
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
            {"name": info.name, "weights": info.weights, "source": info.source, "runtime": classifier.runtime.name}
        )
        if self.state == "loading":
            self.state = "ready"
            self.metrics.ready.set(1)
        logger.info("model ready", extra={"model": info.name, "seconds": round(self.load_seconds, 3)})

    def _record_batch(self, stats: BatchStats) -> None:
        self.metrics.batch_size.observe(stats.size)
        self.metrics.inference_latency.observe(stats.seconds)
        self.metrics.queue_depth.set(stats.queue_depth)

    def ensure_ready(self) -> tuple[Classifier, Batcher]:
        if self.state == "ready" and self.classifier is not None and self.batcher is not None:
            return self.classifier, self.batcher
        if self.state == "loading":
            raise NotReady(self.state, "The model is still loading. Retry in a few seconds.")
        if self.state == "stopping":
            raise NotReady(self.state, "The server is shutting down. Retry; another instance will answer.")
        raise NotReady(self.state, f"The model failed to load: {self.error}")

    def ensure_capacity(self, images: int = 1) -> None:
        """Raise ``QueueFull`` (503 + Retry-After) if ``images`` more would exceed what the service takes."""
        if self.admitted + images > self.capacity:
            raise QueueFull(f"{self.admitted} images are being processed, the limit is {self.capacity}")

    def _prepare(self, classifier: Classifier, upload: Upload) -> PreparedImage:
        started = time.perf_counter()
        prepared = classifier.prepare(upload.data, self.settings.image_limits)
        self.metrics.preprocess_latency.observe(time.perf_counter() - started)
        return prepared

    async def classify(self, uploads: Sequence[Upload], top_k: int) -> list[ImageResult]:
        classifier, batcher = self.ensure_ready()
        self.ensure_capacity(len(uploads))
        self.admitted += len(uploads)
        try:
            return await self._classify(classifier, batcher, uploads, top_k)
        finally:
            self.admitted -= len(uploads)

    async def _classify(
        self, classifier: Classifier, batcher: Batcher, uploads: Sequence[Upload], top_k: int
    ) -> list[ImageResult]:
        loop = asyncio.get_running_loop()
        jobs = [loop.run_in_executor(self._decoders, self._prepare, classifier, upload) for upload in uploads]
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)
        prepared: list[PreparedImage] = []
        for index, (upload, outcome) in enumerate(zip(uploads, outcomes, strict=True)):
            if isinstance(outcome, ImageError):
                self.metrics.image_errors.labels(outcome.code).inc()
                raise ImageFailed(outcome, upload.filename, index)
            if isinstance(outcome, BaseException):
                raise outcome
            prepared.append(outcome)
        rows = await batcher.submit([p.pixels for p in prepared])
        self.metrics.images.inc(len(rows))
        return [
            ImageResult(upload.filename, p, classifier.top_k(row, top_k))
            for upload, p, row in zip(uploads, prepared, rows, strict=True)
        ]

    async def stop(self, grace_s: float) -> None:
        """Refuse new work, let accepted images finish (up to ``grace_s``), release threads."""
        self.state = "stopping"
        self.metrics.ready.set(0)
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
        if self.batcher is not None:
            try:
                await asyncio.wait_for(self.batcher.close(), grace_s)
            except TimeoutError:
                logger.warning("shutdown grace period over with images still queued")
        self._decoders.shutdown(wait=False, cancel_futures=True)
