"""Previews of uploaded images: small upright JPEG/PNG pictures for the page, made in worker processes.

An upload is whatever someone sends, so the page's own process never decodes one. A preview is made
by ``make_preview`` in a worker process (``python -m frontend.previews``, kept running, its address
space capped at ``WORKER_MEMORY_BYTES``), which

* opens only JPEG, PNG, WebP, GIF, BMP and TIFF (``Image.open(..., formats=...)``: never EPS, which
  would run Ghostscript, nor any of Pillow's other readers);
* reads the size from the header and refuses anything over ``MAX_PREVIEW_PIXELS`` before decoding;
* refuses RLE-compressed BMPs (Pillow decodes those in pure Python: seconds for a few kB);
* decodes JPEGs at 1/2 to 1/8 scale (``draft``), shrinks, then turns by the EXIF orientation.

Whatever still takes longer than ``PREVIEW_TIMEOUT_S`` (a progressive JPEG with thousands of scans,
a decoder bug) is stopped: the worker is killed and the image shown without a preview. At most
``PREVIEW_WORKERS`` previews are made at once for the whole server. Results, including "no preview",
are remembered by the image's SHA-256, so page reruns do not redo them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import resource
import select
import struct
import subprocess
import sys
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
MAX_PREVIEW_PIXELS = 40_000_000  # the slowest allowed image measured here takes 0.4 s (docs/frontend.md)
PREVIEW_SIZE = (640, 640)
PREVIEW_TIMEOUT_S = 1.5  # per image, from sending it to the worker to its answer (see docs/frontend.md)
# Previews made at once, for every session together. One: the frontend runs on one CPU on Cloud Run, and
# a worker may use WORKER_MEMORY_BYTES of its 1 GiB; a preview of a photo takes 20 to 50 ms.
PREVIEW_WORKERS = 1
WORKER_START_TIMEOUT_S = 30.0  # a fresh worker imports Pillow (about 0.2 s here; more on a busy machine)
# Address space a worker may use (RLIMIT_AS). A 40 MP RGBA PNG or TIFF peaks at 360 MB; Pillow's WebP
# reader needs 16 bytes a pixel, so a WebP over about 20 MP fails with MemoryError: no preview.
WORKER_MEMORY_BYTES = 384 * 1024**2
CACHE_ENTRIES = 256

_BMP_RLE = (1, 2)  # BI_RLE8, BI_RLE4
_HEADER = struct.Struct(">Q")
_ANSWER = struct.Struct(">BQ")  # 0 and a preview, or 1 and the reason there is none
_READY = b"R"
_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)


class NoPreview(Exception):
    """This image gets no preview; the message says why (for the logs)."""


def make_preview(data: bytes) -> bytes:
    """A PNG (images with transparency) or JPEG of ``data`` at most ``PREVIEW_SIZE``, upright.

    Raise NoPreview when the format is not allowed, the image is too large or cannot be read. Meant to
    run in a worker process: this bounds the work by size, only the worker's timeout bounds the time.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
                width, height = image.size
                if width * height > MAX_PREVIEW_PIXELS:
                    raise NoPreview(f"{width} x {height} is over {MAX_PREVIEW_PIXELS:,} pixels")
                if image.format == "BMP" and image.info.get("compression") in _BMP_RLE:
                    raise NoPreview("an RLE-compressed BMP")
                image.draft("RGB", PREVIEW_SIZE)  # JPEG: decode at a reduced scale; other formats: nothing
                image.thumbnail(PREVIEW_SIZE)
                shown = ImageOps.exif_transpose(image)
                has_alpha = shown.mode in ("RGBA", "LA", "P", "PA")
                shown = shown.convert("RGBA" if has_alpha else "RGB")
                out = io.BytesIO()
                shown.save(out, "PNG" if has_alpha else "JPEG", **({} if has_alpha else {"quality": 85}))
    except UnidentifiedImageError as exc:
        raise NoPreview("not a JPEG, PNG, WebP, GIF, BMP or TIFF") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise NoPreview("a decompression bomb") from exc
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, struct.error, MemoryError) as exc:
        raise NoPreview(f"unreadable ({type(exc).__name__}: {str(exc)[:200]})") from exc
    return out.getvalue()


# --- the worker process: python -m frontend.previews


def _read_exact(stream: BinaryIO, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def worker_main() -> None:
    """Answer preview requests on stdin until it closes (the page's process has gone away)."""
    with contextlib.suppress(ValueError, OSError):  # not allowed on every system
        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    # The protocol has the real stdin/stdout to itself; anything a library prints goes to stderr.
    inbox = os.fdopen(os.dup(0), "rb")
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    with open(os.devnull, "rb") as null:
        os.dup2(null.fileno(), 0)
    answers.write(_READY)
    answers.flush()
    while True:
        header = _read_exact(inbox, _HEADER.size)
        if header is None:
            return
        data = _read_exact(inbox, _HEADER.unpack(header)[0])
        if data is None:
            return
        try:
            status, body = 0, make_preview(data)
        except NoPreview as exc:
            status, body = 1, str(exc).encode()
        except Exception as exc:  # an unexpected failure is this image's problem, not the worker's
            status, body = 1, f"failed ({type(exc).__name__}: {str(exc)[:200]})".encode()
        del data
        answers.write(_ANSWER.pack(status, len(body)) + body)
        answers.flush()


def _wait(fd: int, events: int, timeout: float) -> bool:
    """Whether ``fd`` became readable/writable (or closed) within ``timeout`` (poll: any fd number)."""
    poller = select.poll()
    poller.register(fd, events)
    return bool(poller.poll(max(1, round(timeout * 1000))))


class WorkerGone(Exception):
    """The worker did not answer in time, or exited."""


class _PreviewWorker:
    """One ``python -m frontend.previews`` process, talked to through its stdin and stdout."""

    def __init__(self) -> None:
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": _PACKAGE_PARENT + (os.pathsep + path if path else "")}
        # Our own interpreter and module, no shell.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "frontend.previews"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self._in = self.process.stdin.fileno()
        self._out = self.process.stdout.fileno()
        os.set_blocking(self._in, False)
        os.set_blocking(self._out, False)
        self.ready = False

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float) -> None:
        if not self.ready:
            if self._read(1, time.monotonic() + timeout) != _READY:
                raise WorkerGone("the worker did not start")
            self.ready = True

    def preview(self, data: bytes, timeout: float) -> tuple[bytes | None, str]:
        """(preview, "") or (None, why not); raise WorkerGone when it took too long or the worker died."""
        deadline = time.monotonic() + timeout
        self._write(_HEADER.pack(len(data)), deadline)
        self._write(data, deadline)
        status, size = _ANSWER.unpack(self._read(_ANSWER.size, deadline))
        body = self._read(size, deadline)
        return (body, "") if status == 0 else (None, body.decode(errors="replace"))

    def _write(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not _wait(self._in, select.POLLOUT, remaining):
                raise WorkerGone("timed out")
            try:
                written = os.write(self._in, view[: 1 << 20])
            except BlockingIOError:
                continue
            except OSError as exc:  # the worker exited: a broken pipe
                raise WorkerGone(str(exc)) from exc
            view = view[written:]

    def _read(self, size: int, deadline: float) -> bytes:
        chunks = []
        while size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not _wait(self._out, select.POLLIN, remaining):
                raise WorkerGone("timed out")
            try:
                chunk = os.read(self._out, min(size, 1 << 20))
            except BlockingIOError:
                continue
            if not chunk:
                raise WorkerGone("the worker exited")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()


class Previewer:
    """Makes previews in up to ``workers`` worker processes, each preview limited to ``timeout_s``."""

    def __init__(
        self,
        *,
        workers: int = PREVIEW_WORKERS,
        timeout_s: float = PREVIEW_TIMEOUT_S,
        start_timeout_s: float = WORKER_START_TIMEOUT_S,
        cache_entries: int = CACHE_ENTRIES,
    ) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self._slots = threading.BoundedSemaphore(workers)
        self._lock = threading.Lock()
        self._idle: list[_PreviewWorker] = []
        self._cache: OrderedDict[str, bytes | None] = OrderedDict()
        self._cache_entries = cache_entries
        self._closed = False
        # Workers of a previewer that is dropped without close() (a cleared cache) are stopped too.
        weakref.finalize(self, _kill_all, self._idle)

    def warm_up(self) -> None:
        """Start a worker now, so the first preview does not wait for it to import Pillow."""
        with self._lock:
            if not self._idle:
                self._idle.append(_PreviewWorker())

    def preview(self, data: bytes) -> bytes | None:
        """A preview of ``data``, or None (not an allowed image, too large, too slow, or all workers busy)."""
        key = hashlib.sha256(data).hexdigest()
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        # Wait for a free worker no longer than a preview may take: a busy server skips previews.
        if not self._slots.acquire(timeout=self.timeout_s):
            logger.warning("no preview: every preview worker is busy", extra={"image_sha256": key[:16]})
            return None
        try:
            shown, about_the_image = self._make(data, key)
        finally:
            self._slots.release()
        if about_the_image:  # not when a worker could not be started: that may pass
            with self._lock:
                self._cache[key] = shown
                while len(self._cache) > self._cache_entries:
                    self._cache.popitem(last=False)
        return shown

    def submit(self, datas: Sequence[bytes]) -> list[Future[bytes | None]]:
        """Start making previews of all ``datas`` (a few side by side); the caller collects the results."""
        executor = ThreadPoolExecutor(max_workers=max(1, min(len(datas), self.workers)), thread_name_prefix="preview")
        futures = [executor.submit(self.preview, data) for data in datas]
        executor.shutdown(wait=False)
        return futures

    def _make(self, data: bytes, key: str) -> tuple[bytes | None, bool]:
        """(preview or None, whether that is about this image rather than about starting a worker)."""
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        started = time.perf_counter()
        try:
            if worker is None or not worker.alive():
                if worker is not None:
                    worker.kill()
                worker = None
                worker = _PreviewWorker()
            worker.wait_ready(self.start_timeout_s)
        except (WorkerGone, OSError) as exc:  # OSError: no process could be started
            if worker is not None:
                worker.kill()
            logger.error("could not start a preview worker", extra={"reason": str(exc)[:300]})
            return None, False
        try:
            shown, reason = worker.preview(data, self.timeout_s)
        except WorkerGone as exc:
            worker.kill()
            elapsed = time.perf_counter() - started
            logger.warning(
                "no preview: stopped the preview worker",
                extra={"image_sha256": key[:16], "bytes": len(data), "reason": str(exc), "ms": round(elapsed * 1000)},
            )
            return None, True
        self._put_back(worker)
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        if shown is None:
            logger.info("no preview", extra={"image_sha256": key[:16], "bytes": len(data), "reason": reason})
        else:
            logger.debug("made a preview", extra={"image_sha256": key[:16], "bytes": len(data), "ms": elapsed_ms})
        return shown, True

    def _put_back(self, worker: _PreviewWorker) -> None:
        """Keep ``worker`` for the next preview (unless the previewer was closed meanwhile)."""
        with self._lock:
            keep = not self._closed
            if keep:
                self._idle.append(worker)
        if not keep:
            worker.kill()

    def close(self) -> None:
        """Stop the idle workers (one making a preview now is stopped when that is done)."""
        with self._lock:
            self._closed = True
            workers = self._idle[:]
            self._idle.clear()
        _kill_all(workers)


def _kill_all(workers: list[_PreviewWorker]) -> None:
    for worker in workers:
        worker.kill()


if __name__ == "__main__":
    worker_main()
