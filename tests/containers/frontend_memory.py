"""How much memory a Streamlit session of the frontend holds, measured: the real ``python -m frontend``
(against a stand-in backend that answers at once), K Chromium sessions driven by Playwright, each
uploading N photos of ~3 MB, and the proportional set size (PSS) of the frontend's process tree (the
Streamlit server and its preview worker) sampled all along.

    .venv/bin/python -m tests.containers.frontend_memory --sessions 6 --images 16

prints the figures as JSON and writes them to artifacts/containers/frontend-memory.json. The deploy
sizing in cloudbuild.yaml (``--memory``, ``--concurrency`` of the frontend) is derived from them in
docs/deploy.md, and tests/containers/test_frontend_sizing.py checks that it still covers them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

from tests.helpers import ROOT, SKIMAGE_DATA, chromium, server_popen
from tests.helpers.fakes import BackendBehaviour, fake_backend, running

REPORT = ROOT / "artifacts" / "containers" / "frontend-memory.json"
MiB = 1024 * 1024
PHOTO_SIZE = (4000, 3000)  # a 12-megapixel phone photo
SOURCES = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg")


def photos(folder: Path, count: int, target_bytes: int = 3 * MiB) -> list[Path]:
    """``count`` distinct 12 MP JPEGs of about ``target_bytes`` (real photos, upscaled, with sensor-like
    noise so they compress like camera output rather than like smooth upscales)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    made: list[Path] = []
    for index in range(count):
        source = SKIMAGE_DATA / SOURCES[index % len(SOURCES)]
        image = Image.open(source).convert("RGB").resize(PHOTO_SIZE, Image.Resampling.BICUBIC)
        pixels = np.asarray(image, dtype=np.int16)
        noise = rng.normal(0, 6 + index % 3, pixels.shape).astype(np.int16)
        noisy = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
        quality, data = 90, b""
        for quality in (80, 85, 90, 92, 94, 96):
            out = io.BytesIO()
            noisy.save(out, "JPEG", quality=quality)
            data = out.getvalue()
            if len(data) >= target_bytes:
                break
        path = folder / f"photo-{index:02d}.jpg"
        path.write_bytes(data)
        made.append(path)
    return made


def tree_pss(pid: int) -> tuple[int, int]:
    """(PSS of the process and its children, their RSS) in bytes: PSS counts shared pages once."""
    root = psutil.Process(pid)
    pss = rss = 0
    for process in (root, *root.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            info = process.memory_full_info()
            pss += info.pss
            rss += info.rss
    return pss, rss


class Sampler:
    """The peak of ``tree_pss`` while it runs (every 50 ms, in a thread)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, tree_pss(self.pid)[0])
            self._stop.wait(0.05)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Measurement:
    sessions: int
    images_per_session: int
    image_mb: float  # mean upload size
    baseline_mb: float  # server + preview worker, one idle page open
    after_each_session_mb: list[float] = field(default_factory=list)  # PSS once each session shows its results
    peak_mb: float = 0.0  # highest PSS sampled during the whole run
    after_closing_mb: float = 0.0  # all pages closed, 5 s later
    seconds_per_session: list[float] = field(default_factory=list)

    @property
    def steps_mb(self) -> list[float]:
        """What each session added to the PSS, in order (the first one also starts the preview worker and
        imports what a page run needs: a one-off cost)."""
        before = [self.baseline_mb, *self.after_each_session_mb]
        return [round(after - earlier, 1) for earlier, after in zip(before, self.after_each_session_mb, strict=False)]

    @property
    def per_session_mb(self) -> float:
        """What one more open session with its uploads costs: the least-squares slope of the PSS over the
        sessions (the first one left out: it also starts the preview worker and imports what a page run
        needs, a one-off cost; and single steps are noisy, as freed memory gets reused)."""
        points = self.after_each_session_mb[1:] or self.after_each_session_mb
        if len(points) < 2:
            return self.steps_mb[-1]
        return statistics.linear_regression(range(len(points)), points).slope

    @property
    def first_session_overhead_mb(self) -> float:
        return self.steps_mb[0] - self.per_session_mb

    @property
    def peak_per_session_mb(self) -> float:
        """The peak above the baseline, per session (includes the transient copies of a page run)."""
        return (self.peak_mb - self.baseline_mb) / self.sessions

    def report(self) -> dict[str, object]:
        return {
            **asdict(self),
            "steps_mb": self.steps_mb,
            "per_session_mb": round(self.per_session_mb, 1),
            "first_session_overhead_mb": round(self.first_session_overhead_mb, 1),
            "peak_per_session_mb": round(self.peak_per_session_mb, 1),
            "command": f"python -m tests.containers.frontend_memory --sessions {self.sessions} "
            f"--images {self.images_per_session}",
        }


def measure(sessions: int, images: int, workdir: Path, timeout_ms: int = 180_000) -> Measurement:
    files = photos(workdir / "photos", images)
    image_mb = sum(p.stat().st_size for p in files) / len(files) / MiB
    with (
        running(fake_backend(BackendBehaviour())) as backend,
        server_popen(
            "frontend", "/_stcore/health", {"BACKEND_URL": backend.url, "LOG_LEVEL": "WARNING"}, workdir / "fe.log", 60
        ) as (url, process),
        chromium() as browser,
    ):
        pid = process.pid  # python -m frontend execs Streamlit: the server's own process
        first = browser.new_context().new_page()
        first.set_default_timeout(timeout_ms)
        first.goto(url, wait_until="domcontentloaded")
        first.get_by_text("Ready", exact=True).wait_for()
        time.sleep(2)
        measurement = Measurement(sessions, images, round(image_mb, 2), round(tree_pss(pid)[0] / MiB, 1))
        with Sampler(pid) as sampler:
            for _ in range(sessions):
                started = time.monotonic()
                page = browser.new_context().new_page()  # its own cookies: its own Streamlit session
                page.set_default_timeout(timeout_ms)
                page.goto(url, wait_until="domcontentloaded")
                page.get_by_text("Ready", exact=True).wait_for()
                page.locator("input[type=file]").first.set_input_files([str(p) for p in files])
                page.get_by_text("Most likely:").nth(images - 1).wait_for()
                page.locator("img").nth(images - 1).wait_for()  # the previews are shown too
                measurement.seconds_per_session.append(round(time.monotonic() - started, 1))
                time.sleep(1)
                measurement.after_each_session_mb.append(round(tree_pss(pid)[0] / MiB, 1))
        measurement.peak_mb = round(sampler.peak / MiB, 1)
        for context in browser.contexts:
            context.close()
        time.sleep(5)
        measurement.after_closing_mb = round(tree_pss(pid)[0] / MiB, 1)
    return measurement


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=6)
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = measure(args.sessions, args.images, Path(folder)).report()
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
