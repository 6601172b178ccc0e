"""The dynamic batcher's promises: batches form under load, an idle server adds no delay, the queue is
bounded, several batches can run side by side, and shutting down finishes what was accepted.

The model here is a stand-in that records its batches and can be held (``Gate``), so each test
controls exactly when a forward pass ends. Time only appears as generous liveness bounds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest

from backend.batching import Batcher, BatcherClosed, BatchStats, QueueFull

LIVENESS_S = 10.0  # far longer than any step takes; only a hang or a wrong hold reaches it


def image(value: int) -> np.ndarray:
    return np.full((2, 2, 3), value, dtype=np.uint8)


class Model:
    """Answers each image with ``[its value, batch size]``; records batches; may be held shut."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Semaphore(0)  # released each time a forward pass starts
        self.lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        values = [int(x) for x in batch[:, 0, 0, 0]]
        with self.lock:
            self.batches.append(values)
        self.entered.release()
        if not self.open.wait(LIVENESS_S):
            raise TimeoutError("the test never released the model")
        return np.array([[v, len(values)] for v in values], dtype=np.float32)

    async def started(self) -> None:
        """Wait until a forward pass has begun."""
        if not await asyncio.to_thread(self.entered.acquire, True, LIVENESS_S):
            raise TimeoutError("no forward pass started")


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 4 * LIVENESS_S))


async def started_batcher(model: Model, **options: Any) -> Batcher:
    batcher = Batcher(model, **options)
    batcher.start()
    return batcher


def test_an_idle_server_runs_a_lone_image_at_once() -> None:
    async def scenario() -> None:
        model = Model()
        batcher = await started_batcher(model, max_batch_size=8, max_delay_s=0.0)
        rows = await asyncio.wait_for(batcher.submit([image(7)]), LIVENESS_S)
        assert [r.tolist() for r in rows] == [[7, 1]]
        assert model.batches == [[7]]
        await batcher.close()

    run(scenario)


def test_a_request_with_several_images_is_answered_in_order_through_one_batch() -> None:
    async def scenario() -> None:
        model = Model()
        batcher = await started_batcher(model, max_batch_size=8)
        rows = await batcher.submit([image(1), image(2), image(3)])
        assert [r.tolist() for r in rows] == [[1, 3], [2, 3], [3, 3]]
        assert model.batches == [[1, 2, 3]]
        await batcher.close()

    run(scenario)


def test_requests_arriving_while_the_model_is_busy_form_the_next_batch() -> None:
    async def scenario() -> None:
        model = Model()
        model.open.clear()
        batcher = await started_batcher(model, max_batch_size=3)
        first = asyncio.create_task(batcher.submit([image(1)]))
        await model.started()
        waiting = [asyncio.create_task(batcher.submit([image(v)])) for v in (2, 3, 4, 5)]
        await asyncio.sleep(0)  # let them queue
        assert batcher.queue_depth == 4
        model.open.set()
        await asyncio.gather(first, *waiting)
        assert model.batches == [[1], [2, 3, 4], [5]]  # full batches of max_batch_size, in arrival order
        await batcher.close()

    run(scenario)


def test_a_full_queue_refuses_at_once_and_a_request_is_admitted_whole_or_not_at_all() -> None:
    async def scenario() -> None:
        model = Model()
        model.open.clear()
        batcher = await started_batcher(model, max_batch_size=1, max_queue_size=3)
        running = asyncio.create_task(batcher.submit([image(1)]))
        await model.started()  # image 1 is in the model, not in the queue
        queued = asyncio.create_task(batcher.submit([image(2), image(3)]))
        await asyncio.sleep(0)
        assert batcher.queue_depth == 2
        with pytest.raises(QueueFull):
            await batcher.submit([image(4), image(5)])  # 2 + 2 > 3: refused without waiting
        assert batcher.queue_depth == 2  # nothing of the refused request was queued
        last = asyncio.create_task(batcher.submit([image(6)]))  # 2 + 1 <= 3 fits
        await asyncio.sleep(0)
        model.open.set()
        await asyncio.gather(running, queued, last)
        assert sorted(v for batch in model.batches for v in batch) == [1, 2, 3, 6]
        await batcher.close()

    run(scenario)


def test_a_request_that_gives_up_frees_its_places_and_is_never_computed() -> None:
    async def scenario() -> None:
        model = Model()
        model.open.clear()
        batcher = await started_batcher(model, max_batch_size=4, max_queue_size=2)
        running = asyncio.create_task(batcher.submit([image(1)]))
        await model.started()
        gone = asyncio.create_task(batcher.submit([image(2), image(3)]))
        await asyncio.sleep(0)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert batcher.in_flight == 1
        kept = asyncio.create_task(batcher.submit([image(4)]))  # admitted: cancelled images do not count
        await asyncio.sleep(0)
        model.open.set()
        await asyncio.gather(running, kept)
        assert model.batches == [[1], [4]]
        await batcher.close()

    run(scenario)


def test_the_delay_holds_a_batch_open_for_more_images() -> None:
    async def scenario() -> None:
        model = Model()
        batcher = await started_batcher(model, max_batch_size=2, max_delay_s=LIVENESS_S)
        first = asyncio.create_task(batcher.submit([image(1)]))
        await asyncio.sleep(0.05)
        assert model.batches == []  # held for a second image
        await asyncio.wait_for(asyncio.gather(first, batcher.submit([image(2)])), LIVENESS_S / 2)
        assert model.batches == [[1, 2]]  # went as soon as it was full, long before the delay
        await batcher.close()

    run(scenario)


@pytest.mark.slow
def test_the_delay_counts_from_the_first_arrival_so_an_image_that_waited_is_not_held_again() -> None:
    delay = 2.0

    async def scenario() -> None:
        model = Model()
        model.open.clear()
        batcher = await started_batcher(model, max_batch_size=2, max_delay_s=delay)
        busy = asyncio.create_task(batcher.submit([image(1), image(2)]))  # a full batch: runs at once
        await model.started()
        waited = asyncio.create_task(batcher.submit([image(3)]))
        await asyncio.sleep(delay * 1.25)  # image 3 waits behind the busy model for longer than the delay
        model.open.set()
        released = time.perf_counter()
        await busy
        await asyncio.wait_for(waited, delay * 0.9)  # held again, it would need the whole delay
        assert time.perf_counter() - released < delay * 0.9
        assert model.batches == [[1, 2], [3]]
        await batcher.close()

    run(scenario)


def test_several_workers_run_batches_side_by_side() -> None:
    async def scenario() -> None:
        barrier = threading.Barrier(2, timeout=LIVENESS_S)

        def model(batch: np.ndarray) -> np.ndarray:
            barrier.wait()  # passes only when two forward passes are running at the same time
            return batch[:, 0, 0, :1].astype(np.float32)

        batcher = Batcher(model, max_batch_size=1, workers=2)
        batcher.start()
        rows = await asyncio.gather(batcher.submit([image(1)]), batcher.submit([image(2)]))
        assert [r[0].tolist() for r in rows] == [[1.0], [2.0]]
        await batcher.close()

    run(scenario)


def test_one_worker_runs_one_batch_at_a_time() -> None:
    async def scenario() -> None:
        inside = 0
        most = 0
        lock = threading.Lock()

        def model(batch: np.ndarray) -> np.ndarray:
            nonlocal inside, most
            with lock:
                inside += 1
                most = max(most, inside)
            time.sleep(0.01)
            with lock:
                inside -= 1
            return batch[:, 0, 0, :1].astype(np.float32)

        batcher = Batcher(model, max_batch_size=1, workers=1)
        batcher.start()
        await asyncio.gather(*(batcher.submit([image(v)]) for v in range(6)))
        assert most == 1
        await batcher.close()

    run(scenario)


def test_a_model_failure_fails_its_batch_only() -> None:
    async def scenario() -> None:
        calls = 0

        def model(batch: np.ndarray) -> np.ndarray:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("out of memory")
            return batch[:, 0, 0, :1].astype(np.float32)

        stats: list[BatchStats] = []
        batcher = Batcher(model, max_batch_size=4, on_batch=stats.append)
        batcher.start()
        with pytest.raises(RuntimeError, match="out of memory"):
            await batcher.submit([image(1)])
        rows = await batcher.submit([image(2), image(3)])
        assert [r.tolist() for r in rows] == [[2.0], [3.0]]
        assert [s.size for s in stats] == [2]  # only successful batches are reported
        await batcher.close()

    run(scenario)


def test_close_finishes_accepted_images_then_refuses_new_ones() -> None:
    async def scenario() -> None:
        model = Model()
        model.open.clear()
        batcher = await started_batcher(model, max_batch_size=1)
        accepted = [asyncio.create_task(batcher.submit([image(v)])) for v in (1, 2, 3)]
        await model.started()
        closing = asyncio.create_task(batcher.close())
        await asyncio.sleep(0)
        with pytest.raises(BatcherClosed):
            await batcher.submit([image(4)])
        assert not closing.done()  # still waiting for the accepted images
        model.open.set()
        rows = await asyncio.gather(*accepted)
        await closing
        assert [r[0].tolist() for r in rows] == [[1, 1], [2, 1], [3, 1]]

    run(scenario)


def test_workers_must_be_positive() -> None:
    async def scenario() -> None:
        with pytest.raises(ValueError, match="workers"):
            Batcher(Model(), workers=0)

    run(scenario)
