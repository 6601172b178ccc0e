"""``python -m frontend``: the server the container runs, its flags, its health check and its shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from frontend.__main__ import streamlit_command
from frontend.config import FrontendSettings
from tests.helpers import ROOT, free_port, wait_for
from tests.helpers.fakes import FakeServer


def test_streamlit_flags() -> None:
    command = streamlit_command(FrontendSettings(host="0.0.0.0", port=8080))

    assert command[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert command[4] == str(ROOT / "frontend" / "app.py")
    flags = set(command[5:])
    assert {
        "--server.address=0.0.0.0",
        "--server.port=8080",
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
        "--server.fileWatcherType=none",
        "--server.maxUploadSize=20",
        "--client.showErrorDetails=none",
    } <= flags
    assert not any("xsrf" in f.lower() or "cors" in f.lower() for f in flags)  # Streamlit's defaults stay


@pytest.mark.slow
def test_serves_the_page_and_stops_on_sigterm(backend: FakeServer, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "BACKEND_URL": backend.url}
    log_path = tmp_path / "frontend.log"
    with log_path.open("wb") as log:
        # Started from another directory: the page must still import the frontend package.
        process = subprocess.Popen(
            [sys.executable, "-m", "frontend"],
            cwd=tmp_path,
            env={**env, "PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=log,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(f"{base}/_stcore/health", 60, process)
            page = httpx.get(f"{base}/", timeout=10)
            assert page.status_code == 200
            assert "<title>Streamlit</title>" in page.text  # the page shell; the app fills it over a websocket
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    first_line = json.loads(log_path.read_text().splitlines()[0])
    assert first_line["severity"] == "INFO"
    assert first_line["message"] == "starting the frontend"
    assert first_line["backend_url"] == backend.url
    assert first_line["url"] == f"http://127.0.0.1:{port}"


def test_bad_configuration_stops_before_starting(tmp_path: Path) -> None:
    env = {**os.environ, "PORT": "eighty"}

    done = subprocess.run(
        [sys.executable, "-m", "frontend"], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 2
    (line,) = [json.loads(raw) for raw in done.stdout.splitlines()]
    assert line["severity"] == "ERROR"
    assert line["message"] == "invalid configuration: PORT='eighty' is not a whole number."
    assert "Traceback" not in done.stderr
