"""Exporting a model once to ONNX, into a cache directory keyed by what was exported.

The exported graph takes what preprocessing produces, ``uint8`` images ``(N, H, W, 3)``, and returns
class probabilities ``(N, classes)``: layout change, scaling, normalisation and softmax are inside it.
Next to ``model.onnx`` lies ``model.json`` (labels, preprocessing, provenance), so a service can run the
model with ONNX Runtime alone, without importing torch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ._model import ModelInfo, ModelSpec

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# Bump when the exported graph changes, so stale caches are not reused.
EXPORT_VERSION: Final = 1
OPSET: Final = 17
ONNX_FILE: Final = "model.onnx"
INFO_FILE: Final = "model.json"


def deployable(module: torch.nn.Module, info: ModelInfo) -> torch.nn.Module:
    """``module`` wrapped to take ``uint8`` NHWC images and return probabilities."""
    import torch

    class Deployable(torch.nn.Module):
        scale: torch.Tensor
        shift: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.model = module
            mean = torch.tensor(info.preprocessing.mean, dtype=torch.float32).view(1, 3, 1, 1)
            std = torch.tensor(info.preprocessing.std, dtype=torch.float32).view(1, 3, 1, 1)
            self.register_buffer("scale", 1.0 / (255.0 * std))
            self.register_buffer("shift", mean / std)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = images.permute(0, 3, 1, 2).to(torch.float32) * self.scale - self.shift
            return torch.softmax(self.model(x), dim=1)

    return Deployable().eval()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"


def _file_digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def artifact_dir(spec: ModelSpec, cache_dir: Path) -> Path:
    """Where the export of ``spec`` lives. Checkpoints are keyed by content, so a new file is re-exported."""
    if spec.source == "checkpoint":
        assert spec.checkpoint is not None
        assert spec.labels is not None
        key = f"{_slug(spec.name)}-ckpt-{_file_digest(spec.checkpoint, spec.labels)}"
    elif spec.source == "embedded":
        key = "efficientnet_lite0-embedded"
    else:
        key = f"{_slug(spec.name)}-{_slug(spec.weights)}"
    return cache_dir / f"{key}-onnx{EXPORT_VERSION}"


def export_onnx(module: torch.nn.Module, info: ModelInfo, directory: Path) -> None:
    """Write ``model.onnx`` and ``model.json`` for ``module`` into ``directory`` (which must exist)."""
    import torch

    wrapped = deployable(module, info)
    size = info.preprocessing.crop_size
    example = torch.zeros((2, size, size, 3), dtype=torch.uint8)
    with warnings.catch_warnings():
        # The TorchScript-based exporter announces its deprecation, and tracing notes that Python
        # ints derived from shapes become constants; both are expected: H and W are fixed by the crop.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(
            wrapped,
            (example,),
            str(directory / ONNX_FILE),
            input_names=["images"],
            output_names=["probabilities"],
            dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    (directory / INFO_FILE).write_text(info.to_json(), encoding="utf-8")


def ensure_onnx(spec: ModelSpec, cache_dir: Path) -> Path:
    """The directory holding the ONNX export of ``spec``, exporting it first if the cache lacks it."""
    target = artifact_dir(spec, cache_dir)
    if (target / ONNX_FILE).is_file() and (target / INFO_FILE).is_file():
        return target
    from ._sources import build_module

    started = time.perf_counter()
    module, info = build_module(spec)
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=cache_dir))
    staging.chmod(0o755)  # mkdtemp makes it private; the export is read by whichever user serves it
    try:
        export_onnx(module, info, staging)
        try:
            os.replace(staging, target)  # atomic: readers see all of it or none
        except OSError:
            if not (target / ONNX_FILE).is_file():  # not a concurrent exporter winning the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "exported %s to ONNX",
        info.name,
        extra={"artifact": str(target), "seconds": round(time.perf_counter() - started, 2)},
    )
    return target
