"""Dynamic batching: concurrent requests share one forward pass.

One worker task owns the model. It sleeps until an image arrives, then takes everything already
waiting (up to ``max_batch_size``) and runs it at once. While that batch runs, new arrivals queue up
and form the next batch, so under load batches fill by themselves and an idle server adds no delay.
``max_delay_s`` optionally holds a batch open a little longer for more images, counted from the
arrival of its first image, so an image that already waited behind a busy model is not held again.

The queue is bounded: when it cannot take a request's images, ``submit`` raises ``QueueFull`` at once
and the caller answers 503 with Retry-After, instead of letting requests pile up and time out.
"""

from __future__ import annotations

import asyncio
import collections
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


@dataclass
class _Item:
    pixels: np.ndarray
    future: asyncio.Future[np.ndarray]
    arrived: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """What the worker reports after each batch (for metrics)."""

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
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self._infer = infer
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue_size = max_queue_size
        self._on_batch = on_batch
        self._queue: collections.deque[_Item] = collections.deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self.in_flight = 0  # images submitted and not yet answered

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def submit(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Probabilities for each image, in order. All of a request's images are admitted, or none."""
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
            return list(await asyncio.gather(*(item.future for item in items)))
        finally:
            self.in_flight -= len(items)
            for item in items:  # a request that gave up (timeout, disconnect) frees its queue places
                item.future.cancel()

    async def _next_batch(self) -> list[_Item]:
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()
        batch: list[_Item] = []
        deadline = self._queue[0].arrived + self.max_delay_s
        while len(batch) < self.max_batch_size:
            while self._queue and len(batch) < self.max_batch_size:
                item = self._queue.popleft()
                if not item.future.done():  # skip images whose request has gone
                    batch.append(item)
            remaining = deadline - time.perf_counter()
            if len(batch) >= self.max_batch_size or remaining <= 0 or self._closing:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            started = time.perf_counter()
            try:
                stacked = np.stack([item.pixels for item in batch])
                probabilities = await loop.run_in_executor(self._executor, self._infer, stacked)
            except Exception as exc:  # a model failure fails this batch's requests, not the worker
                logger.exception("inference failed", extra={"batch_size": len(batch)})
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            for item, row in zip(batch, probabilities, strict=True):
                if not item.future.done():
                    item.future.set_result(row)
            if self._on_batch is not None:
                self._on_batch(BatchStats(len(batch), time.perf_counter() - started, len(self._queue)))

    async def close(self) -> None:
        """Stop taking images, finish every image already accepted, then stop the worker."""
        self._closing = True
        while self._queue or self.in_flight:
            await asyncio.sleep(0.01)
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)
