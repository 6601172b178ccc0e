"""Helpers the tests share: real photos, free ports, and real server processes."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import skimage
from PIL import Image

if TYPE_CHECKING:
    from playwright.sync_api import Browser

ROOT = Path(__file__).resolve().parent.parent
SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
CAT = SKIMAGE_DATA / "chelsea.png"  # a tabby cat, photographed by someone else
COFFEE = SKIMAGE_DATA / "coffee.png"  # a cup of espresso
CAT_CLASSES = frozenset({"tabby", "tiger cat", "Egyptian cat"})
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
CHROMIUM = Path("/usr/bin/chromium")  # Debian's (`playwright install` cannot download one here)
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",  # as root in a container
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def need(condition: bool, reason: str) -> None:
    """Skip when a tool is missing on a developer's machine; in CI the same gap is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must be able to run this test: {reason}")
    pytest.skip(reason)


def need_executable(name: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"{name} is not installed")
    assert path is not None
    return path


def jpeg_bytes(path: Path, size: tuple[int, int] | None = None, quality: int = 90) -> bytes:
    """A real photo re-encoded as JPEG, optionally resized (to make phone-sized or small test images)."""
    image = Image.open(path).convert("RGB")
    if size is not None:
        image = image.resize(size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(url: str, timeout: float = 60.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200, failing early if ``process`` dies."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before {url} answered")
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s: {last}")


@contextlib.contextmanager
def server_popen(
    module: str,
    ready_path: str,
    env: Mapping[str, str],
    log_path: Path,
    ready_timeout: float = 90.0,
    port: int | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``python -m <module>`` on ``port`` (a free one by default; HOST/PORT in its environment) until
    ``ready_path`` answers 200; yield its base URL and process; stop it (SIGTERM, then SIGKILL) however the
    test ends. (``python -m frontend`` execs Streamlit: the process is the server's.)"""
    port = port or free_port()
    full_env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), **env}
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=full_env, stdout=log, stderr=log)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(f"{base}{ready_path}", ready_timeout, process)
            yield base, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def server_process(
    module: str,
    ready_path: str,
    env: Mapping[str, str],
    log_path: Path,
    ready_timeout: float = 90.0,
    port: int | None = None,
) -> Iterator[str]:
    """``server_popen``, yielding only the base URL."""
    with server_popen(module, ready_path, env, log_path, ready_timeout, port) as (base, _process):
        yield base


def backend_server(
    env: Mapping[str, str], log_path: Path, ready_timeout: float = 90.0
) -> contextlib.AbstractContextManager[str]:
    """The real backend (``python -m backend``, uvicorn) on a free port, ready once ``/ready`` says 200."""
    return server_process("backend", "/ready", env, log_path, ready_timeout)


def frontend_server(
    backend_url: str, log_path: Path, port: int | None = None
) -> contextlib.AbstractContextManager[str]:
    """The real frontend (``python -m frontend``, Streamlit) on ``port`` (or a free one), talking to ``backend_url``."""
    return server_process("frontend", "/_stcore/health", {"BACKEND_URL": backend_url}, log_path, 60.0, port)


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (skipped when either is missing; failed in CI)."""
    need(CHROMIUM.exists(), "Chromium is not installed: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "the playwright Python package is not installed (pip install playwright; no browser download)")
        raise
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()
