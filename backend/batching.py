"""Dynamic batching: concurrent requests share the model's forward passes.

A dispatcher task owns the queue. It waits for a free inference slot, then for an image, then takes
everything already waiting (up to ``max_batch_size``) and hands it to an inference thread. While the
model runs, new arrivals queue up and form the next batch, so under load batches fill by themselves
and an idle server adds no delay. ``max_delay_s`` optionally holds a batch open a little longer for
more images, counted from the arrival of its first image, so an image that already waited behind a
busy model is not held again.

``workers`` batches may run at once, each on its own thread. On CPUs a small model often gets more
images per second from several single-threaded forward passes side by side than from one pass
spread over every core (see ``OnnxRuntime``); with ``workers=1`` passes run one after another.

The queue is bounded: when it cannot take a request's images, ``submit`` raises ``QueueFull`` at once
and the caller answers 503 with Retry-After, instead of letting requests pile up and time out.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """The batcher cannot take more images now."""


class BatcherClosed(Exception):
    """The batcher is shutting down and takes no new images."""


@dataclass(eq=False)  # compared by identity (deque.remove), never by pixels
class _Item:
    pixels: np.ndarray
    future: asyncio.Future[np.ndarray]
    arrived: float = field(default_factory=time.perf_counter)
    ran: tuple[float, float, int] | None = None  # its forward pass: start, end, batch size


@dataclass(frozen=True)
class ImageTimes:
    """One image's way through the batcher, in ``time.perf_counter`` seconds (for traces): queued at
    ``arrived``, in a forward pass of ``batch_size`` images from ``started`` to ``finished`` (on its thread)."""

    arrived: float
    started: float
    finished: float
    batch_size: int


@dataclass
class BatchStats:
    """What the batcher reports after each batch (for metrics)."""

    size: int
    seconds: float
    queue_depth: int


class Batcher:
    def __init__(
        self,
        infer: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch_size: int = 8,
        max_delay_s: float = 0.0,
        max_queue_size: int = 64,
        workers: int = 1,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._infer = infer
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue_size = max_queue_size
        self.workers = workers
        self._on_batch = on_batch
        self._queue: collections.deque[_Item] = collections.deque()
        self._wakeup = asyncio.Event()  # an image arrived (or the batcher is closing)
        self._answered = asyncio.Event()  # a request got its answers (or gave up)
        self._slots = asyncio.Semaphore(workers)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inference")
        self._dispatcher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._closing = False
        self._batch_started: dict[asyncio.Task[None], float] = {}
        self.in_flight = 0  # images submitted and not yet answered

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def longest_running_batch_s(self) -> float:
        """How long the oldest forward pass in progress has been running (0 when none is)."""
        if not self._batch_started:
            return 0.0
        return time.perf_counter() - min(self._batch_started.values())

    def start(self) -> None:
        if self._dispatcher is None:
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch(), name="batcher")

    async def submit(self, images: Sequence[np.ndarray], times: list[ImageTimes] | None = None) -> list[np.ndarray]:
        """Probabilities for each image, in order. All of a request's images are admitted, or none.
        ``times``, if given, receives each image's ``ImageTimes`` once all are answered."""
        if self._closing:
            raise BatcherClosed("the server is shutting down")
        if len(self._queue) + len(images) > self.max_queue_size:
            raise QueueFull(f"{len(self._queue)} images are already waiting")
        loop = asyncio.get_running_loop()
        items = [_Item(pixels, loop.create_future()) for pixels in images]
        self._queue.extend(items)
        self.in_flight += len(items)
        self._wakeup.set()
        try:
            rows = list(await asyncio.gather(*(item.future for item in items)))
            if times is not None:
                times.extend(ImageTimes(item.arrived, *item.ran) for item in items if item.ran is not None)
            return rows
        finally:
            self.in_flight -= len(items)
            self._answered.set()
            for item in items:
                item.future.cancel()  # does nothing to an answered image
                if item.future.cancelled():  # the request gave up (timeout, disconnect): free its places now
                    with contextlib.suppress(ValueError):  # unless a batch already took the image
                        self._queue.remove(item)

    def _take(self, batch: list[_Item]) -> None:
        while self._queue and len(batch) < self.max_batch_size:
            item = self._queue.popleft()
            if not item.future.done():  # skip images whose request has gone
                batch.append(item)

    async def _next_batch(self) -> list[_Item]:
        batch: list[_Item] = []
        while not batch:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            self._take(batch)
        deadline = batch[0].arrived + self.max_delay_s
        while len(batch) < self.max_batch_size and not self._closing:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                break
            self._take(batch)
        return batch

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()  # a batch forms only once a thread is free to run it
            try:
                batch = await self._next_batch()
            except BaseException:
                self._slots.release()
                raise
            task = loop.create_task(self._execute(batch), name="batch")
            self._running.add(task)
            self._batch_started[task] = time.perf_counter()
            task.add_done_callback(self._running.discard)
            task.add_done_callback(self._forget_batch)

    def _forget_batch(self, task: asyncio.Task[None]) -> None:
        self._batch_started.pop(task, None)

    async def _execute(self, batch: list[_Item]) -> None:
        try:
            started = time.perf_counter()
            try:
                pixels = [item.pixels for item in batch]
                probabilities, ran_from, ran_to = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._run, pixels
                )
            except Exception as exc:  # a model failure fails this batch's requests, not the batcher
                logger.exception("inference failed", extra={"batch_size": len(batch)})
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                return
            ran = (ran_from, ran_to, len(batch))
            for item, row in zip(batch, probabilities, strict=True):
                if not item.future.done():
                    item.ran = ran
                    item.future.set_result(row)
            if self._on_batch is not None:
                self._on_batch(BatchStats(len(batch), time.perf_counter() - started, len(self._queue)))
        finally:
            self._slots.release()

    def _run(self, pixels: list[np.ndarray]) -> tuple[np.ndarray, float, float]:
        """One forward pass, on an inference thread, and when it started and ended. The images are stacked here
        rather than on the event loop (a 150 kB copy per image: 0.1 to 0.2 ms that held up every request), and
        not at all for one image."""
        started = time.perf_counter()
        probabilities = self._infer(pixels[0][np.newaxis] if len(pixels) == 1 else np.stack(pixels))
        return probabilities, started, time.perf_counter()

    def abort(self) -> None:
        """Refuse new images and fail every queued one with ``BatcherClosed`` (forward passes running finish)."""
        self._closing = True
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(BatcherClosed("the server is shutting down"))
        self._wakeup.set()

    async def close(self) -> None:
        """Stop taking images, finish every image already accepted, then stop the dispatcher."""
        self._closing = True
        self._wakeup.set()  # a batch held open for more images goes now
        while self.in_flight:
            self._answered.clear()
            await self._answered.wait()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        self._executor.shutdown(wait=True)
