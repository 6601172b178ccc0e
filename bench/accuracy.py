"""The accuracy gate: does a runtime (or, later, a quantized model) answer as the FP32 model on ONNX Runtime does?

``python -m bench.accuracy [--runtime openvino] [--runtime torch] [--runtime openvino-int8]`` classifies a few
hundred varied real images with the reference (the FP32 ONNX export on ONNX Runtime) and with each candidate
(a runtime, or ``openvino-int8``: OpenVINO running the NNCF-quantized export, ``PRECISION=int8``), and reports,
per candidate:

- top-1 agreement: the share of images whose most likely class is the reference's;
- top-5 overlap: the mean share of the reference's five most likely classes that are among the candidate's five;
- the largest difference in any class's probability;
- top-1 agreement on the images the reference is confident about (its top-1 probability >= 0.5), where a
  class flipped is a changed answer rather than a coin toss between near-equal classes.

A candidate may become the default only if top-1 agreement >= 99% and top-5 overlap >= 95% (``GATE``).

The images: every sample photo that ships inside the packages the dev venv installs (scikit-image's
``skimage/data``, scikit-learn's ``sklearn/datasets/images``, matplotlib's ``sample_data``; SciPy's
``scipy.datasets`` are downloaded on first use, so none of them), each as it is and in a dozen variations
(flip, rotation, crops, scales, brightness, contrast, saturation and hue changes, strong JPEG compression),
seeded, so every run sees the same images. Every image goes through the service's own path: JPEG bytes,
``Classifier.prepare`` (decode, resize, crop), then the model. INT8 calibration (``backend/classifier/_quantize.py``)
uses other crops of the scikit-image and scikit-learn photos, made with other seeds, and never the matplotlib ones.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import logging
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from backend.classifier import Classifier, ImageLimits, ModelSpec, Precision, RuntimeName, load_classifier
from backend.config import Settings

logger = logging.getLogger("bench.accuracy")

GATE = {"top1": 0.99, "top5": 0.95}
REFERENCE: RuntimeName = "onnx"
CONFIDENT = 0.5  # the reference's top-1 probability from which an image counts as one it is confident about
# candidate name -> (runtime, precision)
CANDIDATES: dict[str, tuple[RuntimeName, Precision]] = {
    "openvino": ("openvino", "fp32"),
    "torch": ("torch", "fp32"),
    "openvino-int8": ("openvino", "int8"),
}


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"{name} is not installed: run `make venv`")
    return Path(spec.origin).parent


def source_photos() -> dict[str, Path]:
    """The sample photos, by a short name: photographs, micrographs, astronomy, scanned text, a logo."""
    skimage = _package_dir("skimage") / "data"
    sklearn = _package_dir("sklearn") / "datasets" / "images"
    matplotlib = _package_dir("matplotlib") / "mpl-data" / "sample_data"
    photos = {
        f"skimage/{name}": skimage / name
        for name in (
            "astronaut.png",
            "chelsea.png",
            "coffee.png",
            "rocket.jpg",
            "motorcycle_left.png",
            "motorcycle_right.png",
            "hubble_deep_field.jpg",
            "ihc.png",
            "retina.jpg",
            "logo.png",
            "camera.png",
            "coins.png",
            "moon.png",
            "page.png",
            "text.png",
            "grass.png",
            "gravel.png",
            "brick.png",
            "cell.png",
            "clock_motion.png",
            "microaneurysms.png",
        )
    }
    photos |= {f"sklearn/{name}": sklearn / name for name in ("china.jpg", "flower.jpg")}
    photos |= {
        f"matplotlib/{name}": matplotlib / name
        for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")
    }
    return photos


def _fit(image: Image.Image, scale: float) -> Image.Image:
    width, height = image.size
    return image.resize((max(8, round(width * scale)), max(8, round(height * scale))), Image.Resampling.BICUBIC)


def _crop(image: Image.Image, share: float, rng: random.Random, centre: bool) -> Image.Image:
    """A crop of ``share`` of each side, centred or at a random place."""
    width, height = image.size
    w, h = max(8, round(width * share)), max(8, round(height * share))
    x = (width - w) // 2 if centre else rng.randint(0, width - w)
    y = (height - h) // 2 if centre else rng.randint(0, height - h)
    return image.crop((x, y, x + w, y + h))


def _hue(image: Image.Image, shift: int) -> Image.Image:
    hsv = np.asarray(image.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + shift) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def variations(image: Image.Image, rng: random.Random, colour: bool) -> Iterator[tuple[str, Image.Image, int]]:
    """``(name, image, JPEG quality)``: the photo as it is and 13 variations of it (for a grey photo, blur and
    sharpening instead of saturation and hue, which would leave it as it is)."""
    yield "original", image, 90
    yield "flip", ImageOps.mirror(image), 90
    yield "rotate90", image.transpose(Image.Transpose.ROTATE_90), 90
    yield "centre-crop-80", _crop(image, 0.8, rng, centre=True), 90
    yield "centre-crop-60", _crop(image, 0.6, rng, centre=True), 90
    for i in range(2):
        yield f"random-crop-{i}", _crop(image, rng.uniform(0.45, 0.9), rng, centre=False), 90
    yield "half-size", _fit(image, 0.5), 90
    yield "upscaled", _fit(image, 1.6), 90
    yield "brightness", ImageEnhance.Brightness(image).enhance(rng.choice([0.6, 0.75, 1.3, 1.45])), 90
    yield "contrast", ImageEnhance.Contrast(image).enhance(rng.choice([0.55, 0.7, 1.35, 1.6])), 90
    if colour:
        yield "saturation", ImageEnhance.Color(image).enhance(rng.choice([0.3, 0.6, 1.5, 1.9])), 90
        yield "hue", _hue(image, rng.choice([-24, -12, 12, 24])), 90
    else:
        yield "blur", image.filter(ImageFilter.GaussianBlur(rng.choice([1.0, 1.5, 2.0]))), 90
        yield "sharpen", ImageEnhance.Sharpness(image).enhance(rng.choice([2.0, 3.0])), 90
    jittered = ImageEnhance.Brightness(ImageOps.mirror(_crop(image, 0.75, rng, centre=False))).enhance(0.85)
    yield "flip-crop-dark-q40", jittered, 40


def corpus() -> Iterator[tuple[str, bytes]]:
    """``(name, JPEG bytes)`` of every test image, always the same ones in the same order."""
    for source, path in source_photos().items():
        rng = random.Random(source)  # seeded by name: a photo's variations do not depend on the others
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        pixels = np.asarray(image)
        colour = bool((pixels[..., 0] != pixels[..., 1]).any() or (pixels[..., 1] != pixels[..., 2]).any())
        for variation, varied, quality in variations(image, rng, colour):
            out = io.BytesIO()
            varied.save(out, "JPEG", quality=quality)
            yield f"{source}:{variation}", out.getvalue()


@dataclass(frozen=True)
class Agreement:
    runtime: str
    images: int
    top1: float  # share of images with the reference's top-1 class
    top5: float  # mean share of the reference's top-5 classes among the candidate's top-5
    max_abs_diff: float  # largest difference in any class's probability
    ms_per_image: float  # the candidate's model time, one image per call, one thread
    confident_images: int  # images whose reference top-1 probability is >= CONFIDENT
    confident_top1: float  # top-1 agreement on those

    @property
    def passed(self) -> bool:
        return self.top1 >= GATE["top1"] and self.top5 >= GATE["top5"]


def agreement(runtime: str, reference: np.ndarray, candidate: np.ndarray, ms_per_image: float) -> Agreement:
    """How ``candidate``'s probabilities ``(N, classes)`` agree with ``reference``'s."""
    ref5 = np.argsort(-reference, axis=1, kind="stable")[:, :5]
    cand5 = np.argsort(-candidate, axis=1, kind="stable")[:, :5]
    top1 = float(np.mean(ref5[:, 0] == cand5[:, 0]))
    top5 = float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(ref5, cand5, strict=True)]))
    confident = reference.max(axis=1) >= CONFIDENT
    return Agreement(
        runtime,
        len(reference),
        top1,
        top5,
        float(np.max(np.abs(reference - candidate))),
        ms_per_image,
        int(confident.sum()),
        float(np.mean(ref5[confident, 0] == cand5[confident, 0])) if confident.any() else float("nan"),
    )


def probabilities(classifier: Classifier, pixels: np.ndarray) -> tuple[np.ndarray, float]:
    """Every image's probabilities, one image per call as at one client, and the median ms per call."""
    rows, times = [], []
    for i in range(len(pixels)):
        started = time.perf_counter()
        rows.append(classifier.probabilities(pixels[i : i + 1]))
        times.append(time.perf_counter() - started)
    return np.concatenate(rows), 1000.0 * float(np.median(times))


def measure(candidates: list[str], cache_dir: Path) -> tuple[list[str], list[Agreement]]:
    """The corpus's names and, per candidate (a key of ``CANDIDATES``), its agreement with the reference."""
    reference = load_classifier(ModelSpec(), runtime=REFERENCE, cache_dir=cache_dir, threads=1)
    limits = ImageLimits()
    names, pixels = [], []
    for name, jpeg in corpus():
        names.append(name)
        pixels.append(reference.prepare(jpeg, limits).pixels)
    batch = np.stack(pixels)
    logger.info("%d images from %d photos", len(names), len(source_photos()))
    expected, reference_ms = probabilities(reference, batch)
    results = [agreement(REFERENCE, expected, expected, reference_ms)]
    for name in candidates:
        runtime, precision = CANDIDATES[name]
        candidate = load_classifier(ModelSpec(), runtime=runtime, cache_dir=cache_dir, threads=1, precision=precision)
        got, ms = probabilities(candidate, batch)
        results.append(agreement(name, expected, got, ms))
    return names, results


def markdown(results: list[Agreement]) -> str:
    lines = [
        "| runtime | images | top-1 agreement | top-5 overlap | largest probability difference "
        f"| top-1 agreement where the reference's top-1 >= {CONFIDENT} | model ms per image (1 thread) | gate |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        verdict = "reference" if r.runtime == REFERENCE else ("passed" if r.passed else "NOT passed")
        lines.append(
            f"| {r.runtime} | {r.images} | {100 * r.top1:.1f}% | {100 * r.top5:.1f}% | {r.max_abs_diff:.1e} "
            f"| {100 * r.confident_top1:.1f}% of {r.confident_images} | {r.ms_per_image:.2f} | {verdict} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runtime",
        action="append",
        choices=list(CANDIDATES),
        help="a candidate to compare with ONNX Runtime (repeatable; default: openvino)",
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="model cache (default: MODEL_CACHE_DIR's default)")
    args = parser.parse_args(argv)
    _, results = measure(args.runtime or ["openvino"], args.cache_dir or Settings().model_cache_dir)
    print(markdown(results))
    if not all(r.passed for r in results):
        sys.exit(2)


if __name__ == "__main__":
    main()
