"""The prediction log: one record per classified image, written off the request path as Parquet files.

The record is ``common.prediction_log.SCHEMA``; the files are ``PREDICTION_LOG_DIR/date=YYYY-MM-DD/<name>.parquet``
(docs/monitoring.md, "Prediction log"). How it stays off the request path and within bounds:

- **The request** appends one tuple to a bounded queue (``PREDICTION_LOG_QUEUE`` records; ``put_nowait``, a lock
  and no I/O): the time, the route, references to the model's strings, the probability row the batcher already
  made, what the decoder said about the image (size, format and the four image statistics, which the decoder
  processes compute on the crop: ``common.image_statistics``). A full queue drops the record and counts it
  (``prediction_log_dropped_total{reason="queue_full"}``): a slow or broken sink costs records, never latency.
- **The writer thread** takes what is queued, reduces it at once to the record's scalars (top-1, margin,
  entropy, vectorized over the chunk; the statistics of client-preprocessed tensors, which no decoder saw,
  from their pixels), and writes a zstd Parquet file per day partition every ``PREDICTION_LOG_MAX_ROWS``
  records or ``PREDICTION_LOG_FLUSH_S`` seconds. Each file is written whole under a dot-name in its destination
  folder and then renamed: readers (``pyarrow.dataset``, DuckDB's ``*.parquet``) skip dot-files, and on a Cloud
  Storage FUSE volume a file's rename is one object move (gcsfuse 3.1+: MoveObject, atomic; older versions
  copy then delete), whereas folders are never renamed (not atomic there).
- **Failures** (a read-only or removed folder, a full disk, any error of the sink) drop that file's records,
  count them (``prediction_log_write_failures_total`` and ``dropped{reason="write_failed"}``), and are logged at
  most once per ``_FAILURE_LOG_INTERVAL_S`` with the count since the last line: no log flood. The next file
  tries again.
- **Shutdown**: ``close`` writes what is queued, within the time it is given.

Unset ``PREDICTION_LOG_DIR`` and nothing of this exists: no thread, no queue, no statistics in the decoders.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from backend.classifier import Classifier
from backend.metrics import Metrics
from common.image_statistics import image_statistics
from common.prediction_log import PARTITION, SCHEMA

logger = logging.getLogger(__name__)

_FAILURE_LOG_INTERVAL_S: Final = 60.0
_CHUNK: Final = 512  # entries the writer reduces to scalars at a time
# Entries that carry a client's preprocessed crop (v2 PIXELS: no decoder computed its statistics) hold
# 150 kB each until the writer takes them: at most this many are queued, the others are dropped and counted.
MAX_QUEUED_CROPS: Final = 64
_IDLE_WAKE_S: Final = 1.0
_GATHER_S: Final = 1.0  # the writer takes queued records at most this often (PredictionLog._take)


class Entry(NamedTuple):
    """What a request queues for one image (references, no copies)."""

    time: float  # time.time() when the answer was ready
    latency_s: float
    route: str
    model: str
    version: str
    labels: Sequence[str]
    probabilities: np.ndarray
    width: int
    height: int
    format: str
    statistics: tuple[float, float, float, float] | None
    crop: np.ndarray | None  # when ``statistics`` is None: the crop to compute them from


_STOP: Final = object()


class PredictionLog:
    def __init__(
        self,
        directory: Path,
        metrics: Metrics,
        *,
        flush_s: float = 30.0,
        max_rows: int = 10_000,
        queue_size: int = 2048,
    ) -> None:
        self.directory = directory
        self.metrics = metrics
        self.flush_s = flush_s
        self.max_rows = max_rows
        self._queue: queue.Queue[Entry | object] = queue.Queue(queue_size)
        self._crops = threading.BoundedSemaphore(MAX_QUEUED_CROPS)
        self._closing = threading.Event()
        # The writer wakes once a second, or as soon as this many records are queued (PredictionLog._take)
        self._wake = threading.Event()
        self._wake_at = max(1, min(_CHUNK, queue_size // 2))
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        # File names: time, this process (random, as Cloud Run instances have no stable name), sequence.
        self._instance = f"{secrets.token_hex(4)}-{os.getpid()}"
        self._sequence = 0
        self._failures_unlogged = 0
        self._last_failure_log = -_FAILURE_LOG_INTERVAL_S
        self._dropped = metrics.prediction_log_dropped

    @classmethod
    def from_settings(cls, settings: Any, metrics: Metrics) -> PredictionLog | None:
        """The service's log, started; None when ``PREDICTION_LOG_DIR`` is unset."""
        if settings.prediction_log_dir is None:
            return None
        log = cls(
            settings.prediction_log_dir,
            metrics,
            flush_s=settings.prediction_log_flush_s,
            max_rows=settings.prediction_log_max_rows,
            queue_size=settings.prediction_log_queue,
        )
        log.start()
        return log

    def start(self) -> None:
        self._thread.start()

    # --- the request's side: no I/O, no pyarrow, no numpy

    def record(
        self,
        route: str,
        started: float,
        classifier: Classifier,
        probabilities: np.ndarray,
        *,
        image: tuple[int, int, str],
        statistics: tuple[float, float, float, float] | None,
        crop: np.ndarray | None = None,
    ) -> None:
        """Queue one image's record, or drop and count it. Never blocks, never raises.

        ``started``: ``time.perf_counter()`` when the request arrived; ``image``: width, height and format;
        ``crop``: the model's input, when the decoders did not compute ``statistics`` (client tensors).
        """
        if self._closing.is_set():
            self._dropped.labels("stopped").inc()
            return
        if statistics is None and (crop is None or not self._crops.acquire(blocking=False)):
            self._dropped.labels("queue_full" if crop is not None else "no_statistics").inc()
            return
        info = classifier.info
        width, height, fmt = image
        entry = Entry(
            time.time(),
            time.perf_counter() - started,
            route,
            info.name,
            classifier.version,
            info.labels,
            probabilities,
            width,
            height,
            fmt,
            statistics,
            crop,
        )
        try:
            self._queue.put_nowait(entry)
            if self._queue.qsize() >= self._wake_at:
                self._wake.set()
        except queue.Full:
            if statistics is None:
                self._crops.release()
            self._dropped.labels("queue_full").inc()

    # --- shutdown

    def close(self, timeout_s: float) -> bool:
        """Write what is queued and stop the thread (blocking: call it from a thread). True if it finished."""
        self._closing.set()
        self._wake.set()
        with contextlib.suppress(queue.Full):  # wakes the writer now; when the queue is full it is busy anyway
            self._queue.put_nowait(_STOP)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.warning("prediction log: records still queued at shutdown were not written")
            return False
        return True

    # --- the writer thread

    def _run(self) -> None:
        # Records are taken in gathers (_take), and reduced to a batch of columns only when a file is due or
        # _CHUNK of them are gathered: made one record at a time,
        # at 80 images/s on 2 CPUs, one-row batches cost the thread 8% of a CPU (1 ms a record, with the GIL)
        # and the server 13% of its throughput (python -m bench, "Prediction log"); gathered, 0.9%.
        pending: list[pa.RecordBatch] = []
        gathered: list[Entry] = []
        rows = 0  # records in pending and gathered
        deadline = 0.0
        while True:
            entries = self._take(timeout=max(deadline - time.monotonic(), 0.0) if rows else _IDLE_WAKE_S)
            if entries:
                if not rows:
                    deadline = time.monotonic() + self.flush_s
                gathered += entries
                rows += len(entries)
            closing = self._closing.is_set() and self._queue.empty()
            due = bool(rows) and (rows >= self.max_rows or time.monotonic() >= deadline or closing)
            if gathered and (due or len(gathered) >= _CHUNK):
                try:
                    pending.append(self._to_batch(gathered))
                except Exception:  # a bug here must not end the thread: those records are lost, counted
                    logger.exception("prediction log: records could not be converted")
                    self._dropped.labels("write_failed").inc(len(gathered))
                    rows -= len(gathered)
                gathered = []
            if due and pending:
                table = pa.Table.from_batches(pending, SCHEMA)
                for offset in range(0, table.num_rows, self.max_rows):  # files of at most max_rows
                    part = table.slice(offset, self.max_rows)
                    try:
                        self._write(part)
                    except Exception as exc:  # a bug here must not end the thread: counted, logged once an interval
                        self._failed(part.num_rows, exc)
                pending, rows = [], 0
            if closing:
                return

    def _take(self, timeout: float) -> list[Entry]:
        """Up to ``_CHUNK`` entries: what is queued after ``timeout`` (at most ``_GATHER_S``), or as soon as half
        the queue is full, or at shutdown. Woken by every record instead, the thread cost 0.5 ms of CPU a
        record at 100 images/s on 2 CPUs (5.8% of a CPU, with the GIL); woken once a second, under 1%."""
        if not self._closing.is_set() and self._queue.qsize() < self._wake_at:
            self._wake.wait(min(timeout, _GATHER_S))
        self._wake.clear()
        entries: list[Entry] = []
        try:
            while len(entries) < _CHUNK:
                item = self._queue.get_nowait()
                if item is not _STOP:
                    assert isinstance(item, Entry)
                    entries.append(item)
        except queue.Empty:
            pass
        self.metrics.prediction_log_queue.set(self._queue.qsize())
        return entries

    def _to_batch(self, entries: list[Entry]) -> pa.RecordBatch:
        statistics: list[tuple[float, ...]] = []
        for entry in entries:
            if entry.statistics is not None:
                statistics.append(entry.statistics)
            else:
                assert entry.crop is not None
                statistics.append(tuple(image_statistics(entry.crop)))
                self._crops.release()
        index, probability, margin, entropy = _summaries([e.probabilities for e in entries])
        stats = np.asarray(statistics, dtype=np.float32).reshape(len(entries), 4)
        columns = {
            "time": pa.array([round(e.time * 1e6) for e in entries], pa.int64()).cast(SCHEMA.field("time").type),
            "model": [e.model for e in entries],
            "model_version": [e.version for e in entries],
            "route": [e.route for e in entries],
            "label": [_label(e.labels, int(i)) for e, i in zip(entries, index, strict=True)],
            "class_index": index.astype(np.int32),
            "probability": probability,
            "margin": margin,
            "entropy": entropy,
            "width": np.array([e.width for e in entries], np.int32),
            "height": np.array([e.height for e in entries], np.int32),
            "format": [e.format for e in entries],
            "brightness": stats[:, 0],
            "contrast": stats[:, 1],
            "colourfulness": stats[:, 2],
            "sharpness": stats[:, 3],
            "latency_ms": np.array([e.latency_s * 1000.0 for e in entries], np.float32),
        }
        return pa.RecordBatch.from_arrays([pa.array(columns[f.name], f.type) for f in SCHEMA], schema=SCHEMA)

    def _write(self, table: pa.Table) -> None:
        """One file per UTC day among ``table``'s records; a failed file's records are dropped and counted."""
        micros = table["time"].cast(pa.int64()).to_numpy()
        days = micros.astype("datetime64[us]").astype("datetime64[D]")
        for day in np.unique(days):
            part = table.filter(pa.array(days == day)) if (days != day).any() else table
            try:
                self._write_file(part, str(day))
            except Exception as exc:  # OSError mostly (read-only, full, removed); also pyarrow's own errors
                self._failed(part.num_rows, exc)
            else:
                self.metrics.prediction_log_records.inc(part.num_rows)
                self.metrics.prediction_log_files.inc()

    def _write_file(self, table: pa.Table, day: str) -> None:
        folder = self.directory / f"{PARTITION}={day}"
        folder.mkdir(parents=True, exist_ok=True)
        self._sequence += 1
        now = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{now}-{self._instance}-{self._sequence:06d}.parquet"
        temporary = folder / f".{name}.tmp"
        try:
            with open(temporary, "wb") as file:
                pq.write_table(table, file, compression="zstd")
            os.replace(temporary, folder / name)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def _failed(self, records: int, exc: Exception) -> None:
        self.metrics.prediction_log_write_failures.inc()
        self._dropped.labels("write_failed").inc(records)
        self._failures_unlogged += 1
        now = time.monotonic()
        if now - self._last_failure_log >= _FAILURE_LOG_INTERVAL_S:
            logger.warning(
                "prediction log: cannot write to PREDICTION_LOG_DIR (%s: %s); records are dropped and counted "
                "(prediction_log_dropped_total) until it can",
                type(exc).__name__,
                exc,
                extra={"failures": self._failures_unlogged, "interval_s": _FAILURE_LOG_INTERVAL_S},
            )
            self._failures_unlogged = 0
            self._last_failure_log = now


def _label(labels: Sequence[str], index: int) -> str:
    return labels[index] if 0 <= index < len(labels) else str(index)


def _summaries(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Top-1 index and probability, margin to the second, and the entropy (nats) of each probability row."""
    width = max(len(r) for r in rows)
    p = np.zeros((len(rows), width))
    for i, row in enumerate(rows):
        p[i, : len(row)] = row
    index = p.argmax(axis=1)  # the first of equal maxima: the lower index, as Classifier.top_k
    top = p[np.arange(len(rows)), index]
    second = np.partition(p, width - 2, axis=1)[:, width - 2] if width > 1 else np.zeros(len(rows))
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return index, top.astype(np.float32), (top - second).astype(np.float32), entropy.astype(np.float32)
