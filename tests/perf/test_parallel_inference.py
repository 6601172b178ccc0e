"""The service runs as many forward passes at once as its runtime asks for (``Runtime.parallel_calls``):
that is where the default configuration's throughput comes from (see backend/classifier/_runtimes.py)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from backend.classifier import Classifier, RuntimeName
from backend.config import Settings
from tests.helpers import CAT, CAT_CLASSES, jpeg_bytes

pytestmark = pytest.mark.slow  # forward passes held side by side in a real app


class SideBySide:
    """The real runtime, except that each call waits until ``parallel_calls`` calls are inside at once."""

    def __init__(self, runtime: object, parallel_calls: int) -> None:
        self.name: RuntimeName = "onnx"
        self.parallel_calls = parallel_calls
        self._runtime = runtime
        self._barrier = threading.Barrier(parallel_calls, timeout=15)
        self.warmed = False

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if self.warmed:  # warm-up runs alone, before the server is ready
            self._barrier.wait()
        result: np.ndarray = self._runtime(images)  # type: ignore[operator]
        return result


def test_concurrent_requests_run_their_forward_passes_at_the_same_time(
    model_cache: Path, onnx_classifier: Classifier
) -> None:
    runtime = SideBySide(onnx_classifier.runtime, parallel_calls=2)
    classifier = Classifier(onnx_classifier.info, runtime)
    settings = Settings(_env_file=None, model_cache_dir=model_cache, access_log=False, max_batch_size=1)
    jpeg = jpeg_bytes(CAT)
    with TestClient(create_app(settings, lambda _: classifier)) as client:
        deadline = time.monotonic() + 60
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        runtime.warmed = True
        with ThreadPoolExecutor(2) as pool:
            answers = list(
                pool.map(
                    lambda _: client.post("/predict", content=jpeg, headers={"Content-Type": "image/jpeg"}), range(2)
                )
            )
    for answer in answers:  # one pass at a time would break the barrier: both would fail with 500
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][0]["predictions"][0]["label"] in CAT_CLASSES
