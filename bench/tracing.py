"""What tracing costs per request, in process: ``python -m bench.tracing [PATH] [REQUESTS] [ROUNDS]``.

Two apps on one event loop, called through httpx's ASGITransport (no sockets, no thread hops): tracing off (the
default) and on (OpenTelemetry's SDK, a BatchSpanProcessor, an exporter that drops what it is given), both with a
project id and Cloud Run's two trace headers on every request, and the access log formatted (not written).
Rounds alternate between the two; the figures are medians of rounds, wall and CPU time (this process's threads:
the inference threads included, the decoder processes not) per request. Record the load average beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from backend.app import create_app
from backend.classifier import ModelSpec, load_classifier
from backend.config import Settings
from bench.photos import VGA, photo
from common.logs import CloudLoggingFormatter

HEADERS = {
    "X-Cloud-Trace-Context": "0af7651916cd43dd8448eb211c80319c/12345;o=1",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
}


class _Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _FormatOnly(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(CloudLoggingFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)


async def measure(path: str, requests: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    cache = Path(os.environ.get("MODEL_CACHE_DIR") or Path.home() / ".cache" / "image-classifier")
    classifier = load_classifier(ModelSpec(), runtime="openvino", cache_dir=cache, threads=1)
    image = photo("chelsea", VGA).jpeg
    clients: dict[str, httpx.AsyncClient] = {}
    results: dict[str, dict[str, list[float]]] = {}
    async with contextlib.AsyncExitStack() as stack:
        for mode in ("off", "on"):
            provider = None
            if mode == "on":
                provider = TracerProvider()
                provider.add_span_processor(BatchSpanProcessor(_Drop(), max_queue_size=8192))
            settings = Settings(_env_file=None, google_cloud_project="bench", model_cache_dir=cache)
            app = create_app(settings, lambda _: classifier, provider)
            await stack.enter_async_context(app.router.lifespan_context(app))
            await app.state.service.wait_ready()
            transport = httpx.ASGITransport(app=app)
            clients[mode] = await stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://b"))
            results[mode] = {"wall": [], "cpu": []}

        async def one(client: httpx.AsyncClient) -> None:
            if path == "/predict":
                files = {"file": ("cat.jpg", image, "image/jpeg")}
                answer = await client.post(path, files=files, headers=HEADERS)
            else:
                answer = await client.get(path, headers=HEADERS)
            answer.raise_for_status()

        for client in clients.values():  # warm up
            for _ in range(30):
                await one(client)
        for _ in range(rounds):
            for mode, client in clients.items():
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(requests):
                    await one(client)
                results[mode]["wall"].append((time.perf_counter() - wall) / requests * 1e6)
                results[mode]["cpu"].append((time.process_time() - cpu) / requests * 1e6)
    return results


def main(argv: Sequence[str] = sys.argv[1:]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tracing", description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default="/predict", choices=["/predict", "/model"])
    parser.add_argument("requests", nargs="?", type=int, default=150, help="requests per round (150)")
    parser.add_argument("rounds", nargs="?", type=int, default=8, help="interleaved rounds (8)")
    args = parser.parse_args(argv)
    path, requests, rounds = args.path, args.requests, args.rounds
    access = logging.getLogger("backend.access")
    access.handlers[:] = [_FormatOnly()]
    access.setLevel(logging.INFO)
    access.propagate = False
    before = os.getloadavg()
    results = asyncio.run(measure(path, requests, rounds))
    after = os.getloadavg()
    lines = [f"{path}: {requests} requests x {rounds} rounds; load average {before[0]:.1f} -> {after[0]:.1f}"]
    for kind in ("wall", "cpu"):
        off, on = (statistics.median(results[mode][kind]) for mode in ("off", "on"))
        extra = statistics.median(b - a for a, b in zip(results["off"][kind], results["on"][kind], strict=True))
        lines.append(
            f"  {kind}: off {off:.0f} us, on {on:.0f} us per request; on - off {extra:.0f} us (median of rounds)"
        )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
