"""The model work every peer server does, identical to this project's: run inside each peer's own venv.

Imports only numpy, Pillow and ONNX Runtime (each peer's venv has the versions the project pins, except
where a peer forbids them; the report lists the versions). The preprocessing is this project's own
``backend/classifier/_preprocess.py``, loaded from its file (``BENCH_PREPROCESS``) rather than copied, so
it cannot drift; the decoding follows ``backend/classifier/_images.py`` for an upright JPEG (Pillow, DCT
scaling down to the resize size, EXIF orientation, RGB). The model is the project's ONNX export
(``BENCH_MODEL_DIR``: ``model.onnx`` and ``model.json``), run by ONNX Runtime on one thread per session,
as ``backend/classifier/_runtimes.py`` runs it.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import ExifTags, Image

TOP_K = 5
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _preprocessing_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("bench_peer_preprocess", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


class Model:
    """One single-threaded ONNX Runtime session on the project's export, with its decode and preprocessing."""

    def __init__(self) -> None:
        directory = Path(os.environ["BENCH_MODEL_DIR"])
        info = json.loads((directory / "model.json").read_text(encoding="utf-8"))
        self.labels: list[str] = info["labels"]
        self.preprocessing = _preprocessing_module(Path(os.environ["BENCH_PREPROCESS"])).Preprocessing.from_dict(
            info["preprocessing"]
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(directory / "model.onnx"), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def prepare_image(self, image: Image.Image) -> np.ndarray:
        """An opened (not yet loaded) image to the model's ``uint8`` input, as the project decodes a JPEG."""
        if image.format in ("JPEG", "MPO") and image.mode in ("RGB", "L", "CMYK"):
            size = self.preprocessing.resize_size
            image.draft(image.mode, (size, size))
        image.load()
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        if (turn := _EXIF_TRANSPOSE.get(orientation)) is not None:
            image = image.transpose(turn)
        if image.mode != "RGB":
            image = image.convert("RGB")
        array: np.ndarray = self.preprocessing(image)
        return array

    def prepare(self, data: bytes) -> np.ndarray:
        return self.prepare_image(Image.open(io.BytesIO(data)))

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 images to ``(N, classes)`` probabilities."""
        (probabilities,) = self.session.run(None, {self.input_name: images})
        return np.asarray(probabilities, dtype=np.float32)

    def top(self, probabilities: np.ndarray, k: int = TOP_K) -> list[dict[str, Any]]:
        """The ``k`` most likely classes of one image, most likely first (ties in index order, as ours)."""
        order = np.argsort(-probabilities, kind="stable")[:k]
        return [
            {"index": int(i), "label": self.labels[int(i)], "probability": float(probabilities[int(i)])} for i in order
        ]
