"""Inference runtimes: ONNX Runtime (the fast default) and eager PyTorch (the reference).

Both take a ``uint8`` batch ``(N, H, W, 3)`` and return float32 probabilities ``(N, classes)``.
``parallel_calls`` says how many calls the batcher should run at once, each on its own thread.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from ._export import ONNX_FILE

if TYPE_CHECKING:
    import torch

RuntimeName = Literal["onnx", "torch"]


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
