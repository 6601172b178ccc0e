"""INT8 (``PRECISION=int8``): NNCF post-training quantization of the ONNX export, for OpenVINO.

Made once, beside the FP32 export (``model-int8.xml`` and ``.bin``, OpenVINO's own format), when a
classifier is first loaded with ``precision="int8"`` where NNCF is installed (the ``model`` dependency
group: ``python -m backend.prefetch --runtime openvino --precision int8``, the image's model stage). The
serving image never has NNCF: there, a missing INT8 model is a configuration error that says how to make it.
NNCF needs neither torch nor the PyTorch model: it quantizes the ONNX file, so torchvision models and
checkpoints quantize the same way, each calibrated through its own preprocessing.

Calibration data: ``CALIBRATION_PER_PHOTO`` seeded random crops (30-100% of each side, aspect 3:4 to 4:3,
half of them mirrored) of every sample photo scikit-image and scikit-learn ship (``CALIBRATION_PHOTOS``,
300 images), each put through the model's own resize and centre crop. The accuracy gate
(``python -m bench.accuracy``) evaluates other images: its own crops and variations of these photos, made
with other seeds and transforms, and three matplotlib photos that calibration never sees.

Measured against the gate (BENCHMARKS.md, "Measurements behind the code"): INT8 does not pass it (top-1
agreement with FP32 about 84% on its 364 images, where 99% is required; 100% on the images the FP32 model
is confident about), so it is an option, never the default.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import numpy as np

from ._errors import ModelConfigError
from ._export import ONNX_FILE
from ._preprocess import Preprocessing
from ._runtimes import INT8_FILE, _import_openvino

logger = logging.getLogger(__name__)

CALIBRATION_PER_PHOTO: Final = 12
# (package, folder inside it, file): every photograph, micrograph, scan and drawing the two packages ship.
CALIBRATION_PHOTOS: Final = (
    ("skimage", "data", "astronaut.png"),
    ("skimage", "data", "chelsea.png"),
    ("skimage", "data", "coffee.png"),
    ("skimage", "data", "rocket.jpg"),
    ("skimage", "data", "motorcycle_left.png"),
    ("skimage", "data", "motorcycle_right.png"),
    ("skimage", "data", "hubble_deep_field.jpg"),
    ("skimage", "data", "ihc.png"),
    ("skimage", "data", "retina.jpg"),
    ("skimage", "data", "logo.png"),
    ("skimage", "data", "camera.png"),
    ("skimage", "data", "coins.png"),
    ("skimage", "data", "moon.png"),
    ("skimage", "data", "page.png"),
    ("skimage", "data", "text.png"),
    ("skimage", "data", "grass.png"),
    ("skimage", "data", "gravel.png"),
    ("skimage", "data", "brick.png"),
    ("skimage", "data", "cell.png"),
    ("skimage", "data", "clock_motion.png"),
    ("skimage", "data", "microaneurysms.png"),
    ("skimage", "data", "color.png"),
    ("skimage", "data", "horse.png"),
    ("sklearn", "datasets/images", "china.jpg"),
    ("sklearn", "datasets/images", "flower.jpg"),
)


def _photo(package: str, folder: str, name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelConfigError(
            f"INT8 calibration crops the sample photos of {package}, which is not installed: install the model "
            "dependency group (requirements_model.txt) where the INT8 model is made."
        )
    return Path(spec.origin).parent / folder / name


def calibration_images(preprocessing: Preprocessing, per_photo: int = CALIBRATION_PER_PHOTO) -> list[np.ndarray]:
    """The calibration set: ``uint8`` ``(crop, crop, 3)`` arrays, always the same ones in the same order."""
    from PIL import Image, ImageOps

    images = []
    for package, folder, name in CALIBRATION_PHOTOS:
        # Not for security: the same crops every time. The gate seeds with the photos' own names.
        rng = random.Random(f"int8-calibration:{name}")  # noqa: S311
        with Image.open(_photo(package, folder, name)) as opened:
            photo = opened.convert("RGB")
        width, height = photo.size
        for _ in range(per_photo):
            share = rng.uniform(0.3, 1.0)
            w = min(width, max(16, round(width * share)))
            h = min(height, max(16, round(height * share * rng.uniform(0.75, 4 / 3))))
            x, y = rng.randint(0, width - w), rng.randint(0, height - h)
            crop = photo.crop((x, y, x + w, y + h))
            images.append(preprocessing(ImageOps.mirror(crop) if rng.random() < 0.5 else crop))
    return images


def _import_nncf() -> Any:
    """NNCF without its usage telemetry: like ``openvino``, it sends events through ``openvino_telemetry``
    when that package is importable, and falls back to a no-op stub when it is not."""
    _import_openvino()  # marks openvino_telemetry as absent before NNCF looks for it
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
    try:
        import nncf
    except ImportError:
        return None
    return nncf


def quantize(artifact: Path, preprocessing: Preprocessing) -> None:
    """Write ``INT8_FILE`` beside ``artifact``'s ONNX export: NNCF's default post-training quantization
    (symmetric INT8, weights per channel), with min-max activation ranges and full bias correction, which
    agreed best with FP32 of the settings tried (BENCHMARKS.md)."""
    nncf = _import_nncf()
    if nncf is None:
        raise ModelConfigError(
            f"PRECISION=int8 needs the INT8 model beside the export in {artifact}, and NNCF to make it is not "
            "installed here. Make it where the model dependency group is installed: "
            "`RUNTIME=openvino python -m backend.prefetch --precision int8` (the image's model stage)."
        )
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    ov = _import_openvino()
    started = time.perf_counter()
    data = calibration_images(preprocessing)
    model = ov.Core().read_model(str(artifact / ONNX_FILE))
    quantized = nncf.quantize(
        model,
        nncf.Dataset(data, lambda image: image[None]),
        subset_size=len(data),
        fast_bias_correction=False,
        advanced_parameters=AdvancedQuantizationParameters(
            activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
        ),
    )
    staging = Path(tempfile.mkdtemp(prefix=".int8-", dir=artifact))
    try:
        ov.save_model(quantized, str(staging / INT8_FILE), compress_to_fp16=False)
        weights = Path(INT8_FILE).with_suffix(".bin").name
        (staging / weights).chmod(0o644)
        (staging / INT8_FILE).chmod(0o644)
        os.replace(staging / weights, artifact / weights)
        os.replace(staging / INT8_FILE, artifact / INT8_FILE)  # last: its presence means both are there
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "quantized to INT8",
        extra={
            "artifact": str(artifact),
            "calibration_images": len(data),
            "seconds": round(time.perf_counter() - started, 2),
        },
    )


def ensure_int8(artifact: Path, preprocessing: Preprocessing) -> Path:
    """The INT8 model beside ``artifact``'s export, quantizing it first if it is not there."""
    if not (artifact / INT8_FILE).is_file():
        quantize(artifact, preprocessing)
    return artifact / INT8_FILE
