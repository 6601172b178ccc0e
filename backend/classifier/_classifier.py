"""The classifier: bytes in, ranked classes out. Framework-free; the web layer wraps it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._images import DecodedImage, ImageLimits, decode_image
from ._model import ModelInfo, ModelSpec
from ._runtimes import OnnxRuntime, OpenVinoRuntime, Precision, Runtime, RuntimeName, TorchRuntime

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    probability: float


@dataclass(frozen=True)
class PreparedImage:
    """An image ready for the model: the crop as ``uint8`` ``(H, W, 3)`` and what was decoded."""

    pixels: np.ndarray
    format: str
    width: int
    height: int


class Classifier:
    def __init__(self, info: ModelInfo, runtime: Runtime) -> None:
        self.info = info
        self.runtime = runtime
        self._labels = info.labels

    @property
    def input_shape(self) -> tuple[int, int, int]:
        size = self.info.preprocessing.crop_size
        return (size, size, 3)

    def prepare(self, data: bytes, limits: ImageLimits) -> PreparedImage:
        """Decode and preprocess one image. Thread-safe; Pillow releases the GIL while it works."""
        decoded: DecodedImage = decode_image(data, limits, min_short_side=self.info.preprocessing.resize_size)
        pixels = self.info.preprocessing(decoded.image)
        return PreparedImage(pixels, decoded.format, decoded.width, decoded.height)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 in, ``(N, classes)`` probabilities out."""
        return self.runtime(batch)

    def top_k(self, probabilities: np.ndarray, k: int) -> list[Prediction]:
        """The ``k`` most likely classes of one image, most likely first (ties: lower index first)."""
        k = max(1, min(k, probabilities.shape[-1]))
        # A stable sort keeps equal probabilities in index order, also where the k-th place cuts a run of them
        # (argpartition chose among those arbitrarily). Negligible next to a forward pass
        # (BENCHMARKS.md, "Measurements behind the code").
        order = np.argsort(-probabilities, kind="stable")[:k]
        return [Prediction(int(i), self._labels[i], float(probabilities[i])) for i in order]

    def classify(
        self, images: list[bytes], top_k: int = 5, limits: ImageLimits | None = None
    ) -> list[list[Prediction]]:
        """Convenience for scripts and tests: classify ``images`` in one batch, in the calling thread."""
        limits = limits or ImageLimits()
        batch = np.stack([self.prepare(data, limits).pixels for data in images])
        return [self.top_k(row, top_k) for row in self.probabilities(batch)]

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> float:
        """Run the model on blank batches so the first request pays no one-time costs; returns seconds."""
        started = time.perf_counter()
        for n in batch_sizes:
            self.probabilities(np.zeros((n, *self.input_shape), dtype=np.uint8))
        return time.perf_counter() - started


def load_classifier(
    spec: ModelSpec,
    *,
    runtime: RuntimeName = "openvino",
    cache_dir: Path,
    threads: int = 0,
    precision: Precision = "fp32",
) -> Classifier:
    """Build the classifier for ``spec`` on ``runtime``. ONNX exports are cached in ``cache_dir``.

    ``precision="int8"`` (OpenVINO only) runs the NNCF-quantized export, quantizing it first if the cache
    lacks it and NNCF is installed (``_quantize.py``)."""
    started = time.perf_counter()
    if precision != "fp32" and runtime != "openvino":
        from ._errors import ModelConfigError

        raise ModelConfigError(f"PRECISION={precision} runs on OpenVINO only: set RUNTIME=openvino (not {runtime}).")
    loaded: dict[str, bool] = {}
    if runtime in ("onnx", "openvino"):  # the same ONNX export, on either runtime
        from ._allocator import release_large_buffers_to_the_os
        from ._export import INFO_FILE, ensure_onnx

        release_large_buffers_to_the_os()
        artifact = ensure_onnx(spec, cache_dir)
        info = ModelInfo.from_json((artifact / INFO_FILE).read_text(encoding="utf-8"))
        if runtime == "onnx":
            fast: Runtime = OnnxRuntime(artifact, threads)
        else:
            if precision == "int8":
                from ._quantize import ensure_int8

                ensure_int8(artifact, info.preprocessing)
            fast = openvino = OpenVinoRuntime(artifact, threads, precision)
            loaded = {"loaded_from_cache": openvino.loaded_from_cache}
        classifier = Classifier(info, fast)
    elif runtime == "torch":
        from ._export import deployable
        from ._sources import build_module

        module, info = build_module(spec)
        classifier = Classifier(info, TorchRuntime(deployable(module, info), threads))
    else:
        raise ValueError(f"unknown runtime {runtime!r}")
    logger.info(
        "model loaded",
        extra={
            "model": info.name,
            "runtime": runtime,
            "precision": precision,
            "seconds": round(time.perf_counter() - started, 3),
            **loaded,
        },
    )
    return classifier
