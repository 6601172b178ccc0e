"""Decoding untrusted images in processes that are stopped when an image overruns its budget.

Why processes: a hostile image can keep a decoder busy for as long as its author likes (a progressive JPEG
of thousands of scans runs inside libjpeg; BMP RLE and JPEG/PNG segment parsing run in pure Python). A
thread cannot be stopped, so a timeout only stops *waiting* and the work goes on: two such uploads starved
every client of a 2-CPU server for 80 s. A process can be stopped. Each image runs under a CPU-time budget
and a memory lease from one budget shared by all decoders (see ``_worker``), and a process that overran is
replaced.

Why not ``concurrent.futures.ProcessPoolExecutor``, loky or pebble: the first two cannot stop a running
task at all; pebble can (by killing its worker), but none of them says which process runs a task (needed
to lower its priority, below), schedules fairly between callers, or lets a task ask the parent for memory
mid-way. This module is those three things on top of ``multiprocessing``'s processes and pipes.

Scheduling, so that a few expensive images cannot delay everyone else's:

- At most ``workers`` images (one per CPU by default) decode at normal priority, taken from the waiting
  images **round robin across owners** (requests): a request with 16 images does not make a request with
  one image wait behind all 16.
- An image that has used ``demote_after_s`` of CPU (0.1 s; several times what a phone photo takes) is *demoted*: its
  process is reniced to 19, the lowest priority, and stops counting against ``workers``, so the next image
  starts at once. Demoted images run on CPU time nobody else wants, ``slow_workers`` at most, until they
  finish or their budget stops them. When that lane is full and other requests are waiting, the image is
  stopped and its request answered 503 (retry later) instead.
- A process that ran a demoted image is replaced, since it cannot raise its priority again. One process is
  kept ready beyond those at work, because starting one takes a noticeable amount of CPU (more on a busy one).

A cancelled wait (request timeout, client gone, shutdown) kills the process doing the work.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import multiprocessing
import os
import signal
import struct
import time
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Final

import numpy as np

from ._classifier import PreparedImage
from ._errors import ClassifierError, DecodeTimeout, ImageError, ImageTooLarge, InvalidImage, UnsupportedImage
from ._images import ImageLimits
from ._preprocess import Preprocessing
from ._worker import BUSY, GRANTED, LEASE, OK, OUT_OF_MEMORY, READY, TOO_LARGE, MemoryBusy, WorkerConfig
from ._worker import main as worker_main

logger = logging.getLogger(__name__)

LOW_PRIORITY: Final = 19
_MAX_HEADER_BYTES: Final = 64 * 1024
_START_TIMEOUT_S: Final = 30.0
_ERRORS: Final[dict[str, type[ClassifierError]]] = {
    cls.__name__: cls for cls in (ImageError, InvalidImage, UnsupportedImage, ImageTooLarge)
}
_CONTEXT = multiprocessing.get_context("forkserver")
# Decoder processes are forked from a server process that imported this package (Pillow, NumPy) once.
# (The fork server does not re-run the web server's ``python -m backend``: modules named ``__main__``
# are never re-imported in multiprocessing's children.)
_CONTEXT.set_forkserver_preload([worker_main.__module__])


class DecoderBusy(ClassifierError):
    """The decoders cannot take this image now (expensive images in progress); retry later (503)."""

    code = "decoder_busy"


class DecoderClosed(ClassifierError):
    """The pool is shutting down."""

    code = "shutting_down"


_TOO_BUSY: Final = DecoderBusy("The server was too busy to finish decoding this image in time. Retry in a few seconds.")


class _WorkerDied(Exception):
    def __init__(self, exitcode: int | None) -> None:
        super().__init__(f"decoder exited with {exitcode}")
        self.exitcode = exitcode


@dataclass(frozen=True)
class DecoderSettings:
    preprocessing: Preprocessing
    limits: ImageLimits
    cpu_seconds: float = 3.0  # per image
    memory_bytes: int = 1 << 30  # shared by all decodes; also the most one image may use
    allowance_bytes: int = 32 << 20  # reserved for every decode in progress: smaller images need no lease
    workers: int = 1  # decoding at normal priority
    slow_workers: int = 1  # demoted, at the lowest priority
    demote_after_s: float = 0.1
    wall_factor: float = 4.0  # an image may take 1 s + this many wall-clock seconds per CPU second (see _run)
    statistics: bool = False  # the decoders also compute the crop's image statistics (the prediction log's)

    def __post_init__(self) -> None:
        if self.workers < 1 or self.slow_workers < 0:
            raise ValueError(f"need workers >= 1 and slow_workers >= 0, got {self.workers} and {self.slow_workers}")
        if self.lease_budget < self.allowance_bytes:
            raise ValueError(
                f"a decode-memory budget of {self.memory_bytes >> 20} MiB is too small for "
                f"{self.workers + self.slow_workers} decoder processes: give it at least "
                f"{2 * self.allowance_bytes * (self.workers + self.slow_workers) >> 20} MiB"
            )

    @property
    def lease_budget(self) -> int:
        """The budget reserves an allowance for every decode that can be in progress (images needing no more
        never ask: most photos); larger images lease from the rest, which is also the most one may use."""
        return self.memory_bytes - self.allowance_bytes * (self.workers + self.slow_workers)

    @property
    def worker_config(self) -> WorkerConfig:
        return WorkerConfig(
            self.preprocessing,
            self.limits,
            self.cpu_seconds,
            self.lease_budget,
            self.allowance_bytes,
            statistics=self.statistics,
        )


Buffer = bytes | bytearray | memoryview
Lease = Callable[[int], bytes]  # bytes wanted -> GRANTED, BUSY or TOO_LARGE
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
_LENGTH: Final = struct.Struct("!i")
_LONG_LENGTH: Final = struct.Struct("!Q")


class _Channel(asyncio.Protocol):
    """Reads ``multiprocessing.connection.Connection``'s frames (a 4-byte big-endian length, or -1 and an
    8-byte one, then the bytes) from a pipe on the event loop: no thread per decoder, no hand-off between a
    thread and the loop for every image."""

    def __init__(self, max_frame: int) -> None:
        self._buffer = bytearray()
        self._frames: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.max_frame = max_frame  # the largest frame we ever expect

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 4:
            (size,) = _LENGTH.unpack_from(self._buffer)
            start = 4
            if size == -1:
                if len(self._buffer) < 12:
                    break
                (size,) = _LONG_LENGTH.unpack_from(self._buffer, 4)
                start = 12
            if size < 0 or size > self.max_frame:
                self._closed = True  # a frame we never asked for: the process is not speaking our protocol
                break
            if len(self._buffer) < start + size:
                break
            self._frames.append(bytes(self._buffer[start : start + size]))
            del self._buffer[: start + size]
        self._wake()

    def eof_received(self) -> bool:
        self._closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def recv(self, max_bytes: int) -> bytes:
        """The next frame; ``EOFError`` when the process is gone (or sent more than ``max_bytes``)."""
        while not self._frames:
            if self._closed:
                raise EOFError
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        frame = self._frames.popleft()
        if len(frame) > max_bytes:
            raise EOFError
        return frame


class _Worker:
    """One decoder process, forked from ``multiprocessing``'s fork server (fast: that process imported
    Pillow and NumPy once). Not forked from the web server itself: that would copy ONNX Runtime's threads
    and their locks. Replacing a stopped process is cheap, which matters under attack.
    """

    def __init__(
        self, process: BaseProcess, send: asyncio.WriteTransport, receive: asyncio.ReadTransport, channel: _Channel
    ) -> None:
        self.process = process
        self.pid = process.pid or 0
        self.returncode: int | None = None
        self._exited: asyncio.Future[int | None] | None = None
        self._send = send
        self._receive = receive  # held here: an unreferenced pipe transport may be collected, closing the pipe
        self._channel = channel

    @classmethod
    async def start(cls, config_json: str, max_frame: int) -> _Worker:
        """A new decoder process, ready for work. Cancelled or failed, it leaves no process or pipe behind."""
        loop = asyncio.get_running_loop()
        child_reads, parent_writes = _CONTEXT.Pipe(duplex=False)
        parent_reads, child_writes = _CONTEXT.Pipe(duplex=False)
        process = _CONTEXT.Process(
            target=worker_main, args=(child_reads, child_writes), name="image-decoder", daemon=True
        )
        try:
            # A round trip to the fork server (a few ms), on the event loop's thread on purpose: start() also
            # polls every other child's sentinel (multiprocessing's _cleanup), and from another thread that
            # raced with this pool closing them: reads from recycled descriptors corrupted other decoders' pipes.
            process.start()
        except BaseException:
            parent_reads.close()
            parent_writes.close()
            raise
        finally:
            child_reads.close()
            child_writes.close()
        transports: list[asyncio.BaseTransport] = []
        try:
            send, _ = await loop.connect_write_pipe(asyncio.Protocol, _file(parent_writes, "wb"))
            transports.append(send)
            channel = _Channel(max(max_frame, _MAX_HEADER_BYTES))
            receive, _ = await loop.connect_read_pipe(lambda: channel, _file(parent_reads, "rb"))
            transports.append(receive)
            worker = cls(process, send, receive, channel)
            worker.send(config_json.encode())
            header = json.loads(await channel.recv(_MAX_HEADER_BYTES))
            if header.get("status") != READY:
                raise EOFError
        except BaseException as exc:
            for transport in transports:
                transport.close()
            for conn in (parent_reads, parent_writes):
                conn.close()  # nothing if _file() took it
            exitcode = _discard(process)
            if isinstance(exc, EOFError | ValueError | OSError):
                raise _WorkerDied(exitcode) from None
            raise
        return worker

    def send(self, data: Buffer) -> None:
        """One frame to the process (buffered by the transport: never blocks the event loop)."""
        size = len(data)
        header = _LENGTH.pack(size) if size <= 0x7FFFFFFF else _LENGTH.pack(-1) + _LONG_LENGTH.pack(size)
        self._send.writelines((header, data))

    async def call(self, data: Buffer, pixel_bytes: int, lease: Lease) -> tuple[dict[str, Any], bytes]:
        """Send one image, answer its lease request, return its answer; ``_WorkerDied`` if the process is gone."""
        try:
            self.send(data)
            while True:
                header = json.loads(await self._channel.recv(_MAX_HEADER_BYTES))
                if header.get("status") != LEASE:
                    break
                self.send(lease(int(header["bytes"])))
            pixels = await self._channel.recv(pixel_bytes) if header.get("status") == OK else b""
        except (EOFError, OSError, ValueError, KeyError, TypeError, RuntimeError):  # RuntimeError: pipe closed
            self.kill()
            raise _WorkerDied(await self.exit_code()) from None
        return header, pixels

    async def exit_code(self) -> int | None:
        """Wait (up to 5 s) for the process to end, then free its handle; its exit status. Callers share
        one wait: the process's sentinel is watched by the event loop only, never joined from a thread."""
        if self._exited is None:
            self._exited = asyncio.ensure_future(self._wait_exit())
        return await asyncio.shield(self._exited)

    async def _wait_exit(self) -> int | None:
        loop = asyncio.get_running_loop()
        ended = loop.create_future()
        sentinel = self.process.sentinel
        loop.add_reader(sentinel, _settle_once, ended)
        try:
            await asyncio.wait_for(ended, 5.0)
        except TimeoutError:
            logger.warning("an image decoder process did not end", extra={"pid": self.pid})
            return None
        finally:
            loop.remove_reader(sentinel)
        self.returncode = _discard(self.process)  # it has ended: join() returns at once
        return self.returncode

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the process has used, from ``/proc`` (0 where there is none)."""
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime and stime: fields 14 and 15

    def kill(self) -> None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            # exitcode polls the fork server's report first: once the process has ended (and the fork server
            # reaped it), its pid may belong to another process.
            if self.process.exitcode is None:
                self.process.kill()

    def close(self) -> None:
        """Kill the process and close the pipes (``exit_code`` collects its status)."""
        self.kill()
        self._send.close()
        self._receive.close()


def _discard(process: BaseProcess) -> int | None:
    """Kill ``process`` if it runs, wait for it (it exits within milliseconds), free its handle; its exit status."""
    with contextlib.suppress(ValueError, OSError, AttributeError, AssertionError):  # closed, or never started
        if process.exitcode is None:
            process.kill()
        process.join(5)
        exitcode = process.exitcode
        process.close()
        return exitcode
    return None


def _settle_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _file(conn: Connection, mode: str) -> Any:
    """The pipe end ``conn`` as a file object the running event loop can watch (``conn`` itself is closed).

    On uvloop (the server's loop) the descriptor is libuv's alone to close: uvloop 0.23 closes it through libuv
    and then through the file object again (MagicStack/uvloop#763, fix pending), or when a cancelled connection's
    file object is collected, and a file or socket another thread opened in between would be closed under it.
    libuv closes it in every case, cancelled connections included (tests/backend/test_decoders.py)."""
    fd = os.dup(conn.fileno())
    conn.close()
    uvloop = type(asyncio.get_running_loop()).__module__.startswith("uvloop")
    return os.fdopen(fd, mode, buffering=0, closefd=not uvloop)


@dataclass(eq=False)
class _Job:
    data: Buffer
    owner: Hashable
    future: asyncio.Future[PreparedImage]
    worker: _Worker | None = None
    demoted: bool = False
    leased: int = 0
    stop_reason: ClassifierError | None = None  # why the pool itself killed the process
    started: float = field(default_factory=time.monotonic)
    cpu_at_start: float = 0.0  # the process's CPU seconds when this image was sent to it


def _statistics(value: object) -> tuple[float, float, float, float] | None:
    """The four image statistics a decoder sent, if it sent four numbers (a decoder is not trusted)."""
    if not isinstance(value, list) or len(value) != 4 or not all(isinstance(v, int | float) for v in value):
        return None
    brightness, contrast, colourfulness, sharpness = (float(v) for v in value)
    return (brightness, contrast, colourfulness, sharpness)


class DecoderPool:
    """Decodes and preprocesses images in worker processes, each image within a CPU and memory budget."""

    def __init__(self, settings: DecoderSettings) -> None:
        self.settings = settings
        self.workers = settings.workers
        self.slow_workers = settings.slow_workers
        self.demote_after_s = settings.demote_after_s
        crop = settings.preprocessing.crop_size
        self._shape = (crop, crop, 3)
        self._pixel_bytes = crop * crop * 3
        self._config_json = settings.worker_config.to_json()
        self._idle: list[_Worker] = []
        self._pending: collections.OrderedDict[Hashable, collections.deque[_Job]] = collections.OrderedDict()
        self._running: set[_Job] = set()
        self._fast = 0  # running at normal priority
        self._slow = 0  # demoted
        self._lease_budget = settings.lease_budget
        self.leased = 0  # by images larger than the allowance
        self._closed = False
        self._spawn_failures = 0
        self._spawning = 0
        self._processes: set[_Worker] = set()  # every process started and not yet reaped
        self._tasks: set[asyncio.Task[Any]] = set()  # spawning and reaping in the background
        self.stopped = collections.Counter[str]()  # images the pool stopped or refused, by reason (metrics)

    # --- life cycle

    async def start(self) -> None:
        """Start ``workers`` processes and wait until they are ready, so no request waits for them."""
        workers = await asyncio.gather(*(self._spawn() for _ in range(self.workers)))
        self._idle.extend(workers)

    async def close(self) -> None:
        """Stop every decoder; images not yet decoded fail with ``DecoderClosed``."""
        self._closed = True
        closing = DecoderClosed("The server is shutting down. Retry; another instance will answer.")
        for queue in self._pending.values():
            for job in queue:
                if not job.future.done():
                    job.future.set_exception(closing)
        self._pending.clear()
        for job in list(self._running):
            self._stop(job, closing)
        self._idle.clear()
        for task in list(self._tasks):
            task.cancel()
        workers = list(self._processes)
        for worker in workers:
            worker.close()
        await asyncio.gather(*(worker.exit_code() for worker in workers))
        self._processes.clear()

    def _keep_one_ready(self) -> None:
        """Start a process in the background when none is idle, so the next image need not wait for one."""
        if self._closed or self._idle or self._spawning or self.busy + 1 > self.workers + self.slow_workers:
            return
        self._spawning += 1
        self._background(self._spare())

    async def _spare(self) -> None:
        try:
            worker = await self._spawn()
        finally:
            self._spawning -= 1
        if self._closed:
            self._retire(worker)
        else:
            self._idle.append(worker)
            self._dispatch()

    def _background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _spawn(self) -> _Worker:
        """A new decoder process, ready for work."""
        try:
            worker = await _Worker.start(self._config_json, self._pixel_bytes)
        except Exception:
            self._spawn_failures += 1
            if not self._closed:
                logger.exception("cannot start an image decoder process")
            raise
        self._spawn_failures = 0
        self._processes.add(worker)
        if self._closed:
            self._retire(worker)
            raise DecoderClosed("The server is shutting down. Retry; another instance will answer.")
        return worker

    # --- the public call

    async def prepare(self, data: Buffer, owner: Hashable = None) -> PreparedImage:
        """Decode and preprocess one image; ``owner`` (the request) is the unit of fair scheduling.

        Raises an ``ImageError`` for images that cannot be classified (``DecodeTimeout`` among them),
        ``DecoderBusy`` when it must wait for expensive images of others, ``DecoderClosed`` on shutdown.
        """
        if self._closed:
            raise DecoderClosed("The server is shutting down. Retry; another instance will answer.")
        job = _Job(data, owner, asyncio.get_running_loop().create_future())
        self._pending.setdefault(owner, collections.deque()).append(job)
        self._dispatch()
        try:
            return await job.future
        except asyncio.CancelledError:
            self._forget(job)
            raise

    @property
    def busy(self) -> int:
        """Images being decoded now."""
        return self._fast + self._slow

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._pending.values())

    def health(self, stall_s: float) -> str | None:
        """Why the pool cannot do its work (for liveness), or None when it can."""
        if self._spawn_failures >= 3:
            return f"image decoder processes cannot be started ({self._spawn_failures} failures in a row)"
        now = time.monotonic()
        stuck = [job for job in self._running if not job.demoted and now - job.started > stall_s]
        if stuck:
            return f"{len(stuck)} image decodes have run for more than {stall_s:g} s at normal priority"
        return None

    # --- scheduling

    def _next_job(self) -> _Job | None:
        while self._pending:
            owner, queue = next(iter(self._pending.items()))
            job = queue.popleft()
            if queue:
                self._pending.move_to_end(owner)  # round robin: this owner's next image goes last
            else:
                del self._pending[owner]
            if not job.future.done():
                return job
        return None

    def _dispatch(self) -> None:
        while not self._closed and self._fast < self.workers:
            job = self._next_job()
            if job is None:
                break
            self._fast += 1
            self._running.add(job)
            asyncio.get_running_loop().create_task(self._run(job), name="decode")
        self._keep_one_ready()

    async def _run(self, job: _Job) -> None:
        loop = asyncio.get_running_loop()
        check = deadline = None
        worker = None
        try:
            worker = self._idle.pop() if self._idle else await self._spawn()
            job.worker = worker
            if job.future.done() or self._closed:  # cancelled while a process was starting
                return
            check = loop.call_later(self.demote_after_s, self._check, job)
            # A demoted image runs on spare CPU time; on a busy server it may get little. Past this, its
            # slot is worth more to the next image than the chance that it finishes.
            wall_s = 1 + self.settings.cpu_seconds * self.settings.wall_factor
            deadline = loop.call_later(wall_s, self._out_of_time, job)
            job.started = time.monotonic()
            job.cpu_at_start = worker.cpu_seconds()
            header, pixels = await worker.call(job.data, self._pixel_bytes, lambda n: self._lease(job, n))
            self._settle(job, header, pixels)
        except _WorkerDied as died:
            if worker is not None:
                worker.close()  # call() collected its exit status
                self._processes.discard(worker)
            worker = None  # dead: never reused
            self._fail(job, self._death_reason(job, died.exitcode))
        except Exception as exc:  # no process could be started, or the pool closed under us
            unavailable = DecoderBusy("The image decoders are not available. Retry in a moment.")
            self._fail(job, job.stop_reason or (exc if isinstance(exc, ClassifierError) else unavailable))
        finally:
            for timer in (check, deadline):
                if timer is not None:
                    timer.cancel()
            self._finished(job, worker)

    def _fail(self, job: _Job, error: ClassifierError) -> None:
        if not job.future.done():
            job.future.set_exception(error)

    def _finished(self, job: _Job, worker: _Worker | None) -> None:
        self._running.discard(job)
        if job.demoted:
            self._slow -= 1
        else:
            self._fast -= 1
        self.leased -= job.leased
        job.leased = 0
        self._release(worker, reusable=not job.demoted and job.stop_reason is None)
        self._dispatch()

    @property
    def memory_in_use(self) -> int:
        """The decode memory reserved now: an allowance per decode in progress, and the leases beyond it."""
        return self.busy * self.settings.allowance_bytes + self.leased

    def _lease(self, job: _Job, needed: int) -> bytes:
        """A decoder has read the header of an image that needs more than its allowance, and asks for it."""
        if needed > self._lease_budget:
            self.stopped["memory"] += 1
            return TOO_LARGE
        if self.leased + needed > self._lease_budget:
            self.stopped["busy"] += 1
            return BUSY
        self.leased += needed
        job.leased += needed
        return GRANTED

    def _settle(self, job: _Job, header: dict[str, Any], pixels: bytes) -> None:
        if job.future.done():
            return
        if header.get("status") == OK:
            array = np.frombuffer(pixels, dtype=np.uint8).reshape(self._shape)
            prepared = PreparedImage(
                array,
                str(header["format"]),
                int(header["width"]),
                int(header["height"]),
                _statistics(header.get("statistics")),
            )
            job.future.set_result(prepared)
            return
        kind = str(header.get("kind"))
        error = DecoderBusy if kind == MemoryBusy.__name__ else _ERRORS.get(kind, InvalidImage)
        job.future.set_exception(error(str(header.get("message") or "The image cannot be decoded.")))

    def _death_reason(self, job: _Job, exitcode: int | None) -> ClassifierError:
        if job.stop_reason is not None:
            return job.stop_reason
        if exitcode == OUT_OF_MEMORY:
            self.stopped["memory"] += 1
            return ImageTooLarge(
                "Decoding this image needed more memory than its size and format call for "
                f"({max(job.leased, self.settings.allowance_bytes) >> 20} MB), so it was stopped. The file may be "
                "crafted or corrupt; send a smaller or simpler image."
            )
        if exitcode == -signal.SIGPROF:
            self.stopped["cpu_budget"] += 1
            return DecodeTimeout(
                f"Decoding this image took more than the {self.settings.cpu_seconds:g} s of CPU time the server "
                "allows per image, so it was stopped. Send a smaller image, or re-save it as a baseline "
                "(non-progressive) JPEG or a PNG."
            )
        self.stopped["crashed"] += 1
        logger.warning("an image decoder process died", extra={"exitcode": exitcode})
        return InvalidImage("The image cannot be decoded: the decoder failed on it. The file may be corrupt.")

    def _check(self, job: _Job) -> None:
        """Still decoding after ``demote_after_s``: if it used that CPU time (not merely waited for a CPU, as
        every image does on a busy machine), move it out of the way of cheap images, or stop it."""
        if job.future.done() or job.worker is None or job.demoted:
            return
        if job.worker.cpu_seconds() - job.cpu_at_start < self.demote_after_s:
            asyncio.get_running_loop().call_later(self.demote_after_s, self._check, job)
            return
        if self._slow < self.slow_workers:
            with contextlib.suppress(OSError, ValueError):
                if job.worker.process.exitcode is None:  # see _Worker.kill: never touch a reused pid
                    os.setpriority(os.PRIO_PROCESS, job.worker.pid, LOW_PRIORITY)
            job.demoted = True
            self._fast -= 1
            self._slow += 1
            self._dispatch()
            return
        if any(owner != job.owner for owner in self._pending):
            self.stopped["busy"] += 1
            self._stop(job, DecoderBusy("The server is busy decoding other large images. Retry in a few seconds."))
            return
        asyncio.get_running_loop().call_later(self.demote_after_s, self._check, job)

    def _out_of_time(self, job: _Job) -> None:
        if not job.future.done():
            self.stopped["wall_clock"] += 1
            self._stop(
                job, DecoderBusy("The server was too busy to decode this image in time. Retry in a few seconds.")
            )

    def _stop(self, job: _Job, reason: ClassifierError) -> None:
        if job.stop_reason is not None:
            return  # already being stopped
        job.stop_reason = reason
        if job.worker is not None:
            job.worker.kill()  # its call() sees the pipe close and reports the death with this reason
        elif not job.future.done():
            job.future.set_exception(reason)

    def _forget(self, job: _Job) -> None:
        """The caller stopped waiting (timeout, disconnect): drop the image, or kill the process decoding it."""
        queue = self._pending.get(job.owner)
        if queue is not None and job in queue:
            queue.remove(job)
            if not queue:
                del self._pending[job.owner]
        elif job in self._running:
            self.stopped["cancelled"] += 1
            self._stop(job, DecoderClosed("The request was cancelled."))

    def _release(self, worker: _Worker | None, *, reusable: bool) -> None:
        if worker is None:
            return
        if reusable and not self._closed and len(self._idle) < self.workers:
            self._idle.append(worker)
            return
        self._retire(worker)  # dead, demoted, or more idle processes than the pool keeps

    def _retire(self, worker: _Worker) -> None:
        """Kill a process; collect its exit status in the background (``close`` reaps what is left)."""
        worker.close()
        self._background(self._reap(worker))

    async def _reap(self, worker: _Worker) -> None:
        await worker.exit_code()
        self._processes.discard(worker)
