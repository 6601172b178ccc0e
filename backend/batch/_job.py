"""One task of the batch job: its share of INPUT through the service's decoders and batcher, into shards.

The pipeline is the service's, without HTTP: files are read on a few threads (Cloud Storage FUSE answers
each read after tens of milliseconds, so several are in flight), decoded in the ``DecoderPool``'s processes
(the same CPU, memory and size budgets as an upload), and classified by the ``Batcher`` on as many
inference threads as the runtime runs side by side. A bounded number of images is in flight at once
(``MAX_QUEUE_SIZE``), and so are the bytes read and not yet decoded (``UPLOAD_MEMORY_BYTES``).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

from backend.batching import Batcher
from backend.classifier import (
    Classifier,
    ClassifierError,
    DecoderBusy,
    DecoderClosed,
    DecoderPool,
    DecoderSettings,
    ImageError,
    ImageTooLarge,
    PreparedImage,
)
from backend.config import Settings
from backend.service import decoder_settings as service_decoder_settings
from backend.service import default_factory

from ._inputs import Item, list_inputs, task_of
from ._output import Format, Rows, ShardStore
from ._progress import Progress

logger = logging.getLogger("backend.batch")

READ_THREADS: Final = 16  # reads in flight: enough to hide Cloud Storage's per-object latency
BUSY_RETRIES: Final = 5  # an image the decoders were too busy for is tried this many more times (~12 s)
WALL_FACTOR: Final = 10.0  # a decode may take 1 s + this many wall-clock seconds per CPU second of its budget
UNREADABLE: Final = "unreadable"  # the error code of a file that cannot be read


class Unreadable(Exception):
    """The file cannot be read (gone, not a regular file, no permission, an I/O error)."""


class TaskConfigError(Exception):
    """The task's settings do not fit together (e.g. CLOUD_RUN_TASK_INDEX >= CLOUD_RUN_TASK_COUNT)."""


@dataclass
class Summary:
    """What one run of a task did (the last log line, and the completion marker)."""

    task_index: int
    task_count: int
    model: str = ""
    model_version: str = ""
    listed: int = 0  # images in INPUT
    assigned: int = 0  # this task's share
    already_done: int = 0  # of the share, in shards before this run
    classified: int = 0  # results written by this run, errors included
    errors: int = 0
    errors_by_code: dict[str, int] = field(default_factory=dict)
    shards: list[str] = field(default_factory=list)  # written by this run
    seconds: float = 0.0  # the pipeline, from the first image read to the last result
    load_seconds: float = 0.0  # model and decoders
    images_per_second: float = 0.0
    complete: bool = False  # every image of the share is in a shard
    skipped_run: bool = False  # the marker said so: nothing was listed or read

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_version(classifier: Classifier) -> str:
    """The version of the model that ran: its bundle's content hash (``model.onnx`` and ``model.json``, so
    labels and preprocessing too), the one the service reports (``backend/classifier/_export.py``)."""
    return classifier.version


class _BytesInFlight:
    """Bytes of files read and not yet decoded, bounded: a reader thread waits for room before it reads (one
    file larger than the whole budget is read once nothing else is held). Threads wait here, not the loop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self.closed = False
        self._room = threading.Condition()

    def take(self, n: int) -> None:
        with self._room:
            self._room.wait_for(lambda: self.closed or self.in_use == 0 or self.in_use + n <= self.limit)
            if self.closed:
                raise DecoderClosed("the task is stopping")
            self.in_use += n

    def give(self, n: int) -> None:
        with self._room:
            self.in_use -= n
            self._room.notify_all()

    def close(self) -> None:
        with self._room:
            self.closed = True
            self._room.notify_all()


def _read(path: Path, max_bytes: int, budget: _BytesInFlight) -> tuple[bytes, int]:
    """The file's bytes (at most ``max_bytes``, ``MAX_IMAGE_BYTES``: a larger file is refused from its size,
    unread) and what they hold of ``budget`` (give it back once decoded). Opened without blocking, so a FIFO
    named in a list cannot hang the reader."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise Unreadable(f"The file cannot be opened: {exc.strerror or exc}.") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Unreadable("This is not a regular file.")
        if info.st_size > max_bytes:
            raise ImageTooLarge(
                f"The file is {info.st_size:,} bytes; the limit is {max_bytes:,} (MAX_IMAGE_BYTES). "
                "Downscale or recompress it."
            )
        held = max(info.st_size, 1)
        budget.take(held)
        try:
            data = file.read(max_bytes + 1)
        except BaseException as exc:
            budget.give(held)
            if isinstance(exc, OSError):
                raise Unreadable(f"The file cannot be read: {exc.strerror or exc}.") from None
            raise
    if len(data) > max_bytes:
        budget.give(held)
        raise ImageTooLarge(f"The file grew beyond the limit of {max_bytes:,} bytes (MAX_IMAGE_BYTES) while read.")
    return data, held


def decoder_settings(classifier: Classifier, settings: Settings) -> DecoderSettings:
    """The service's decoder settings (``backend.service.decoder_settings``): the same processes, limits,
    CPU-time budget and memory budget. Two scheduling knobs differ, because a task has one owner and keeps
    every CPU busy with inference: an expensive image is never demoted to nice 19 (the service does that so one
    request's large images do not delay another's; here it would starve the image until inference pauses), and
    it may take longer in wall-clock time (its CPU-time budget still stops it)."""
    return dataclasses.replace(
        service_decoder_settings(classifier, settings),
        demote_after_s=settings.decode_timeout_s,  # the CPU-time budget stops it first
        wall_factor=WALL_FACTOR,
    )


class DecodersFailed(Exception):
    """The decoder processes cannot run (they cannot be started): the task fails, to be retried."""


@dataclass(frozen=True)
class _Stages:
    """The pipeline of one run, file to row."""

    classifier: Classifier
    decoders: DecoderPool
    batcher: Batcher
    store: ShardStore
    readers: ThreadPoolExecutor
    budget: _BytesInFlight
    progress: Progress


class Task:
    """One task's run: ``await Task(...).run()``; ``stop()`` (SIGTERM) ends it early, its results kept."""

    def __init__(
        self,
        settings: Settings,
        source: Path,
        output: Path,
        *,
        fmt: Format = "parquet",
        top_k: int | None = None,
        rescan: bool = False,
        classifier: Classifier | None = None,
        terminal: TextIO | None = None,
    ) -> None:
        if settings.cloud_run_task_index >= settings.cloud_run_task_count:
            raise TaskConfigError(
                f"CLOUD_RUN_TASK_INDEX={settings.cloud_run_task_index} is not below "
                f"CLOUD_RUN_TASK_COUNT={settings.cloud_run_task_count}: tasks are numbered from 0."
            )
        self.settings = settings
        self.source = source
        self.output = output
        self.format: Format = fmt
        self.top_k = top_k or settings.default_top_k
        self.rescan = rescan
        self.terminal = terminal
        self._classifier = classifier
        self.summary = Summary(settings.cloud_run_task_index, settings.cloud_run_task_count)
        self._stopping = asyncio.Event()
        self._stop_requested = False  # stop() came before any failure: the stop is why the task ends
        self._fatal: BaseException | None = None  # the failure that stopped the task (run() raises it)
        self._store: ShardStore | None = None
        self._rows = Rows()
        self._shard_started = time.perf_counter()
        self._commits: list[asyncio.Future[None]] = []
        self._errors: collections.Counter[str] = collections.Counter()

    def stop(self) -> None:
        """Take no more images; finish (briefly) what is in flight, write it, and end."""
        if not self._stopping.is_set():
            logger.warning("stopping: the images in flight are finished and written, the rest left for a retry")
            self._stop_requested = True
        self._stopping.set()

    async def run(self) -> Summary:
        """Classify this task's share; its summary. Raises the failure that stopped it (the model, INPUT,
        OUTPUT), unless ``stop()`` came first: then a failure while stopping is logged, and the summary returned
        (not complete), so that the stop stays the reason the task ended (exit status 143)."""
        try:
            await self._run()
        except Exception as exc:
            if not self._stop_requested:
                raise
            self._failed_while_stopping(exc)
        finally:
            self._tally()
        return self.summary

    def _failed_while_stopping(self, error: BaseException) -> None:
        logger.error(
            "an error while stopping: the shards written are kept, a retry classifies the rest",
            extra={**self._ids(), "error": type(error).__name__, "detail": str(error)},
        )

    def _fail(self, error: BaseException) -> None:
        """The first failure of the job itself stops the task, and run() raises it. After a stop (SIGTERM), a
        failure is logged instead: the stop came first."""
        if not self._stopping.is_set():
            self._fatal = error
            self._stopping.set()
        elif self._stop_requested:
            self._failed_while_stopping(error)

    def _tally(self) -> None:
        summary = self.summary
        if self._store is not None:
            summary.shards = list(self._store.written)
        summary.errors = sum(self._errors.values())
        summary.errors_by_code = dict(self._errors)

    async def _run(self) -> None:
        settings, summary = self.settings, self.summary
        self.output.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        classifier = self._classifier
        if classifier is None:
            classifier = await asyncio.to_thread(default_factory, settings)  # the service's model, as it loads it
        summary.model = classifier.info.name
        summary.model_version = model_version(classifier)
        store = self._store = ShardStore(
            self.output,
            index=summary.task_index,
            count=summary.task_count,
            fmt=self.format,
            model=summary.model,
            version=summary.model_version,
        )
        marker = None if self.rescan else store.read_marker()
        if marker is not None and marker.get("model_version") == summary.model_version:
            summary.complete = summary.skipped_run = True
            summary.assigned = summary.already_done = int(marker.get("assigned", 0))
            logger.info("this task is already complete (its marker exists): nothing to do", extra=self._ids())
            return
        if self._stopping.is_set():
            return  # stopped while the model loaded: nothing done, nothing to write
        done, own = await asyncio.to_thread(store.existing)
        items = await asyncio.to_thread(list_inputs, self.source, skip=self.output)
        summary.listed = len(items)
        mine = [item for item in items if task_of(item.key, summary.task_count) == summary.task_index]
        todo = [item for item in mine if item.key not in done]
        summary.assigned, summary.already_done = len(mine), len(mine) - len(todo)
        logger.info(
            "task starting",
            extra={
                **self._ids(),
                "listed": summary.listed,
                "assigned": summary.assigned,
                "already_done": summary.already_done,
                "to_do": len(todo),
                "own_results": own,
            },
        )
        if todo and not self._stopping.is_set():
            await self._classify(classifier, store, todo, started)
        if self._fatal is not None:
            raise self._fatal
        summary.complete = not self._stopping.is_set()
        if summary.complete:
            self._tally()
            await asyncio.to_thread(store.finish, summary.as_dict())

    def _ids(self) -> dict[str, Any]:
        summary = self.summary
        return {
            "task_index": summary.task_index,
            "task_count": summary.task_count,
            "model": summary.model,
            "model_version": summary.model_version,
        }

    async def _classify(self, classifier: Classifier, store: ShardStore, todo: list[Item], started: float) -> None:
        settings, summary = self.settings, self.summary
        decoders = DecoderPool(decoder_settings(classifier, settings))
        batch_sizes = tuple(sorted({1, settings.job_batch_size}))
        readers = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="batch-read")
        try:
            await asyncio.gather(asyncio.to_thread(classifier.warm_up, batch_sizes), decoders.start())
            batcher = Batcher(
                classifier.probabilities,
                max_batch_size=settings.job_batch_size,
                max_queue_size=settings.max_queue_size,
                workers=classifier.runtime.parallel_calls,
            )
            batcher.start()
            summary.load_seconds = time.perf_counter() - started
            stages = _Stages(
                classifier,
                decoders,
                batcher,
                store,
                readers,
                _BytesInFlight(settings.upload_memory_bytes),
                Progress(len(todo), interval_s=settings.job_progress_interval_s, terminal=self.terminal),
            )
            try:
                await self._pipeline(stages, todo)
            finally:
                stages.budget.close()
                stages.progress.tick(final=True)
                summary.seconds = stages.progress.seconds
                summary.images_per_second = round(stages.progress.per_second, 2)
                summary.classified = stages.progress.done
                await batcher.close()
        finally:
            if self._rows:
                self._cut(store)  # the results so far, first: nothing that fails below can lose them
            readers.shutdown(wait=False, cancel_futures=True)
            try:
                await decoders.close()
                # The reads in progress end soon (none waits for room: the byte budget is closed), and before
                # the loop they report to.
                await asyncio.to_thread(readers.shutdown)
            finally:
                if self._commits:
                    await asyncio.gather(*self._commits, return_exceptions=True)  # a failure went to _fail()

    async def _pipeline(self, stages: _Stages, todo: list[Item]) -> None:
        """At most ``MAX_QUEUE_SIZE`` images in flight, each from its file to its row."""
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self.settings.max_queue_size)
        running: set[asyncio.Task[None]] = set()

        async def one(item: Item) -> None:
            try:
                row = await self._result(stages, item)
                if row is not None:
                    self._record(stages, row)
            except Exception as exc:  # the model or the output failed: the job cannot go on (run() raises it)
                self._fail(exc)
            finally:
                slots.release()

        async def ticker() -> None:
            period = min(0.25, stages.progress.interval_s)  # the bar's redraw, or log lines more often than that
            while True:
                stages.progress.tick()
                await asyncio.sleep(period)

        ticking = loop.create_task(ticker())
        try:
            for item in todo:
                await slots.acquire()
                if self._stopping.is_set():
                    slots.release()
                    break
                task = loop.create_task(one(item))
                running.add(task)
                task.add_done_callback(running.discard)
            # Every image in flight gets its result; after a stop, for a few seconds only (Cloud Run kills a task
            # 10 s after SIGTERM): the rest is left for a retry.
            pending, deadline = set(running), None
            while pending:
                timeout = 0.5
                if self._stopping.is_set():
                    deadline = deadline or loop.time() + 3.0
                    timeout = min(timeout, deadline - loop.time())
                    if timeout <= 0:
                        break
                _, pending = await asyncio.wait(pending, timeout=timeout)
        finally:
            ticking.cancel()
            for task in list(running):
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    def _record(self, stages: _Stages, row: dict[str, Any]) -> None:
        self._rows.add(row)
        error = row.get("error")
        if error is not None:
            self._errors[error] += 1
        failed = error is not None
        stages.progress.add(failed=failed)
        settings = self.settings
        if len(self._rows) >= settings.job_shard_images or (
            time.perf_counter() - self._shard_started >= settings.job_shard_seconds
        ):
            self._cut(stages.store)

    async def _result(self, stages: _Stages, item: Item) -> dict[str, Any] | None:
        """The row of one image: its classes, or the error that stopped it; None if the task is stopping."""
        summary = self.summary
        row: dict[str, Any] = {"path": item.key, "model": summary.model, "model_version": summary.model_version}
        loop = asyncio.get_running_loop()
        try:
            data, held = await loop.run_in_executor(
                stages.readers, _read, item.path, self.settings.max_image_bytes, stages.budget
            )
        except (ImageError, Unreadable) as exc:
            return self._failed(row, exc)
        except DecoderClosed:
            return None
        try:
            prepared = await self._prepare(stages.decoders, data)
        except (ImageError, DecoderBusy) as exc:
            return self._failed(row, exc)
        except DecoderClosed:
            return None
        finally:
            stages.budget.give(held)
            del data
        (probabilities,) = await stages.batcher.submit([prepared.pixels])
        predictions = stages.classifier.top_k(probabilities, self.top_k)
        row.update(
            labels=[p.label for p in predictions],
            indices=[p.index for p in predictions],
            probabilities=[p.probability for p in predictions],
            width=prepared.width,
            height=prepared.height,
            format=prepared.format,
        )
        return row

    async def _prepare(self, decoders: DecoderPool, data: bytes) -> PreparedImage:
        """Decode in the pool. An image it was too busy for (the memory budget held by other large images, or
        no CPU for it in time) waits and tries again, then counts as failed with ``decoder_busy``. If the pool
        itself cannot work (no process starts), that is no image's fault: ``DecodersFailed`` ends the task."""
        for attempt in range(BUSY_RETRIES + 1):
            try:
                return await decoders.prepare(data)
            except DecoderBusy:
                if (trouble := decoders.health(self.settings.stall_timeout_s)) is not None:
                    raise DecodersFailed(trouble) from None
                if attempt == BUSY_RETRIES:
                    raise
                await asyncio.sleep(min(0.5 * 2**attempt, 4.0))
        raise AssertionError("unreachable")

    @staticmethod
    def _failed(row: dict[str, Any], error: Exception) -> dict[str, Any]:
        if isinstance(error, ClassifierError):
            row.update(error=error.code, error_message=error.message)
        else:
            row.update(error=UNREADABLE, error_message=str(error))
        return row

    def _cut(self, store: ShardStore) -> None:
        """Write the rows so far as a shard, in a thread (the pipeline goes on); shards are written in order."""
        rows, self._rows = self._rows, Rows()
        self._shard_started = time.perf_counter()
        name = store.next_name()
        previous = self._commits[-1] if self._commits else None

        async def commit() -> None:
            if previous is not None:
                await previous
            await asyncio.to_thread(store.commit, name, rows)
            logger.info("shard written", extra={**self._ids(), "shard": name, "results": len(rows)})

        future = asyncio.ensure_future(commit())
        future.add_done_callback(self._commit_done)
        self._commits.append(future)

    def _commit_done(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and (error := future.exception()) is not None:
            self._fail(error)  # OUTPUT cannot be written: stop now, not after classifying everything else
