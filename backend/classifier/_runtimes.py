"""Inference runtimes: OpenVINO (the default), ONNX Runtime (the same ONNX file) and eager PyTorch (the reference).

All take a ``uint8`` batch ``(N, H, W, 3)`` and return float32 probabilities ``(N, classes)``.
``parallel_calls`` says how many calls the batcher should run at once, each on its own thread.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import numpy as np

from ._export import ONNX_FILE

INT8_FILE: Final = "model-int8.xml"  # beside the export, made by ``_quantize.py`` (with model-int8.bin)

if TYPE_CHECKING:
    import torch

RuntimeName = Literal["onnx", "openvino", "torch"]
Precision = Literal["fp32", "int8"]  # int8: OpenVINO only, the NNCF-quantized export (``_quantize.py``)

OPENVINO_CACHE: Final = "openvino-cache"  # beside the export: OpenVINO's compiled model (CACHE_DIR)


class Runtime(Protocol):
    name: RuntimeName
    parallel_calls: int

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class OnnxRuntime:
    """ONNX Runtime on the CPU: single-threaded forward passes, as many side by side as ``threads``.

    A small CNN such as EfficientNet-Lite0 does not split well over cores: two threads on one pass
    finish it sooner but spend more CPU on it (they spin while they wait for each other), and lose even
    that as soon as anything else (decoding, HTTP, another process) holds one of the cores. Single-threaded
    passes side by side do more images/s than multi-threaded passes one at a time, and behind HTTP the
    gap grows. Batching does not pay here either: an image in a batch of 8 costs more than alone.
    The figures: BENCHMARKS.md, "Measurements behind the code".

    So each call runs on the calling thread (no thread pool, no spinning), and ``parallel_calls``
    (``threads``, default one per CPU) tells the batcher how many calls to run at once. An ONNX Runtime
    session is thread-safe: one session, one copy of the weights, serves every call.
    """

    name: RuntimeName = "onnx"

    def __init__(self, artifact: Path, threads: int = 0) -> None:
        # ONNX Runtime would otherwise write a device id under $HOME and upload usage events.
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        import onnxruntime as ort

        self.parallel_calls = threads or default_threads()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only; ORT's warnings go to stderr, not our JSON logs
        self._session = ort.InferenceSession(str(artifact / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def __call__(self, images: np.ndarray) -> np.ndarray:
        (probabilities,) = self._session.run(None, {self._input: images})
        return np.asarray(probabilities, dtype=np.float32)


def _import_openvino() -> Any:
    """``openvino``, without its usage telemetry.

    ``import openvino`` imports its model converter (``openvino.tools.ovc``), which, when the
    ``openvino-telemetry`` package is installed (a dependency of ``openvino``), writes a client id under
    ``$HOME/intel`` and sends an "import" event to Google Analytics unless a consent file there says no.
    Marking that package as absent makes the converter fall back to its own no-op stub, as it does where
    the package is not installed; the runtime itself (``Core``, the ONNX reader, the CPU plugin) never
    used it.
    """
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
        # The converter itself is never used here (we read ONNX files with the runtime's own reader), and
        # ``openvino/__init__.py`` imports it only if it can: 50 ms of every cold start (measured, 0.16 -> 0.11 s).
        sys.modules.setdefault("openvino.tools.ovc", None)  # type: ignore[arg-type]
    import openvino

    return openvino


class OpenVinoRuntime:
    """OpenVINO's CPU plugin running the same ONNX export as ``OnnxRuntime``, with the same threading.

    The batcher runs ``parallel_calls`` single-threaded passes side by side (see ``OnnxRuntime``); here that
    is one compiled model with as many streams as ``threads`` (at most one per core), one thread each (``NUM_STREAMS`` =
    ``INFERENCE_NUM_THREADS`` = ``threads``, ``PERFORMANCE_HINT=LATENCY``), and one infer request per calling
    thread (a request is not thread-safe; the compiled model and its weights are shared). Threads are not
    pinned to cores: decoders and HTTP share them. Precision stays FP32: on CPUs with bfloat16 support the
    plugin would otherwise run in bfloat16 and give other answers. Nothing is written under ``$HOME``
    (``_import_openvino``).

    The compiled model is cached beside the export (``openvino-cache/``, OpenVINO's ``CACHE_DIR``): loading it
    from there takes 0.035 s instead of 0.15 s to compile (measured here), most of what OpenVINO's cold start
    cost over ONNX Runtime's. OpenVINO keys a blob by the model file's path and time, this configuration
    (streams, threads) and the CPU's name, and compiles afresh on any mismatch; the image build fills the cache
    (``python -m backend.prefetch``), and a read-only folder without a matching blob is only not written to.

    OpenVINO's own throughput machinery was measured against this and not taken (BENCHMARKS.md, "Measurements
    behind the code"): on 2 CPUs ``PERFORMANCE_HINT=THROUGHPUT`` resolves to this very configuration (2 streams,
    2 threads in all); feeding its ``AsyncInferQueue`` one image per request, in place of our batcher's
    threads, spent the same CPU per image (7.6-8.7 ms against 7.9-8.4 ms) with no throughput gained beyond the
    noise of a shared machine; its automatic batching (``BATCH:CPU``) crashed in ``start_async``.

    ``precision="int8"`` compiles the NNCF-quantized model beside the export instead (``_quantize.py``).
    """

    name: RuntimeName = "openvino"

    def __init__(self, artifact: Path, threads: int = 0, precision: Precision = "fp32") -> None:
        ov = _import_openvino()
        wanted = threads or default_threads()
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": wanted,
            "INFERENCE_NUM_THREADS": wanted,
            "INFERENCE_PRECISION_HINT": "f32",
            "ENABLE_CPU_PINNING": False,
        }
        cache = artifact / OPENVINO_CACHE
        if cache.is_dir() or os.access(artifact, os.W_OK):  # OpenVINO fails if it cannot create the folder
            config["CACHE_DIR"] = str(cache)
        # A path, not a read model: the cache is then looked up by the file's path and time, without
        # reading or hashing the model first.
        model = artifact / (ONNX_FILE if precision == "fp32" else INT8_FILE)
        self._compiled = ov.Core().compile_model(str(model), "CPU", config)
        self.loaded_from_cache = bool(self._compiled.get_property("LOADED_FROM_CACHE"))
        # The plugin runs at most one stream per core (3 asked for on 2 cores give 2): a further call would
        # only wait for a stream, so the batcher is told how many there are.
        self.parallel_calls = int(self._compiled.get_property("NUM_STREAMS"))
        self._local = threading.local()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        # share_inputs: the batch is read in place; the outputs are copied out of the request's buffer,
        # which its next call overwrites.
        outputs = request.infer({0: np.ascontiguousarray(images)}, share_inputs=True)
        return np.asarray(outputs[0], dtype=np.float32)


class TorchRuntime:
    name: RuntimeName = "torch"
    parallel_calls = 1  # eager PyTorch spreads each call over ``threads`` intra-op threads

    def __init__(self, module: torch.nn.Module, threads: int = 0) -> None:
        import torch

        torch.set_num_threads(threads or default_threads())
        self._torch = torch
        self._module = module.eval()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if not images.flags.writeable:  # torch.from_numpy warns about read-only arrays (it shares memory)
            images = images.copy()
        with self._torch.inference_mode():
            out = self._module(self._torch.from_numpy(np.ascontiguousarray(images)))
        probabilities: np.ndarray = out.numpy().astype(np.float32, copy=False)
        return probabilities
