"""Slow and stalled clients: they get 504 after REQUEST_TIMEOUT_S and never block anyone else."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.helpers import CAT_CLASSES
from tests.hostile.corpus import cat_jpeg
from tests.reliability.harness import running_server

REQUEST_TIMEOUT_S = 6.0
STALLED = 50


def _stalled_upload(host: str, port: int) -> socket.socket:
    """Announces a 1 MB image, sends 1 kB of it, then goes quiet (a slow or stuck uploader)."""
    sock = socket.create_connection((host, port), timeout=30)
    sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\nContent-Length: 1000000\r\n\r\n"
        + b"\xff" * 1000
    )
    return sock


def _read_answer(sock: socket.socket) -> bytes:
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return answer


@pytest.mark.slow
def test_stalled_uploads_time_out_without_blocking_other_clients(model_cache: Path, tmp_path: Path) -> None:
    env = {"MODEL_CACHE_DIR": str(model_cache), "REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S), "ACCESS_LOG": "false"}
    with running_server(env, tmp_path / "backend.log") as server:
        parts = urlsplit(server.url)
        assert parts.hostname is not None
        assert parts.port is not None
        began = time.monotonic()
        stalled = [_stalled_upload(parts.hostname, parts.port) for _ in range(STALLED)]
        try:
            # While 50 uploads hang, other clients are served as usual.
            served_at = []
            for _ in range(3):
                response = httpx.post(f"{server.url}/predict", content=cat_jpeg(), timeout=30)
                assert response.status_code == 200, response.text
                assert response.json()["results"][0]["predictions"][0]["label"] in CAT_CLASSES
                served_at.append(time.monotonic() - began)
            answers = [_read_answer(sock) for sock in stalled]
            answered_at = time.monotonic() - began
        finally:
            for sock in stalled:
                sock.close()
        statuses = [answer.split(b" ", 2)[1] for answer in answers if answer]
        print(
            f"\n{STALLED} stalled uploads: statuses {sorted(set(statuses))} ({len(statuses)} answered), "
            f"all answered {answered_at:.1f} s after they started; "
            f"meanwhile 3 normal requests done at {', '.join(f'{t:.2f}' for t in served_at)} s"
        )
        assert len(statuses) == STALLED
        assert set(statuses) == {b"504"}
        assert all(b'"code":"timeout"' in answer for answer in answers)
        assert served_at[-1] < REQUEST_TIMEOUT_S  # served before the stalled ones even timed out
        assert answered_at < REQUEST_TIMEOUT_S + 15
        after = httpx.post(f"{server.url}/predict", content=cat_jpeg(), timeout=30)
        assert after.status_code == 200
