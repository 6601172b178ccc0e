"""Inference runtimes: ONNX Runtime (the fast default) and eager PyTorch (the reference).

Both take a ``uint8`` batch ``(N, H, W, 3)`` and return float32 probabilities ``(N, classes)``.
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

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class OnnxRuntime:
    name: RuntimeName = "onnx"

    def __init__(self, artifact: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only; ORT's warnings go to stderr, not our JSON logs
        self._session = ort.InferenceSession(
            str(artifact / ONNX_FILE), options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name

    def __call__(self, images: np.ndarray) -> np.ndarray:
        (probabilities,) = self._session.run(None, {self._input: images})
        return np.asarray(probabilities, dtype=np.float32)


class TorchRuntime:
    name: RuntimeName = "torch"

    def __init__(self, module: torch.nn.Module, threads: int = 0) -> None:
        import torch

        torch.set_num_threads(threads or default_threads())
        self._torch = torch
        self._module = module.eval()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            out = self._module(self._torch.from_numpy(np.ascontiguousarray(images)))
        return out.numpy().astype(np.float32, copy=False)
