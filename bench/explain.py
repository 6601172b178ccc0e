"""``python -m bench.explain``: what an explanation (``POST /explain``) costs beside a ``POST /predict``.

One real server (``python -m backend``, the defaults), one client sending one request at a time: the
latency of each request and the server's CPU time per request (server and decoders, from /proc), for
/predict and /explain at each grid, interleaved round by round so a change in the machine's load touches them
alike. Prints a Markdown table for BENCHMARKS.md, with the load average before and after.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from backend.config import Settings
from backend.saliency import DEFAULT_GRID, MAX_GRID
from bench import photos as photo_maker
from bench.report import load_average
from bench.server import FAST, HOST, Server

logger = logging.getLogger("bench.explain")


@dataclass
class Kind:
    key: str
    path: str
    requests: int  # per round
    latencies_ms: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    count: int = 0

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu_s / self.count if self.count else float("nan")


def post(port: int, path: str, body: bytes) -> float:
    """One request on a fresh connection (as the page's client sends it); its latency in milliseconds."""
    connection = http.client.HTTPConnection(HOST, port, timeout=120)
    try:
        started = time.perf_counter()
        connection.request("POST", path, body, {"Content-Type": "image/jpeg"})
        response = connection.getresponse()
        response.read()
        elapsed = (time.perf_counter() - started) * 1000
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"{path}: HTTP {response.status}")
    return elapsed


def measure(server: Server, image: bytes, kinds: list[Kind], rounds: int) -> None:
    for kind in kinds:  # warm-up, not counted
        for _ in range(2):
            post(server.port, kind.path, image)
    for round_number in range(1, rounds + 1):
        for kind in kinds:
            before = server.cpu_seconds()
            for _ in range(kind.requests):
                kind.latencies_ms.append(post(server.port, kind.path, image))
            kind.cpu_s += server.cpu_seconds() - before
            kind.count += kind.requests
            logger.info(
                "round %d of %d, %s: p50 %.1f ms, %.1f ms CPU a request",
                round_number,
                rounds,
                kind.key,
                statistics.median(kind.latencies_ms),
                kind.cpu_ms_per_request,
            )


def table(kinds: list[Kind]) -> str:
    base = kinds[0]
    lines = [
        "| request | forward passes | requests | p50 latency | p90 latency | server CPU a request "
        "| CPU against /predict |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind in kinds:
        latencies = sorted(kind.latencies_ms)
        p90 = latencies[min(len(latencies) - 1, int(0.9 * len(latencies)))]
        passes = 1 if kind is base else int(kind.key.rsplit("=", 1)[1]) ** 2 + 1
        lines.append(
            f"| `{kind.path}` | {passes} | {kind.count} | {statistics.median(latencies):.0f} ms | {p90:.0f} ms "
            f"| {kind.cpu_ms_per_request:.0f} ms | {kind.cpu_ms_per_request / base.cpu_ms_per_request:.1f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.explain", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default %(default)s)")
    parser.add_argument("--grids", default=f"{DEFAULT_GRID},{MAX_GRID}", help="grids to measure (%(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="model cache (default: MODEL_CACHE_DIR's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    grids = [int(g) for g in args.grids.split(",")]
    image = photo_maker.photo("chelsea", photo_maker.VGA).jpeg
    kinds = [Kind("predict", "/predict", 20)] + [Kind(f"explain grid={g}", f"/explain?grid={g}", 4) for g in grids]
    cache_dir = args.cache_dir or Settings().model_cache_dir
    with tempfile.TemporaryDirectory(prefix="bench-explain-") as tmp:
        load_before = load_average()
        with Server(FAST, cache_dir, Path(tmp)) as server:
            measure(server, image, kinds, args.rounds)
        load_after = load_average()
    print(f"\nOne client, one request at a time, a 640x480 JPEG; {args.rounds} interleaved rounds.")
    print(f"Load average before: {load_before}; after: {load_after}.\n")
    print(table(kinds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
