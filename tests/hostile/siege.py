"""Attacks on a real server while a normal client keeps using it: what a budget is worth, measured.

For each attack class, ``attackers`` concurrent attackers repeat their attack for ``seconds`` against a real
``python -m backend`` with its default settings, while a normal client posts a real photo every half second.
Recorded: every answer the attackers got (status, error code, seconds), the normal client's statuses and
latencies, and the resident memory of the server and its decoder processes (before, peak, after)::

    .venv/bin/python -m tests.hostile.siege                       # every class, 4 attackers: a markdown table
    .venv/bin/python -m tests.hostile.siege --attackers 8 progressive_jpeg slowloris

``tests/hostile/test_siege.py`` runs the same classes and asserts what the table shows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import resource
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil

from tests.helpers import CAT, backend_server, jpeg_bytes
from tests.hostile import attacks
from tests.hostile.corpus import Part, multipart
from tests.reliability.harness import PeakRss, memory_mb, server_process

MB = 1024 * 1024
NORMAL_INTERVAL_S = 0.5
SETTLED_WITHIN_MB = 40.0
SETTLE_S = 8.0
PHOTO = jpeg_bytes(CAT, (640, 480))


@dataclass(frozen=True)
class Answer:
    """What one attack request came to."""

    status: int | None  # None: the server closed the connection without an answer (an idle socket, evicted)
    code: str | None  # the JSON error's code
    seconds: float
    json: bool = True  # the answer, if any, was JSON


Attack = Callable[[str, int], Awaitable[Answer]]


@dataclass(frozen=True)
class AttackClass:
    name: str
    what: str  # the attack
    defence: str  # what stops it
    attack: Attack
    expect: frozenset[int | None]  # statuses an attacker may get
    budget_s: float  # an attacker is answered within this
    seconds: float = 6.0  # attackers repeat their attack this long (the last one may end later)


def _answer(result: attacks.WireResult) -> Answer:
    body = result.json()
    code = body.get("code") if isinstance(body, dict) else None
    return Answer(result.status, code, result.seconds, result.status is None or isinstance(body, dict))


_RAW = {"Content-Type": "application/octet-stream"}


def _upload(make: Callable[[], bytes], max_wait_s: float = 60.0) -> Attack:
    """POST the bytes ``make()`` returns (made once, on first use) as the raw body of ``/predict``."""
    made = functools.cache(make)

    async def attack(host: str, port: int) -> Answer:
        async with httpx.AsyncClient(timeout=max_wait_s) as client:
            started = time.monotonic()
            try:
                response = await client.post(
                    f"http://{host}:{port}/predict",
                    content=made(),
                    headers={"Content-Type": "application/octet-stream"},
                )
            except httpx.TransportError as exc:  # no answer at all: recorded, and a failure of the defence
                return Answer(None, f"no answer: {type(exc).__name__}", time.monotonic() - started, False)
            try:
                code = response.json().get("code")
                is_json = True
            except ValueError:
                code, is_json = None, False
            return Answer(response.status_code, code, time.monotonic() - started, is_json)

    return attack


def _files(make: Callable[[], list[bytes]]) -> Attack:
    """POST the images ``make()`` returns (made once) as the ``file`` parts of one multipart request."""

    @functools.cache
    def made() -> tuple[bytes, dict[str, str]]:
        return multipart([Part(image, filename=f"{i}.jpg") for i, image in enumerate(make())])

    async def attack(host: str, port: int) -> Answer:
        body, headers = made()
        async with httpx.AsyncClient(timeout=60.0) as client:
            started = time.monotonic()
            response = await client.post(f"http://{host}:{port}/predict", content=body, headers=headers)
            return Answer(response.status_code, response.json().get("code"), time.monotonic() - started)

    return attack


async def _idle_flood(host: str, port: int) -> Answer:
    """Hold 1,100 silent sockets (more than MAX_CONNECTIONS) for 5 s; the answer is how the last one ended."""
    started = time.monotonic()
    async with attacks.idle_connections(host, port, 1100) as idle:
        await asyncio.sleep(5.0)
        open_now = await idle.still_open()
    return Answer(None, f"{idle.opened - open_now} of {idle.opened} closed", time.monotonic() - started)


DECODER_BUDGETS = frozenset({400, 413, 422, 503})  # refused, over a budget (memory, CPU), or decoders busy


def _bomb(name: str, what: str, defence: str, make: Callable[[], bytes]) -> AttackClass:
    """An image that is expensive to decode, posted as the raw body; stopped by the decoder's budgets."""
    return AttackClass(name, what, defence, _upload(make), DECODER_BUDGETS, budget_s=30.0)


CLASSES: tuple[AttackClass, ...] = (
    _bomb(
        "progressive_jpeg",
        "progressive JPEG 7000x7000 of 1,600 repeated scans (247 kB; ~40 s of CPU in libjpeg)",
        "decoder process killed at DECODE_TIMEOUT_S of CPU; demoted to nice 19 after 0.1 s of CPU",
        attacks.progressive_jpeg_scans,
    ),
    AttackClass(
        "bomb_per_file",
        "16 such JPEGs in one multipart request",
        "the first failure stops the request's other decodes",
        _files(lambda: [attacks.progressive_jpeg_scans(scans=400)] * 16),
        DECODER_BUDGETS,
        budget_s=30.0,
    ),
    AttackClass(
        "bmp_rle",
        "RLE8 BMP 7000x7000 (pure-Python decoder in Pillow)",
        "refused from the header: 415",
        _upload(attacks.bmp_rle),
        frozenset({415}),
        budget_s=2.0,
    ),
    _bomb(
        "jpeg_segments",
        "JPEG after 5 million empty COM segments (20 MB; parsed in Python)",
        "96 MB cap on header parsing (413), CPU budget (422) in the decoder process",
        lambda: attacks.jpeg_many_markers(marker=0xFE),
    ),
    _bomb(
        "png_chunks",
        "PNG with 1.7 million empty private chunks (20 MB)",
        "96 MB cap on header parsing (413), CPU budget (422) in the decoder process",
        attacks.png_many_chunks,
    ),
    _bomb(
        "jpeg_exif",
        "JPEG after 1 million 20-byte Exif segments (20 MB; Pillow joins them, quadratically)",
        "CPU budget and header-memory cap in the decoder process",
        lambda: attacks.jpeg_exif_segments(1_000_000),
    ),
    _bomb(
        "jpeg_fill",
        "JPEG after 20 million 0xFF fill bytes (read one at a time in Python)",
        "CPU budget in the decoder process",
        attacks.jpeg_fill_bytes,
    ),
    _bomb(
        "tiff_strips",
        "TIFF of 9.9 million one-row strips (20 MB; 3.2 GB of Python objects in Image.open)",
        "96 MB cap on header parsing: 413",
        attacks.tiff_many_strips,
    ),
    _bomb("png_iccp", "PNG of 19,000 iCCP chunks, each inflating to 1 MiB", "CPU budget", attacks.png_iccp_chunks),
    _bomb(
        "gif_comments",
        "GIF with a comment of 6.9 million sub-blocks (20 MB; ~900 MB in Python)",
        "96 MB cap on header parsing: 413",
        attacks.gif_comment_blocks,
    ),
    AttackClass(
        "big_images",
        "7000x7000 RGBA PNG of zeros (150 kB; 390 MB to decode)",
        "decode-memory lease from DECODE_MEMORY_BYTES; RLIMIT_AS per process",
        _upload(attacks.png_zeros),
        frozenset({200, 503}),
        budget_s=30.0,
    ),
    AttackClass(
        "huge_header",
        "one 1 MiB header line",
        "MAX_HEADER_BYTES: 431 before the parser sees more",
        lambda host, port: _wrap(attacks.huge_header(host, port)),
        frozenset({431}),
        budget_s=2.0,
    ),
    AttackClass(
        "slowloris",
        "headers sent a byte a second, never finished",
        "HEADER_TIMEOUT_S: 408",
        lambda host, port: _wrap(attacks.slow_headers(host, port, interval=1.0, max_seconds=30.0)),
        frozenset({408}),
        budget_s=12.0,
        seconds=1.0,
    ),
    AttackClass(
        "idle_sockets",
        "1,100 connections that never send a byte (MAX_CONNECTIONS is 1,000)",
        "the longest-waiting connection is closed to make room; KEEP_ALIVE_TIMEOUT_S for the rest",
        _idle_flood,
        frozenset({None}),
        budget_s=20.0,
        seconds=1.0,
    ),
    AttackClass(
        "stalled_body",
        "declares a 20 MB image, sends 19 MB, then nothing",
        "UPLOAD_MEMORY_BYTES counts it as it arrives; REQUEST_TIMEOUT_S: 504, memory given back",
        lambda host, port: _wrap(attacks.stalled_body(host, port, declared=20 * 10**6, sent=19 * 10**6)),
        frozenset({504}),
        budget_s=40.0,
        seconds=1.0,
    ),
    AttackClass(
        "huge_body",
        "a 400 MB body sent without Expect: 100-continue",
        "MAX_REQUEST_BYTES from Content-Length: 413 at once, readable (bounded lingering close)",
        lambda host, port: _wrap(attacks.early_413_read(host, port, body_bytes=400 * 10**6)),
        frozenset({413}),
        budget_s=10.0,
    ),
    AttackClass(
        "epilogue",
        "a photo, then 30 MB after the closing boundary (within MAX_REQUEST_BYTES)",
        "nothing after the closing boundary is read; the server drops it within a bound",
        lambda host, port: _wrap(attacks.epilogue_flood(host, port, PHOTO, after_close_bytes=30 * 10**6)),
        frozenset({200}),
        budget_s=10.0,
    ),
    AttackClass(
        "long_boundary",
        "a multipart boundary of 300 characters",
        "boundary length checked (RFC 2046: 70): 400",
        lambda host, port: _wrap(attacks.long_boundary(host, port, PHOTO)),
        frozenset({400}),
        budget_s=2.0,
    ),
)
BY_NAME = {c.name: c for c in CLASSES}


async def _wrap(result: Awaitable[attacks.WireResult]) -> Answer:
    return _answer(await result)


@dataclass
class Result:
    name: str
    attackers: int
    answers: list[Answer]
    normal: list[tuple[int | str, float]]  # status (or exception name), seconds
    rss_before_mb: float
    rss_peak_mb: float
    rss_after_mb: float

    @property
    def statuses(self) -> Counter[int | None]:
        return Counter(a.status for a in self.answers)

    @property
    def codes(self) -> Counter[str | None]:
        return Counter(a.code for a in self.answers)

    def normal_latencies(self) -> list[float]:
        return [seconds for _, seconds in self.normal]

    def row(self, cls: AttackClass) -> str:
        answered = sorted(a.seconds for a in self.answers)
        normal = sorted(self.normal_latencies())
        statuses = ", ".join(
            f"{status or 'closed'}{f' {code}' if code else ''} x{n}"
            for (status, code), n in Counter((a.status, a.code) for a in self.answers).most_common()
        )
        normal_ok = sum(1 for status, _ in self.normal if status == 200)
        return (
            f"| {cls.name} | {cls.what} | {cls.defence} | {self.attackers} | {statuses} | "
            f"{_ms(statistics.median(answered))} / {_ms(answered[-1])} | "
            f"{normal_ok}/{len(self.normal)} | {_ms(statistics.median(normal))} / {_ms(normal[-1])} | "
            f"{self.rss_before_mb:.0f} / {self.rss_peak_mb:.0f} / {self.rss_after_mb:.0f} |"
        )


HEADER = (
    "| class | attack | defence | attackers | attackers' answers | attacker answered in p50 / max | "
    "normal client 200s | normal latency p50 / max | memory MB (PSS) before / peak / after |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


async def _normal_client(url: str, stop: asyncio.Event, out: list[tuple[int | str, float]]) -> None:
    body, headers = multipart([Part(PHOTO, filename="cat.jpg")])
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                response = await client.post("/predict", content=body, headers=headers)
                out.append((response.status_code, time.monotonic() - started))
            except httpx.HTTPError as exc:
                out.append((type(exc).__name__, time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, NORMAL_INTERVAL_S - (time.monotonic() - started)))


async def _attacker(cls: AttackClass, host: str, port: int, until: float, out: list[Answer]) -> None:
    while True:
        out.append(await cls.attack(host, port))
        if time.monotonic() >= until:
            return


async def besiege(url: str, process: psutil.Process, cls: AttackClass, attackers: int) -> Result:
    """Run one attack class against the server at ``url`` while a normal client uses it."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    before = memory_mb(process)
    answers: list[Answer] = []
    normal: list[tuple[int | str, float]] = []
    stop = asyncio.Event()
    with PeakRss(process, interval_s=0.05) as peak:
        client = asyncio.create_task(_normal_client(url, stop, normal))
        await asyncio.sleep(0.2)
        until = time.monotonic() + cls.seconds
        await asyncio.gather(*(_attacker(cls, host, port, until, answers) for _ in range(attackers)))
        await asyncio.sleep(NORMAL_INTERVAL_S * 2)  # the normal client's answers right after the attack count too
        stop.set()
        await client
    return Result(cls.name, attackers, answers, normal, before, peak.peak_mb, await _settled(process, before))


async def _settled(process: psutil.Process, before: float, within_mb: float = SETTLED_WITHIN_MB) -> float:
    """Memory once it is back within ``within_mb`` of ``before`` (decoders stopped and replaced, buffers
    given back), or after SETTLE_S if it never is."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        await asyncio.sleep(0.5)
        now = memory_mb(process)
        if now <= before + within_mb or time.monotonic() > deadline:
            return now


def raise_open_file_limit() -> None:
    """1,100 idle sockets need more than the usual 1,024 descriptors in this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hostile.siege", description=__doc__.split("\n")[0])
    parser.add_argument("classes", nargs="*", help=f"attack classes (default: all): {', '.join(BY_NAME)}")
    parser.add_argument("--attackers", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="one JSON line per class instead of the table")
    args = parser.parse_args(argv)
    selected = [BY_NAME[name] for name in args.classes] if args.classes else list(CLASSES)
    raise_open_file_limit()
    env = {"ACCESS_LOG": "false", "PYTHONFAULTHANDLER": "1"}
    with backend_server(env, Path(os.environ.get("TMPDIR", "/tmp")) / "siege-backend.log") as url:
        process = server_process(url)
        httpx.post(f"{url}/predict", content=PHOTO, timeout=30)  # warm
        if not args.json:
            print(HEADER, flush=True)
        for cls in selected:
            result = asyncio.run(besiege(url, process, cls, args.attackers))
            if args.json:
                print(json.dumps({"class": cls.name, **_summary(result)}), flush=True)
            else:
                print(result.row(cls), flush=True)
    return 0


def _summary(result: Result) -> dict[str, object]:
    return {
        "attackers": result.attackers,
        "statuses": {str(k): v for k, v in result.statuses.items()},
        "codes": {str(k): v for k, v in result.codes.items()},
        "attacker_seconds_max": max(a.seconds for a in result.answers),
        "normal": dict(Counter(str(s) for s, _ in result.normal)),
        "normal_seconds_max": max(result.normal_latencies()),
        "rss_mb": [round(result.rss_before_mb), round(result.rss_peak_mb), round(result.rss_after_mb)],
    }


if __name__ == "__main__":
    sys.exit(main())
