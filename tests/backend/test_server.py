"""The real server: ``python -m backend`` under uvicorn on a free port, called over HTTP like curl does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import CAT, CAT_CLASSES, COFFEE, ROOT, backend_server, jpeg_bytes

pytestmark = pytest.mark.slow  # the real server and the prefetch command, in processes of their own


def test_curl_style_calls_over_http(live_backend: str) -> None:
    with httpx.Client(base_url=live_backend, timeout=30) as http:
        assert http.get("/health").json() == {"status": "ok"}
        multipart = http.post("/predict", files={"file": ("chelsea.png", CAT.read_bytes(), "image/png")})
        assert multipart.status_code == 200
        assert multipart.json()["results"][0]["predictions"][0]["label"] in CAT_CLASSES
        raw = http.post("/predict?top_k=2", content=jpeg_bytes(COFFEE), headers={"Content-Type": "image/jpeg"})
        assert raw.json()["results"][0]["predictions"][0]["label"] == "espresso"
        assert len(raw.json()["results"][0]["predictions"]) == 2
        bad = http.post("/predict", content=b"not an image at all", headers={"Content-Type": "image/jpeg"})
        assert bad.status_code == 415
        assert http.get("/ready").status_code == 200  # still serving after a bad request


@pytest.mark.slow
def test_logs_are_json_lines_cloud_logging_understands(model_cache: Path, tmp_path: Path) -> None:
    log = tmp_path / "backend.log"
    with backend_server({"MODEL_CACHE_DIR": str(model_cache), "ACCESS_LOG": "true"}, log) as url:
        httpx.post(f"{url}/predict", content=jpeg_bytes(CAT), headers={"Content-Type": "image/jpeg"}, timeout=30)
        httpx.post(f"{url}/predict", content=b"junk", headers={"Content-Type": "image/jpeg"}, timeout=30)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is a JSON object
    assert all({"severity", "message", "time"} <= entry.keys() for entry in entries)
    access = [e for e in entries if "httpRequest" in e and e["httpRequest"]["requestUrl"].startswith("/predict")]
    assert [e["httpRequest"]["status"] for e in access] == [200, 415]
    assert access[0]["httpRequest"]["latency"].endswith("s")
    assert any(e["message"] == "model ready" for e in entries)


def test_prefetch_command_exports_the_configured_model(tmp_path: Path) -> None:
    env = {"MODEL_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-m", "backend.prefetch"], cwd=ROOT, env=env, check=True, capture_output=True)
    (exported,) = (tmp_path / "cache").iterdir()
    assert (exported / "model.onnx").stat().st_size > 10_000_000
    assert json.loads((exported / "model.json").read_text())["name"] == "efficientnet_lite0"
