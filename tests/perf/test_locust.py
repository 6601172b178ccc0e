"""The load test (locustfile.py) run headless, as a user would: against the real backend it must finish
without a single failed request, and its checks must catch a server that answers wrongly."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.helpers import CAT, ROOT, frontend_server, jpeg_bytes

LOCUSTFILE = ROOT / "locustfile.py"
BACKEND_REQUESTS = {"/predict multipart", "/predict raw", "/predict multipart x3", "/ready"}
FRONTEND_REQUESTS = {"frontend /", "frontend /_stcore/health"}
PROTOCOL_REQUESTS = {
    "V2BinaryUser": {
        "/model",
        "/v2/models/[name]",
        "/v2/models/[name]/infer binary",
        "/v2/models/[name]/infer binary x3",
        "/v2/health/ready",
    },
    "TorchServeUser": {"/models", "/predictions/[name] raw POST", "/predictions/[name] raw PUT", "/ping"},
}

pytestmark = pytest.mark.slow


def locust(
    tmp_path: Path, *args: str, users: int = 8, seconds: int = 15, env: dict[str, str] | None = None
) -> tuple[int, dict[str, dict[str, str]], str]:
    """Run locust headless; return its exit code, the CSV stats by request name, and its output."""
    prefix = tmp_path / "locust"
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{seconds}s",
        "--csv",
        str(prefix),
        "--exit-code-on-error",
        "1",
        "--only-summary",
        *args,
    ]
    done = subprocess.run(
        command,
        cwd=tmp_path,  # no locust.conf or pyproject.toml of ours is read
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=False,
    )
    output = done.stdout + done.stderr
    stats_path = prefix.with_name("locust_stats.csv")
    assert stats_path.exists(), output
    with stats_path.open(newline="") as f:
        stats = {row["Name"]: row for row in csv.DictReader(f)}
    return done.returncode, stats, output


def assert_all_ran_without_failures(stats: dict[str, dict[str, str]], names: set[str], output: str) -> None:
    ran = {name for name, row in stats.items() if name != "Aggregated" and int(row["Request Count"]) > 0}
    assert ran == names, output
    failures = {name: row["Failure Count"] for name, row in stats.items() if int(row["Failure Count"])}
    assert not failures, output


def test_backend_users_run_every_request_type_without_a_failure(live_backend: str, tmp_path: Path) -> None:
    code, stats, output = locust(tmp_path, "--host", live_backend, "BackendUser")
    assert code == 0, output
    assert_all_ran_without_failures(stats, BACKEND_REQUESTS, output)
    assert int(stats["Aggregated"]["Request Count"]) >= 20, output


def test_backend_users_send_a_folder_of_images(live_backend: str, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(jpeg_bytes(CAT, (800, 600)))
    Image.open(CAT).convert("RGB").save(folder / "cat.png")
    Image.open(CAT).convert("RGB").save(folder / "cat.webp")
    (folder / "notes.txt").write_text("not an image, skipped")
    code, stats, output = locust(
        tmp_path, "--host", live_backend, "--images-dir", str(folder), "BackendUser", users=3, seconds=6
    )
    assert code == 0, output
    assert "3 photos to send" in output
    assert {n for n, r in stats.items() if int(r["Request Count"])} >= {"/predict multipart", "/predict raw"}, output
    assert int(stats["Aggregated"]["Failure Count"]) == 0, output


@pytest.mark.parametrize("user_class", sorted(PROTOCOL_REQUESTS))
def test_protocol_users_run_every_request_type_without_a_failure(
    live_backend: str, tmp_path: Path, user_class: str
) -> None:
    code, stats, output = locust(tmp_path, "--host", live_backend, user_class, users=6, seconds=10)
    assert code == 0, output
    assert_all_ran_without_failures(stats, PROTOCOL_REQUESTS[user_class], output)
    assert int(stats["/model" if user_class == "V2BinaryUser" else "/models"]["Request Count"]) == 1, output
    assert int(stats["Aggregated"]["Request Count"]) >= 20, output


def _v2_header(body: bytes, header_length: str | None) -> dict[str, Any]:
    header: dict[str, Any] = json.loads(body[: int(header_length)] if header_length else body)
    return header


class WrongAnswers(BaseHTTPRequestHandler):
    """Answers every protocol with the right shape and sizes but the wrong class: a goldfish for everything."""

    def do_PUT(self) -> None:
        self.do_POST()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v2/models/stub/infer":
            request = _v2_header(body, self.headers.get("Inference-Header-Content-Length"))
            n, k = request["inputs"][0]["shape"][0], request["outputs"][0]["parameters"]["classification"]
            data = [f"{0.5 / (i + 1):f}:1:goldfish" for _ in range(n) for i in range(k)]
            output = {"name": "PROBABILITIES", "datatype": "BYTES", "shape": [n, k], "data": data}
            self._send(200, json.dumps({"model_name": "stub", "model_version": "1", "outputs": [output]}).encode())
            return
        if self.path == "/predictions/stub":
            answer = {"goldfish": 0.5, "great white shark": 0.2, "tench": 0.1, "tiger shark": 0.05, "eel": 0.01}
            self._send(200, json.dumps(answer).encode())
            return
        if self.headers.get("Content-Type", "").startswith("multipart/"):
            sizes = [(1, 1)] * body.count(b'name="file"')
        else:
            sizes = [Image.open(io.BytesIO(body)).size]
        k = int(self.path.partition("top_k=")[2] or 5)
        result = {
            "model": "stub",
            "top_k": k,
            "elapsed_ms": 1.0,
            "results": [
                {
                    "filename": None,
                    "format": "JPEG",
                    "width": w,
                    "height": h,
                    "predictions": [
                        {"index": 1 + i, "label": "goldfish", "probability": 0.5 / (i + 1)} for i in range(k)
                    ],
                }
                for w, h in sizes
            ],
        }
        self._send(200, json.dumps(result).encode())

    def do_GET(self) -> None:
        answers: dict[str, object] = {
            "/model": {"name": "stub"},
            "/v2/models/stub": {"name": "stub", "inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [-1]}]},
            "/v2/health/ready": {"ready": True},
            "/models": {"models": [{"modelName": "stub", "modelUrl": "stub"}]},
            "/ping": {"status": "Healthy"},
        }
        self._send(200, json.dumps(answers.get(self.path, {"status": "ready"})).encode())

    def _send(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def wrong_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), WrongAnswers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_a_server_giving_wrong_classes_fails_the_load_test(wrong_server: str, tmp_path: Path) -> None:
    # /ready is 1 task in 11: 4 users for 8 s run ~100 tasks, so P(no /ready at all) is about 1e-4 (with 2 users
    # for 5 s it was 4%, and CI once ran none).
    code, stats, output = locust(tmp_path, "--host", wrong_server, "BackendUser", users=4, seconds=8)
    assert code == 1, output
    assert int(stats["/predict raw"]["Failure Count"]) == int(stats["/predict raw"]["Request Count"]) > 0, output
    assert int(stats["/ready"]["Failure Count"]) == 0, output
    with (tmp_path / "locust_failures.csv").open(newline="") as f:
        errors = " ".join(row["Error"] for row in csv.DictReader(f))
    assert "top-1 is 'goldfish'" in errors, errors


@pytest.mark.parametrize(
    ("user_class", "answers", "health"),
    [
        ("V2BinaryUser", "/v2/models/[name]/infer binary", "/v2/health/ready"),
        ("TorchServeUser", "/predictions/[name] raw POST", "/ping"),
    ],
)
def test_a_server_giving_wrong_classes_fails_the_protocol_load_tests(
    wrong_server: str, tmp_path: Path, user_class: str, answers: str, health: str
) -> None:
    code, stats, output = locust(tmp_path, "--host", wrong_server, user_class, users=4, seconds=8)
    assert code == 1, output
    assert int(stats[answers]["Failure Count"]) == int(stats[answers]["Request Count"]) > 0, output
    assert int(stats[health]["Failure Count"]) == 0, output  # 1 task in 5: ~60 in 8 s with 4 users
    with (tmp_path / "locust_failures.csv").open(newline="") as f:
        errors = " ".join(row["Error"] for row in csv.DictReader(f))
    assert "top-1 is 'goldfish'" in errors, errors


@pytest.fixture
def streamlit_page(live_backend: str, tmp_path: Path) -> Iterator[str]:
    """Our real frontend (``python -m frontend``), for the frontend user class."""
    with frontend_server(live_backend, tmp_path / "frontend.log") as url:
        yield url


def test_frontend_users_alone_load_the_streamlit_page(streamlit_page: str, tmp_path: Path) -> None:
    code, stats, output = locust(tmp_path, "FrontendUser", users=3, seconds=6, env={"FRONTEND_HOST": streamlit_page})
    assert code == 0, output
    assert_all_ran_without_failures(stats, FRONTEND_REQUESTS, output)
