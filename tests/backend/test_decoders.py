"""The decoder processes: same pixels as decoding in-process, budgets that stop the work, fair scheduling."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import pytest
import uvloop

from backend.classifier import (
    DecoderBusy,
    DecoderPool,
    DecoderSettings,
    DecodeTimeout,
    ImageError,
    ImageLimits,
    ImageTooLarge,
    InvalidImage,
    Preprocessing,
    UnsupportedImage,
    _pool,
)
from backend.classifier._images import decode_image
from tests.helpers import CAT, COFFEE, jpeg_bytes
from tests.hostile.attacks import bmp_rle, gif_comment_blocks, png_zeros, progressive_jpeg_scans

T = TypeVar("T")
MB = 1 << 20
PREPROCESSING = Preprocessing()
LIMITS = ImageLimits()
CAT_JPEG = jpeg_bytes(CAT, (640, 480))
BIG_PNG = png_zeros(7000, 7000)  # 49 megapixels of RGBA zeros: ~0.5 s of CPU, ~390 MB to decode


def settings(**overrides: object) -> DecoderSettings:
    values: dict[str, object] = {
        "preprocessing": PREPROCESSING,
        "limits": LIMITS,
        "cpu_seconds": 3.0,
        "memory_bytes": 1024 * MB,
        "workers": 2,
        "slow_workers": 2,
    }
    values.update(overrides)
    return DecoderSettings(**values)  # type: ignore[arg-type]


def run(make: Callable[[DecoderPool], Awaitable[T]], **overrides: object) -> T:
    """``make(pool)`` on a started pool, closed afterwards (every process reaped)."""

    async def main() -> T:
        pool = DecoderPool(settings(**overrides))
        await pool.start()
        try:
            return await make(pool)
        finally:
            await pool.close()
            assert not pool._processes, "a decoder process was left behind"

    return asyncio.run(main())


async def outcome(pool: DecoderPool, data: bytes, owner: object = None) -> object:
    try:
        return await pool.prepare(data, owner)
    except Exception as exc:
        return exc


def test_ordinary_photos_need_no_lease_and_larger_images_do() -> None:
    async def scenario(pool: DecoderPool) -> tuple[int, int]:
        leases: list[int] = []
        grant = pool._lease

        def counted(job: Any, needed: int) -> bytes:
            leases.append(needed)
            return grant(job, needed)

        pool._lease = counted  # type: ignore[method-assign]
        await pool.prepare(jpeg_bytes(CAT, (4032, 3024)))  # a 12-megapixel photo: within the allowance
        photo_leases = len(leases)
        await pool.prepare(BIG_PNG)
        return photo_leases, len(leases)

    assert run(scenario) == (0, 1)


def test_a_budget_too_small_for_the_processes_is_refused() -> None:
    with pytest.raises(ValueError, match="too small"):
        settings(memory_bytes=64 * MB)


def test_pixels_and_facts_equal_decoding_in_process() -> None:
    photos = [CAT_JPEG, jpeg_bytes(COFFEE), CAT.read_bytes()]

    async def decode_all(pool: DecoderPool) -> list[object]:
        return list(await asyncio.gather(*(pool.prepare(photo) for photo in photos)))

    for photo, prepared in zip(photos, run(decode_all), strict=True):
        local = decode_image(photo, LIMITS, PREPROCESSING.resize_size)
        assert (prepared.format, prepared.width, prepared.height) == (local.format, local.width, local.height)  # type: ignore[attr-defined]
        np.testing.assert_array_equal(prepared.pixels, PREPROCESSING(local.image))  # type: ignore[attr-defined]


def test_bad_images_get_the_same_errors_as_in_process() -> None:
    cases = {
        b"GIF89a" + b"\0" * 40: UnsupportedImage,  # Pillow cannot identify a GIF without a screen
        b"hello, this is text" * 10: UnsupportedImage,
        CAT_JPEG[: len(CAT_JPEG) // 2]: InvalidImage,
        bmp_rle(64, 64): UnsupportedImage,  # RLE BMPs decode in pure Python: refused, whatever their size
    }

    async def each(pool: DecoderPool) -> list[object]:
        return [await outcome(pool, data) for data in cases]

    for (data, expected), got in zip(cases.items(), run(each), strict=True):
        assert type(got) is expected, (data[:20], got)
        with pytest.raises(expected):
            decode_image(data, LIMITS, 256)
    assert "RLE" in str(run(lambda pool: outcome(pool, bmp_rle(64, 64))))


def test_an_image_over_its_cpu_budget_is_stopped_and_its_process_replaced() -> None:
    async def scenario(pool: DecoderPool) -> tuple[object, float, object]:
        started = time.perf_counter()
        slow = await outcome(pool, BIG_PNG)
        elapsed = time.perf_counter() - started
        return slow, elapsed, await outcome(pool, CAT_JPEG)

    slow, elapsed, after = run(scenario, cpu_seconds=0.05)
    assert isinstance(slow, DecodeTimeout), slow
    assert "0.05 s of CPU" in str(slow)
    assert elapsed < 2.0  # stopped by the kernel at 0.05 s of CPU, not when the decode would have ended
    assert not isinstance(after, Exception), after  # a new process took over


@pytest.mark.slow  # decoder processes
def test_a_progressive_jpeg_of_thousands_of_scans_is_stopped_inside_libjpeg() -> None:
    bomb = progressive_jpeg_scans(scans=1600)  # ~40 s of CPU if let run

    async def scenario(pool: DecoderPool) -> tuple[object, float]:
        started = time.perf_counter()
        return await outcome(pool, bomb), time.perf_counter() - started

    result, elapsed = run(scenario, cpu_seconds=0.5)
    assert isinstance(result, DecodeTimeout), result
    assert elapsed < 5.0


def test_an_image_larger_than_the_whole_memory_budget_is_413_before_decoding() -> None:
    result = run(lambda pool: outcome(pool, BIG_PNG), memory_bytes=300 * MB)  # 4 x 32 MB of allowances + 172
    assert isinstance(result, ImageTooLarge), result
    assert "memory" in str(result)


def test_a_header_that_takes_more_memory_than_headers_may_is_413_and_the_process_replaced() -> None:
    async def scenario(pool: DecoderPool) -> tuple[object, object]:
        return await outcome(pool, gif_comment_blocks()), await outcome(pool, CAT_JPEG)  # ~900 MB in Python

    refused, after = run(scenario)
    assert isinstance(refused, ImageTooLarge), refused
    assert "memory" in str(refused)
    assert not isinstance(after, Exception), after


def test_images_that_do_not_fit_the_memory_budget_together_wait_their_turn_as_503() -> None:
    async def scenario(pool: DecoderPool) -> list[object]:
        return list(await asyncio.gather(*(outcome(pool, BIG_PNG, owner) for owner in range(3))))

    results = run(scenario, memory_bytes=640 * MB)  # 4 x 32 MB of allowances: one 390 MB decode fits, two do not
    assert sum(not isinstance(r, Exception) for r in results) >= 1, results
    assert any(isinstance(r, DecoderBusy) for r in results), results
    assert all(isinstance(r, DecoderBusy) or not isinstance(r, Exception) for r in results), results


@pytest.mark.slow  # decoder processes
def test_the_memory_lease_is_given_back() -> None:
    async def scenario(pool: DecoderPool) -> tuple[int, list[object]]:
        first = [await outcome(pool, BIG_PNG) for _ in range(3)]  # one after another: each fits alone
        return pool.memory_in_use, first

    in_use, results = run(scenario, memory_bytes=640 * MB)
    assert in_use == 0
    assert not any(isinstance(r, Exception) for r in results), results


@pytest.mark.slow  # decoder processes, seconds of CPU
def test_cheap_images_are_not_delayed_by_expensive_ones_from_other_requests() -> None:
    bomb = progressive_jpeg_scans(scans=400)  # ~10 s of CPU

    async def scenario(pool: DecoderPool) -> tuple[list[float], list[object]]:
        attacks = [asyncio.ensure_future(outcome(pool, bomb, f"attacker-{i}")) for i in range(4)]
        await asyncio.sleep(0.3)
        latencies = []
        for i in range(6):
            started = time.perf_counter()
            prepared = await pool.prepare(CAT_JPEG, f"normal-{i}")
            latencies.append(time.perf_counter() - started)
            assert prepared.width == 640
            await asyncio.sleep(0.1)
        return latencies, list(await asyncio.gather(*attacks))

    latencies, attacks = run(scenario, cpu_seconds=2.0)
    assert max(latencies) < 1.0, latencies  # ~5 ms alone; the bombs run at the lowest priority
    assert all(isinstance(a, DecodeTimeout | DecoderBusy) for a in attacks), attacks


@pytest.mark.slow  # timing of 64 decodes
def test_a_request_with_many_images_does_not_make_another_wait_behind_all_of_them() -> None:
    async def scenario(pool: DecoderPool) -> tuple[float, float]:
        batch = [asyncio.ensure_future(pool.prepare(CAT_JPEG, "batch")) for _ in range(64)]
        await asyncio.sleep(0)
        started = time.perf_counter()
        await pool.prepare(CAT_JPEG, "single")
        single = time.perf_counter() - started
        await asyncio.gather(*batch)
        return single, time.perf_counter() - started

    single, whole = run(scenario)
    assert single < whole / 4, (single, whole)  # taken in turn, not after the 64


@pytest.mark.slow  # decoder processes
def test_cancelling_the_wait_kills_the_process_doing_the_work() -> None:
    bomb = progressive_jpeg_scans(scans=1600)

    async def scenario(pool: DecoderPool) -> tuple[int, bool]:
        task = asyncio.ensure_future(pool.prepare(bomb))
        await asyncio.sleep(0.5)
        (job,) = pool._running
        assert job.worker is not None
        pid = job.worker.pid
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            await asyncio.sleep(0.02)
            if not _alive(pid):
                break
        return pid, _alive(pid)

    _, alive = run(scenario, cpu_seconds=60.0)
    assert not alive


@pytest.mark.slow  # decoder processes
def test_a_decoder_that_crashes_fails_only_its_image() -> None:
    bomb = progressive_jpeg_scans(scans=1600)

    async def scenario(pool: DecoderPool) -> tuple[object, object]:
        task = asyncio.ensure_future(outcome(pool, bomb))
        await asyncio.sleep(0.5)
        (job,) = pool._running
        assert job.worker is not None
        os.kill(job.worker.pid, signal.SIGSEGV)
        return await task, await outcome(pool, CAT_JPEG)

    crashed, after = run(scenario, cpu_seconds=60.0)
    assert isinstance(crashed, InvalidImage), crashed
    assert not isinstance(after, Exception), after


@pytest.mark.slow  # decoder processes
def test_closing_the_pool_stops_images_in_progress() -> None:
    bomb = progressive_jpeg_scans(scans=1600)

    async def scenario(pool: DecoderPool) -> object:
        task = asyncio.ensure_future(outcome(pool, bomb))
        await asyncio.sleep(0.5)
        await pool.close()
        return await task

    result = run(scenario, cpu_seconds=60.0)
    assert isinstance(result, ImageError | Exception)
    assert "shutting down" in str(result)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().split()[2] != "Z"


@pytest.mark.parametrize("cancelled", [False, True], ids=["retired", "cancelled while connecting"])
@pytest.mark.parametrize("loop_factory", [uvloop.new_event_loop, asyncio.SelectorEventLoop], ids=["uvloop", "asyncio"])
def test_each_decoder_pipe_is_closed_exactly_once(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], cancelled: bool
) -> None:
    """uvloop closes a pipe's descriptor through libuv and then through its file object (MagicStack/uvloop#763):
    a socket or file given that number in between would be closed under its owner. The pool's pipe ends leave
    the descriptor to the loop: once the loop has closed it, a file that takes its number stays open."""

    def is_open(fd: int) -> bool:
        try:
            os.fstat(fd)
        except OSError:
            return False
        return True

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        problems = []
        for connect, mode in ((loop.connect_read_pipe, "rb"), (loop.connect_write_pipe, "wb")):
            reads, writes = multiprocessing.Pipe(duplex=False)
            mine, theirs = (reads, writes) if mode == "rb" else (writes, reads)
            end = _pool._file(mine, mode)
            number = end.fileno()
            connecting = asyncio.ensure_future(connect(asyncio.Protocol, end))
            if cancelled:
                await asyncio.sleep(0)
                connecting.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await connecting
            else:
                transport, _ = await connecting
                transport.close()
            for _ in range(3):
                await asyncio.sleep(0)
            if is_open(number):
                problems.append(f"{mode}: fd {number} left open")
                continue
            stand_in = os.open(os.devnull, os.O_RDONLY)  # another thread's file, given the freed number
            if stand_in != number:
                os.dup2(stand_in, number)
                os.close(stand_in)
            del end, connecting
            gc.collect()
            for _ in range(3):
                await asyncio.sleep(0)
            if not is_open(number):
                problems.append(f"{mode}: fd {number} closed again after the loop closed it")
            else:
                os.close(number)
            theirs.close()
        return problems

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(main()) == []
