"""Measures what hostile uploads and a hostile backend cost the page (the figures in docs/frontend.md).

    python -m tests.frontend.measure_hostile previews      # seconds per preview, hostile and largest allowed
    python -m tests.frontend.measure_hostile answers       # the page's memory around a 10 MB backend answer

``previews --preview module:function`` times another preview function taking the file's bytes (the
figures "before" were taken with ``frontend.presentation:preview`` in a checkout of the commit before).
``answers`` starts ``python -m frontend`` against a fake backend whose /predict answer is a 10 MB JSON
document, uploads a photo in Chromium, and reads the frontend process's resident memory (VmRSS) and
its peak (VmHWM) from /proc before and after.
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from tests.frontend import hostile_files
from tests.helpers import CAT, chromium, jpeg_bytes, server_popen
from tests.helpers.fakes import BackendBehaviour, Reply, fake_backend, prediction, running


def _noisy_png(width: int, height: int, noise_bytes: int = 19_000_000) -> bytes:
    """A PNG of ``width`` x ``height`` whose first rows are noise (incompressible) up to ``noise_bytes``
    on disk, the rest black: the most decoding work that fits under the 20 MB upload limit."""
    compressor = zlib.compressobj(6)
    rng = random.Random(0)
    parts, size = [], 0
    for _ in range(height):
        row = b"\x00" + (rng.randbytes(3 * width) if size < noise_bytes else bytes(3 * width))
        part = compressor.compress(row)
        parts.append(part)
        size += len(part)
    return hostile_files.png(width, height, idat=b"".join(parts) + compressor.flush())


CASES: dict[str, Callable[[], bytes]] = {
    "PNG header claiming 60000 x 60000": lambda: hostile_files.png_claiming(60000, 60000),
    "GIF header claiming 65535 x 65535": lambda: hostile_files.gif_claiming(65535, 65535),
    "RLE8 BMP 20000 x 2000 (9 kB)": lambda: hostile_files.bmp_rle8(20000, 2000),
    "EPS": hostile_files.eps,
    "PNG 11000 x 8100 (89 MP, under Pillow's bomb limit)": lambda: hostile_files.png(11000, 8100),
    "progressive JPEG 40 MP, 1000 scans (140 kB)": lambda: hostile_files.progressive_jpeg(8000, 5000, 1000),
    "progressive JPEG 40 MP, 5000 scans (340 kB)": lambda: hostile_files.progressive_jpeg(8000, 5000, 5000),
    "largest allowed: PNG 8000 x 5000, black": lambda: hostile_files.png(8000, 5000),
    "largest allowed: PNG 8000 x 5000, 19 MB of noise": lambda: _noisy_png(8000, 5000),
    "largest allowed: PNG 8000 x 5000 with alpha": lambda: hostile_files.png(8000, 5000, alpha=True),
    "largest allowed: JPEG 8000 x 5000": lambda: hostile_files.jpeg(8000, 5000),
    "largest allowed: TIFF 8000 x 5000": lambda: hostile_files.tiff(8000, 5000),
    "WebP 5000 x 4000 (20 MP)": lambda: hostile_files.webp(5000, 4000),
    "WebP 16383 x 2441 (40 MP)": lambda: hostile_files.webp(16383, 2441),
    "a phone photo: JPEG 4032 x 3024": lambda: jpeg_bytes(CAT, (4032, 3024)),
}


def measure_previews(function: str | None, repeat: int) -> None:
    if function is None:
        from frontend.previews import Previewer

        previewer = Previewer()
        previewer.preview(jpeg_bytes(CAT, (64, 43)))  # the worker is up

        def make(data: bytes) -> bytes | None:
            previewer._cache.clear()  # time the work, not the cache
            return previewer.preview(data)

        name = "frontend.previews.Previewer.preview (worker processes, PREVIEW_TIMEOUT_S limit)"
    else:
        module, attribute = function.split(":")
        call = getattr(importlib.import_module(module), attribute)

        def make(data: bytes) -> bytes | None:
            try:
                shown: bytes | None = call(data)
            except Exception:  # make_preview raises NoPreview
                return None
            return shown

        name = function
    print(f"{name}; median of {repeat} runs")
    for label, create in CASES.items():
        data = create()
        seconds = []
        for _ in range(repeat):
            started = time.perf_counter()
            shown = make(data)
            seconds.append(time.perf_counter() - started)
        result = "no preview" if shown is None else f"{len(shown) // 1024} kB preview"
        print(f"  {label:55s} {len(data) / 1024:9.0f} kB  {statistics.median(seconds):6.2f} s  {result}", flush=True)


def _memory(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) // 1024
    return fields


def measure_answers() -> None:
    label = "x" * (10 * 1024 * 1024)
    behaviour = BackendBehaviour()
    behaviour.replies["/predict"] = Reply(200, json.dumps(prediction("cat.jpg", 3, label)).encode())
    with tempfile.TemporaryDirectory() as tmp, running(fake_backend(behaviour)) as backend:
        env = {"BACKEND_URL": backend.url}
        with (
            server_popen("frontend", "/_stcore/health", env, Path(tmp) / "frontend.log") as (url, process),
            chromium() as browser,
        ):
            pid = process.pid  # python -m frontend execs Streamlit: the server's own process
            page = browser.new_page()
            page.set_default_timeout(120_000)
            page.goto(url)
            page.get_by_text("Ready", exact=True).wait_for()
            page.wait_for_timeout(2000)
            before = _memory(pid)
            started = time.perf_counter()
            page.locator("input[type=file]").first.set_input_files(str(CAT))
            page.get_by_text("Most likely:").or_(page.get_by_text("too large")).first.wait_for()
            seconds = time.perf_counter() - started
            page.wait_for_timeout(2000)
            after = _memory(pid)
            shown = page.locator("[data-testid=stMain]").inner_text()[-300:]
    print(f"frontend process (pid {pid}) before the upload: {before}")
    print(f"after the 10 MB answer ({seconds:.1f} s to show it): {after}")
    print(f"page ends with: {shown!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["previews", "answers"])
    parser.add_argument("--preview", help="module:function to time instead of the page's previewer")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.what == "previews":
        measure_previews(args.preview, args.repeat)
    else:
        measure_answers()


if __name__ == "__main__":
    main()
