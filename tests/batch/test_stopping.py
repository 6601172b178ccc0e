"""Stopping a task (SIGTERM) at any moment ends it with exit status 143, what it finished written; and the event
loop it runs on closes each decoder pipe exactly once.

On uvloop, a SIGTERMed task on a busy machine exited 1 with ``OSError: [Errno 9] Bad file descriptor``: uvloop
closes a pipe's descriptor twice (libuv, then the file object), so a file another thread opens in between (an
image being read, a shard being written) can be given that number and be closed under it. The first two tests
fail on uvloop: every pipe end there is closed a second time after libuv closed it, or never by its owner."""

from __future__ import annotations

import asyncio
import errno
import gc
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest

from backend.batch import Task
from backend.batch.__main__ import _run, event_loop
from backend.classifier import DecoderPool, DecoderSettings, ImageLimits, Preprocessing, _pool
from backend.config import Settings
from tests.helpers import CAT, jpeg_bytes

T = TypeVar("T")
SIGNALS = {signal.SIGTERM: 143}


def _on_task_loop(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``main()`` on the event loop ``python -m backend.batch`` runs on."""
    with asyncio.Runner(loop_factory=event_loop) as runner:
        return runner.run(main())


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class _PipeEnd(io.FileIO):
    """A pipe end handed to the event loop that records, each time it is closed, whether its descriptor was still
    open. If not, something else closed that number first, and a file another thread opened in between may have
    been given it: this close would then close that file."""

    def __init__(self, fd: int, mode: str) -> None:
        super().__init__(fd, mode)
        self.number = fd
        self.closes: list[bool] = []

    def close(self) -> None:
        if not self.closed:
            self.closes.append(_is_open(self.number))
        super().close()


def _assert_closed_once(ends: list[_PipeEnd]) -> None:
    gc.collect()  # a pipe end the loop dropped without closing it closes now
    for end in ends:
        assert end.closes == [True], f"fd {end.number}: closed while open {end.closes.count(True)} times, " + (
            f"after another close {end.closes.count(False)} times"
        )


def test_the_task_loop_closes_each_pipe_once_while_it_is_still_open() -> None:
    async def main() -> list[_PipeEnd]:
        loop = asyncio.get_running_loop()
        ends = []
        for cancelled in (False, True):
            for connect, mode in ((loop.connect_read_pipe, "r"), (loop.connect_write_pipe, "w")):
                read, write = os.pipe()
                mine, theirs = (read, write) if mode == "r" else (write, read)
                end = _PipeEnd(mine, mode)
                ends.append(end)
                connecting = asyncio.ensure_future(connect(asyncio.Protocol, end))
                if cancelled:  # the pool closed while a decoder process was being connected
                    await asyncio.sleep(0)
                    connecting.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await connecting
                else:  # a decoder process retired
                    transport, _ = await connecting
                    transport.close()
                for _ in range(3):
                    await asyncio.sleep(0)
                os.close(theirs)
        return ends

    _assert_closed_once(_on_task_loop(main))


def test_the_decoder_pool_on_the_task_loop_closes_each_pipe_once(monkeypatch: pytest.MonkeyPatch) -> None:
    ends: list[_PipeEnd] = []

    def probed(conn: Any, mode: str) -> _PipeEnd:  # _pool._file, with a pipe end that records its closes
        fd = os.dup(conn.fileno())
        conn.close()
        ends.append(_PipeEnd(fd, mode))
        return ends[-1]

    monkeypatch.setattr(_pool, "_file", probed)
    jpeg = jpeg_bytes(CAT, (64, 48))

    async def main() -> None:
        # One process at work, and a spare started when an image arrives while it decodes; once the spare is
        # ready, the process that decoded an image is retired after it (its pipes closed), or closed with the pool.
        pool = DecoderPool(DecoderSettings(Preprocessing(), ImageLimits(), workers=1, slow_workers=1))
        await pool.start()
        try:
            for _ in range(6):
                decoding = asyncio.ensure_future(pool.prepare(jpeg))
                for _ in range(2):  # it is queued, then taken by the idle process
                    await asyncio.sleep(0)
                await asyncio.gather(decoding, pool.prepare(jpeg))
        finally:
            await pool.close()
        for _ in range(3):
            await asyncio.sleep(0)

    _on_task_loop(main)
    assert len(ends) >= 2 * 2, len(ends)  # the first process and a spare at least (more if retired): two ends each
    _assert_closed_once(ends)


class _FakeModel:
    info = SimpleNamespace(name="fake")
    version = "v0"


def _task(tmp_path: Path) -> Task:
    source = tmp_path / "images"
    source.mkdir()
    (source / "a.jpg").write_bytes(b"not decoded here")
    return Task(Settings(), source, tmp_path / "results", classifier=_FakeModel())  # type: ignore[arg-type]


def _passed_in_a_child(request: pytest.FixtureRequest) -> bool:
    """True once this test has passed in a pytest process of its own: it sends SIGTERM to its process, which must
    not be the suite's (a full suite's process carries signal state from every event loop that ran before;
    in CI a SIGTERM there once crashed it). False in that child, which runs the test itself."""
    if os.environ.get(_CHILD) == request.node.nodeid:
        return False
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", request.node.nodeid]
    done = subprocess.run(
        command,
        cwd=request.config.rootpath,
        env={**os.environ, _CHILD: request.node.nodeid},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return True


_CHILD = "BATCH_STOPPING_TEST_CHILD"


async def _sigterm(task: Task, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM to this process, as Cloud Run sends it; returns once the task's handler (from _run) has taken it."""
    taken = asyncio.Event()
    stop = task.stop

    def recorded() -> None:
        stop()
        taken.set()

    monkeypatch.setattr(task, "stop", recorded)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(taken.wait(), 10)


def test_an_error_after_sigterm_does_not_mask_the_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    if _passed_in_a_child(request):
        return
    task = _task(tmp_path)

    async def classify(*args: object) -> None:
        await _sigterm(task, monkeypatch)
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))  # e.g. a file closed under a reader while stopping

    monkeypatch.setattr(task, "_classify", classify)
    summary, status = _on_task_loop(lambda: _run(task, SIGNALS))
    assert status == 143
    assert not summary.complete
    assert not any(name.startswith("_done") for name in os.listdir(tmp_path / "results"))


def test_an_error_before_sigterm_still_fails_the_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    if _passed_in_a_child(request):
        return
    task = _task(tmp_path)
    unwritable = OSError(errno.EROFS, os.strerror(errno.EROFS))

    async def classify(*args: object) -> None:
        task._fail(unwritable)  # OUTPUT cannot be written: the task stops itself
        await _sigterm(task, monkeypatch)  # and is then told to stop too

    monkeypatch.setattr(task, "_classify", classify)
    with pytest.raises(OSError) as failed:
        _on_task_loop(lambda: _run(task, SIGNALS))
    assert failed.value is unwritable


def test_sigterm_while_the_model_loads_ends_the_task_before_it_starts_the_decoders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    if _passed_in_a_child(request):
        return
    task = _task(tmp_path)
    task._classifier = None

    def load(*args: object, **kwargs: object) -> _FakeModel:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)  # still loading when the loop takes the signal
        return _FakeModel()

    async def classify(*args: object) -> None:
        raise AssertionError("a stopped task started its pipeline")

    monkeypatch.setattr("backend.batch._job.default_factory", load)
    monkeypatch.setattr(task, "_classify", classify)
    summary, status = _on_task_loop(lambda: _run(task, SIGNALS))
    assert (status, summary.complete, summary.shards) == (143, False, [])
