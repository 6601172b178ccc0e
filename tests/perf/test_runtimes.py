"""ONNX Runtime as the batcher uses it: single-threaded calls, several at once, all giving the same answers."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from backend.classifier import Classifier, ImageLimits, ModelSpec, default_threads
from backend.classifier._export import artifact_dir
from backend.classifier._runtimes import OnnxRuntime, TorchRuntime
from tests.helpers import CAT, CAT_CLASSES, COFFEE, jpeg_bytes

pytestmark = pytest.mark.slow  # runtimes loaded and run side by side


@pytest.fixture
def images(onnx_classifier: Classifier) -> np.ndarray:
    limits = ImageLimits()
    return np.stack([onnx_classifier.prepare(jpeg_bytes(path), limits).pixels for path in (CAT, COFFEE)])


def test_calls_run_on_one_thread_each_and_as_many_at_once_as_threads(model_cache: Path) -> None:
    runtime = OnnxRuntime(artifact_dir(ModelSpec(), model_cache), threads=3)
    assert runtime.parallel_calls == 3
    options = runtime._session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    assert OnnxRuntime(artifact_dir(ModelSpec(), model_cache)).parallel_calls == default_threads()
    assert TorchRuntime.parallel_calls == 1  # eager PyTorch spreads one call over its threads instead


def test_concurrent_calls_give_the_same_probabilities_as_calls_alone(
    model_cache: Path, images: np.ndarray, onnx_classifier: Classifier
) -> None:
    runtime = OnnxRuntime(artifact_dir(ModelSpec(), model_cache), threads=2)
    expected = runtime(images)
    assert onnx_classifier.top_k(expected[0], 1)[0].label in CAT_CLASSES
    assert onnx_classifier.top_k(expected[1], 1)[0].label == "espresso"
    results: list[np.ndarray] = []
    lock = threading.Lock()
    start = threading.Barrier(3, timeout=60)

    def work() -> None:
        start.wait()  # all three threads call the one session at the same time
        for _ in range(10):
            out = runtime(images)
            with lock:
                results.append(out)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 30
    for out in results:
        np.testing.assert_allclose(out, expected, atol=1e-6)
