"""Soak: thousands of mixed valid and invalid requests from 16 clients; no 5xx, no memory leak.

``SOAK_REQUESTS`` sets the count (default 2,000, about half a minute); ``SOAK_REQUESTS=20000`` for a
longer run. Memory is the server's RSS, read after a warm-up, after the first half and at the end:
a leak shows as growth in the second half, when every code path has already been through once.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.helpers import CAT_CLASSES
from tests.hostile.corpus import BOUNDARY, Part, cat, coffee, encode, multipart, png_zeros, truncated
from tests.reliability.harness import Server, percentiles, running_server

CLIENTS = 16
REQUESTS = int(os.environ.get("SOAK_REQUESTS", "2000"))
WARMUP = 800  # RSS settles after about a thousand requests (allocator arenas, caches); measured from here
# Growth allowed between the first half and the end: allocator noise, not a leak.
LEAK_LIMIT_MB = 16.0
LEAK_LIMIT_FRACTION = 0.05


@dataclass(frozen=True)
class Kind:
    name: str
    make: Callable[[], tuple[bytes, dict[str, str], str]]  # body, headers, query
    statuses: frozenset[int]
    cat: bool = False


def _kinds() -> list[tuple[Kind, int]]:
    """What the clients send, with weights: mostly good photos, plus every kind of refusal."""
    jpeg = encode(cat(), "JPEG", quality=90)
    small = encode(cat().resize((160, 107)), "JPEG", quality=85)
    large = encode(cat().resize((1600, 1064)), "JPEG", quality=85)
    png = encode(coffee(), "PNG")
    four, _ = multipart([Part(jpeg, filename=f"{i}.jpg") for i in range(4)])
    rng = random.Random(7)
    junk = rng.randbytes(20_000)
    bomb = png_zeros(10_000, 10_000)
    form = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    good = frozenset({200, 503})  # 503 only if the queue were ever full: designed, allowed
    kinds = [
        (Kind("jpeg", lambda: (jpeg, {"Content-Type": "image/jpeg"}, ""), good, cat=True), 30),
        (Kind("small_jpeg", lambda: (small, {}, "top_k=3"), good, cat=True), 10),
        (Kind("large_jpeg", lambda: (large, {"Content-Type": "image/jpeg"}, ""), good, cat=True), 8),
        (Kind("png_coffee", lambda: (png, {"Content-Type": "image/png"}, ""), good), 8),
        (Kind("four_files", lambda: (four, form, "top_k=1"), good, cat=True), 8),
        (Kind("random_bytes", lambda: (junk, {"Content-Type": "image/jpeg"}, ""), frozenset({415})), 8),
        (Kind("truncated", lambda: (truncated(jpeg, 0.4), {}, ""), frozenset({400})), 8),
        (Kind("empty", lambda: (b"", {"Content-Type": "image/jpeg"}, ""), frozenset({400})), 5),
        (Kind("bomb", lambda: (bomb, {"Content-Type": "image/png"}, ""), frozenset({413})), 5),
        (Kind("bad_top_k", lambda: (small, {}, "top_k=0"), frozenset({422})), 5),
        (Kind("no_file_part", lambda: (multipart([Part(jpeg, name="x")])[0], form, ""), frozenset({400})), 5),
    ]
    return kinds


@dataclass
class Tally:
    statuses: Counter[tuple[str, int | str]] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)


async def _run(server: Server, count: int, seed: int, tally: Tally) -> None:
    weighted = _kinds()
    rng = random.Random(seed)
    plan = rng.choices([k for k, _ in weighted], weights=[w for _, w in weighted], k=count)
    queue: asyncio.Queue[Kind] = asyncio.Queue()
    for kind in plan:
        queue.put_nowait(kind)
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                kind = queue.get_nowait()
                body, headers, query = kind.make()
                began = time.perf_counter()
                try:
                    response = await client.post(
                        "/predict" + (f"?{query}" if query else ""), content=body, headers=headers
                    )
                except httpx.HTTPError as exc:
                    tally.statuses[(kind.name, type(exc).__name__)] += 1
                    tally.wrong.append(f"{kind.name}: no answer ({exc!r})")
                    continue
                tally.latencies.append(time.perf_counter() - began)
                status = response.status_code
                tally.statuses[(kind.name, status)] += 1
                if status not in kind.statuses:
                    tally.wrong.append(f"{kind.name}: {status} {response.text[:200]}")
                elif status == 200 and kind.cat:
                    labels = [r["predictions"][0]["label"] for r in response.json()["results"]]
                    if not all(label in CAT_CLASSES for label in labels):
                        tally.wrong.append(f"{kind.name}: not a cat: {labels}")
                elif status >= 400 and not response.json().get("code"):
                    tally.wrong.append(f"{kind.name}: {status} without a code")

        await asyncio.gather(*(worker() for _ in range(CLIENTS)))


@pytest.mark.slow
def test_soak_mixed_traffic_without_errors_or_leaks(model_cache: Path, tmp_path: Path) -> None:
    env = {"MODEL_CACHE_DIR": str(model_cache), "ACCESS_LOG": "false"}
    with running_server(env, tmp_path / "backend.log") as server:
        tally = Tally()
        asyncio.run(_run(server, WARMUP, seed=1, tally=tally))  # every path once: imports, arenas, caches
        warm = server.rss_mb()
        half = REQUESTS // 2
        began = time.perf_counter()
        asyncio.run(_run(server, half, seed=2, tally=tally))
        first = server.rss_mb()
        asyncio.run(_run(server, REQUESTS - half, seed=3, tally=tally))
        second = server.rss_mb()
        elapsed = time.perf_counter() - began
        growth = second - first
        by_status = Counter(status for (_, status), n in tally.statuses.items() for _ in range(n))
        print(
            f"\nsoak: {REQUESTS} requests (+{WARMUP} warm-up) from {CLIENTS} clients in {elapsed:.1f} s "
            f"({REQUESTS / elapsed:.0f} req/s); statuses {dict(sorted(by_status.items(), key=str))}"
            f"\n  latency: {percentiles(tally.latencies)}"
            f"\n  RSS: after warm-up {warm:.1f} MB, after first half {first:.1f} MB, "
            f"after second half {second:.1f} MB (second half {growth:+.1f} MB)"
        )
        for (kind, status), n in sorted(tally.statuses.items(), key=str):
            print(f"  {kind:14s} {status}: {n}")
        assert not tally.wrong, "\n".join(tally.wrong[:20])
        assert not any(isinstance(s, int) and s >= 500 and s != 503 for s in by_status)
        assert growth < max(LEAK_LIMIT_MB, LEAK_LIMIT_FRACTION * first), f"RSS grew {growth:.1f} MB in the second half"
        errors = [r for r in server.log_records() if r.get("severity") in ("ERROR", "CRITICAL")]
        assert not errors, errors[:3]
