"""The plotter's image, built with podman from plotter.dockerfile and run as Cloud Run runs it: a free $PORT,
read-only, no capabilities; it must answer /health, draw a PNG of real predictions, run as a non-root user,
log JSON lines and stop at once on SIGTERM."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from frontend.plotter_client import check_png
from tests.containers.podman import HARDENED, build_image, container, podman_executable, record

pytestmark = [pytest.mark.slow, pytest.mark.container]

PLOTTER_TAG = "localhost/image-classifier-plotter:test"


def test_the_plotter_image_serves_charts_as_a_non_root_user(
    tmp_path_factory: pytest.TempPathFactory, predict_answers: dict[str, dict[str, Any]]
) -> None:
    podman = podman_executable()
    log = tmp_path_factory.mktemp("builds") / "plotter.log"
    # plotter.dockerfile's base is DEBIAN_IMAGE (debian:bookworm-slim): here the local Debian bookworm image
    image = build_image(podman, "plotter.dockerfile", PLOTTER_TAG, log, base_arg="DEBIAN_IMAGE")
    record(
        "plotter",
        {
            "image": PLOTTER_TAG,
            "dockerfile": "plotter.dockerfile",
            "size_mb": round(image.size_bytes / 1e6),
            "build_seconds": round(image.build_seconds, 1),
        },
    )
    assert image.user == "10001:10001"
    with container(podman, image.tag, options=HARDENED) as running:
        health = running.wait_until_answers("/health", timeout=60)
        assert health.json() == {"status": "ok"}
        running.assert_unprivileged()
        answer = httpx.post(
            f"{running.url}/plot",
            params={"width": 640, "height": 360},
            content=json.dumps(predict_answers["both"]).encode(),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "image/png"
        check_png(answer.content, 640, 360)
        bad = httpx.post(f"{running.url}/plot", content=b"{", timeout=30)
        assert bad.status_code == 400
        assert bad.json()["code"] == "bad_json"
        seconds, _code, _ = running.stop(timeout=10)
        out, err = running.logs()
    assert seconds < 5, f"SIGTERM did not stop the plotter ({seconds:.1f} s)"  # tini passes it on to R
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert {"INFO", "WARNING"} <= {r["severity"] for r in records}
    assert all("message" in r for r in records)
    assert not err.strip(), err
