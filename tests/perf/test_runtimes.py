"""ONNX Runtime and OpenVINO as the batcher uses them: single-threaded calls, several at once, all giving the same
answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from backend.classifier import Classifier, ImageLimits, ModelSpec, default_threads
from backend.classifier._export import artifact_dir
from backend.classifier._runtimes import OnnxRuntime, OpenVinoRuntime, TorchRuntime
from tests.helpers import CAT, CAT_CLASSES, COFFEE, ROOT, jpeg_bytes

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


def test_openvino_runs_as_many_single_threaded_streams_as_threads_in_fp32(model_cache: Path) -> None:
    cores = os.cpu_count() or 1
    runtime = OpenVinoRuntime(artifact_dir(ModelSpec(), model_cache), threads=2)
    assert runtime.parallel_calls == 2
    compiled = runtime._compiled
    assert (compiled.get_property("NUM_STREAMS"), compiled.get_property("INFERENCE_NUM_THREADS")) == (2, 2)
    assert str(compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"
    assert compiled.get_property("ENABLE_CPU_PINNING") is False
    # bfloat16 is the CPU plugin's default where the CPU supports it: that would change the answers
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    assert OpenVinoRuntime(artifact_dir(ModelSpec(), model_cache)).parallel_calls == min(default_threads(), cores)
    assert OpenVinoRuntime(artifact_dir(ModelSpec(), model_cache), threads=1).parallel_calls == 1
    # at most one stream per core: more calls than that would only wait for one
    assert OpenVinoRuntime(artifact_dir(ModelSpec(), model_cache), threads=cores + 1).parallel_calls == cores


def test_openvino_writes_nothing_under_home_and_imports_neither_telemetry_nor_torch(
    model_cache: Path, tmp_path: Path
) -> None:
    """``import openvino`` would otherwise write a client id under ``$HOME/intel`` and send a usage event."""
    home = tmp_path / "home"
    home.mkdir()
    code = (
        "import json, sys; from pathlib import Path; from backend.classifier import ModelSpec, load_classifier; "
        f"c = load_classifier(ModelSpec(), runtime='openvino', cache_dir=Path({str(model_cache)!r}), threads=1); "
        "c.warm_up(); "
        "print(json.dumps({m: m in sys.modules and sys.modules[m] is not None "
        "for m in ('openvino', 'openvino_telemetry', 'torch', 'onnxruntime')}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"HOME": str(home)}  # CI=true quietens telemetry
    result = subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    imported = json.loads(result.stdout.splitlines()[-1])
    assert imported == {"openvino": True, "openvino_telemetry": False, "torch": False, "onnxruntime": False}
    assert not list(home.iterdir())


@pytest.mark.parametrize("kind", [OnnxRuntime, OpenVinoRuntime], ids=["onnx", "openvino"])
def test_concurrent_calls_give_the_same_probabilities_as_calls_alone(
    model_cache: Path, images: np.ndarray, onnx_classifier: Classifier, kind: type[OnnxRuntime | OpenVinoRuntime]
) -> None:
    runtime = kind(artifact_dir(ModelSpec(), model_cache), threads=2)
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
