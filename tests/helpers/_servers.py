"""Real server processes for tests: ``python -m backend`` / ``python -m frontend`` on a free (or given) port."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx

from bench.server import free_port
from tests.helpers._environment import ROOT


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
    with command_popen([sys.executable, "-m", module], ready_path, env, log_path, ready_timeout, port) as started:
        yield started


@contextlib.contextmanager
def command_popen(
    command: Sequence[str],
    ready_path: str,
    env: Mapping[str, str],
    log_path: Path,
    ready_timeout: float = 90.0,
    port: int | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``server_popen`` for any server command that listens on HOST/PORT (``Rscript plotter/main.R``)."""
    port = port or free_port()
    full_env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), **env}
    with log_path.open("wb") as log:
        process = subprocess.Popen(list(command), cwd=ROOT, env=full_env, stdout=log, stderr=log)
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
def plotter_server(log_path: Path, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """The R plotting service (``Rscript plotter/main.R``, plumber) on a free port, ready once ``/health`` says 200.
    Callers check first that Rscript and the R packages are there (``tests.plotter.conftest``)."""
    with command_popen(["Rscript", "plotter/main.R"], "/health", env or {}, log_path, 60.0) as (base, _process):
        yield base
