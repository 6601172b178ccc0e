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
    # brightness, contrast, colourfulness, sharpness of the crop (common.image_statistics), when the decoders
    # were asked for them (the prediction log)
    statistics: tuple[float, float, float, float] | None = None


class Classifier:
    def __init__(self, info: ModelInfo, runtime: Runtime, version: str = "") -> None:
        self.info = info
        self.runtime = runtime
        # The bundle's content hash (``_export.py``): what /model, /metrics, each answer and the batch job's
        # shards report as the model's version. Empty for a classifier built by hand (tests).
        self.version = version
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
    model_dir: Path | None = None,
) -> Classifier:
    """Build the classifier for ``spec`` on ``runtime``. ONNX exports are cached in ``cache_dir``.

    ``model_dir``: serve the bundle in that folder instead (``python -m backend.prefetch --export-to``; on
    Cloud Run a Cloud Storage mount), checked file by file against its ``bundle.json`` first; ``spec`` and
    ``cache_dir`` are then not used, and neither is torch. A bundle that cannot be served raises
    ``BundleError`` (a ``ModelConfigError``) naming the file and what to do.

    ``precision="int8"`` (OpenVINO only) runs the NNCF-quantized export, quantizing it first if the cache
    lacks it and NNCF is installed (``_quantize.py``)."""
    from ._errors import ModelConfigError
    from ._export import INFO_FILE, BundleError, ensure_onnx, read_bundle, recorded_version

    started = time.perf_counter()
    if precision != "fp32" and runtime != "openvino":
        raise ModelConfigError(f"PRECISION={precision} runs on OpenVINO only: set RUNTIME=openvino (not {runtime}).")
    if model_dir is not None and runtime not in ("onnx", "openvino"):
        raise ModelConfigError(
            f"MODEL_DIR serves an exported bundle with RUNTIME=openvino or onnx; RUNTIME={runtime} needs the "
            "PyTorch model (MODEL_NAME, MODEL_CHECKPOINT): unset MODEL_DIR or change RUNTIME."
        )
    loaded: dict[str, bool] = {}
    try:
        if model_dir is not None:
            # Copied from elsewhere, maybe half-way: every file is checked (~20 ms for a 19 MB model here).
            artifact = model_dir
            info, version = read_bundle(model_dir)
        else:
            # Our own export, written whole and renamed into place: its recorded version is trusted.
            artifact = ensure_onnx(spec, cache_dir)
            info = ModelInfo.from_json((artifact / INFO_FILE).read_text(encoding="utf-8"))
            version = recorded_version(artifact)
        fast = _runtime(
            runtime, artifact, info, spec, threads=threads, precision=precision, bundle=model_dir is not None
        )
        if isinstance(fast, OpenVinoRuntime):
            loaded = {"loaded_from_cache": fast.loaded_from_cache}
        classifier = Classifier(info, fast, version)
        _check_outputs(classifier, artifact, bundle=model_dir is not None)
    except BundleError as exc:
        logger.error("the model bundle cannot be served", extra={"model_dir": str(exc.path), "reason": exc.message})
        raise
    logger.info(
        "model loaded",
        extra={
            "model": info.name,
            "version": version,
            "runtime": runtime,
            "precision": precision,
            "seconds": round(time.perf_counter() - started, 3),
            **loaded,
        },
    )
    return classifier


def _runtime(
    runtime: RuntimeName,
    artifact: Path,
    info: ModelInfo,
    spec: ModelSpec,
    *,
    threads: int,
    precision: Precision,
    bundle: bool,
) -> Runtime:
    from ._export import ONNX_FILE, BundleError

    if runtime == "torch":
        from ._export import deployable
        from ._sources import build_module

        module, built = build_module(spec)
        return TorchRuntime(deployable(module, built), threads)
    if runtime not in ("onnx", "openvino"):
        raise ValueError(f"unknown runtime {runtime!r}")
    from ._allocator import release_large_buffers_to_the_os

    release_large_buffers_to_the_os()
    if runtime == "openvino" and precision == "int8":
        from ._quantize import ensure_int8

        ensure_int8(artifact, info.preprocessing)
    try:
        if runtime == "onnx":
            return OnnxRuntime(artifact, threads)
        return OpenVinoRuntime(artifact, threads, precision)
    except Exception as exc:  # each runtime raises its own types for a file it cannot read
        if not bundle:
            raise
        # The runtime's own words, without the path (the message is shown on /ready; the log has the path).
        text = str(exc).replace(str(artifact), "MODEL_DIR").strip()
        reason = text.splitlines()[0][:200] if text else type(exc).__name__
        raise BundleError(
            f"{ONNX_FILE} in MODEL_DIR cannot be loaded by {runtime} ({type(exc).__name__}: {reason}). Export the "
            "bundle again (`python -m backend.prefetch --export-to DIR`) with this version of the code.",
            artifact,
        ) from None


def _check_outputs(classifier: Classifier, artifact: Path, *, bundle: bool) -> None:
    """One blank image through the model (the first pass of the warm-up): one probability per label, or a
    ``BundleError`` (a ``ModelConfigError`` for the cache's own exports, which ``ensure_onnx`` wrote)."""
    from ._errors import ModelConfigError
    from ._export import INFO_FILE, ONNX_FILE, BundleError

    try:
        shape = classifier.probabilities(np.zeros((1, *classifier.input_shape), dtype=np.uint8)).shape
    except Exception as exc:  # each runtime raises its own types
        if not bundle:
            raise
        raise BundleError(
            f"{ONNX_FILE} in MODEL_DIR does not run on {classifier.input_shape} uint8 images as {INFO_FILE}'s "
            f"preprocessing makes them ({type(exc).__name__}). Export the bundle again with "
            "`python -m backend.prefetch --export-to DIR`.",
            artifact,
        ) from None
    classes = classifier.info.num_classes
    if shape != (1, classes):
        message = (
            f"{ONNX_FILE} answers {shape[-1] if shape else '?'} probabilities per image, but {INFO_FILE} names "
            f"{classes} labels: they are of different models. Export the bundle again from one checkpoint and its "
            "labels file (`python -m backend.prefetch --export-to DIR`)."
        )
        if bundle:
            raise BundleError(message.replace(ONNX_FILE, f"{ONNX_FILE} in MODEL_DIR", 1), artifact)
        raise ModelConfigError(message)
