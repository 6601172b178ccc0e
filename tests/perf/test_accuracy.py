"""The accuracy gate (bench/accuracy.py): its arithmetic, its images, OpenVINO passing it, and INT8 measured."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from backend.classifier import ImageLimits, ModelSpec, load_classifier
from backend.classifier._quantize import CALIBRATION_PHOTOS, calibration_images
from bench.accuracy import GATE, agreement, corpus, markdown, measure, source_photos


def test_agreement_counts_top_1_and_top_5_as_the_gate_defines_them() -> None:
    reference = np.array([[0.5, 0.2, 0.1, 0.08, 0.07, 0.05], [0.05, 0.07, 0.08, 0.1, 0.2, 0.5]], dtype=np.float32)
    same = agreement("same", reference, reference.copy(), 1.0)
    assert (same.top1, same.top5, same.max_abs_diff, same.passed) == (1.0, 1.0, 0.0, True)
    # first image: classes 0 and 1 swap places (top-1 differs, same top-5); second: class 0 replaces class 3 in
    # the top-5 (4 of 5 shared)
    candidate = np.array([[0.2, 0.5, 0.1, 0.08, 0.07, 0.05], [0.11, 0.07, 0.08, 0.01, 0.2, 0.53]], dtype=np.float32)
    swapped = agreement("swapped", reference, candidate, 1.0)
    assert swapped.top1 == 0.5
    assert swapped.top5 == pytest.approx(0.9)
    assert swapped.max_abs_diff == pytest.approx(0.3)
    assert not swapped.passed
    assert GATE == {"top1": 0.99, "top5": 0.95}
    assert "| swapped | 2 | 50.0% | 90.0% |" in markdown([swapped])


@pytest.mark.slow  # a few hundred JPEGs
def test_the_corpus_is_a_few_hundred_distinct_images_of_every_source() -> None:
    photos = source_photos()
    assert all(path.is_file() for path in photos.values())
    assert {name.split("/")[0] for name in photos} == {"skimage", "sklearn", "matplotlib"}
    images = list(corpus())
    assert len(images) >= 300
    assert len({hashlib.sha256(jpeg).digest() for _, jpeg in images}) == len(images)
    assert images == list(corpus())  # seeded: the same images every run


@pytest.mark.slow  # two runtimes over a few hundred images
def test_openvino_passes_the_accuracy_gate(model_cache: Path) -> None:
    names, (reference, openvino) = measure(["openvino"], model_cache)
    assert reference.runtime == "onnx"
    assert openvino.runtime == "openvino"
    assert openvino.images == len(names) >= 300
    assert openvino.passed
    assert openvino.top1 == openvino.top5 == 1.0  # FP32 on both: the same answers, not merely close ones
    assert openvino.max_abs_diff < 1e-5


def test_agreement_counts_images_the_reference_is_confident_about_apart() -> None:
    reference = np.array([[0.6, 0.3, 0.1], [0.4, 0.35, 0.25], [0.2, 0.7, 0.1]], dtype=np.float32)
    candidate = np.array([[0.3, 0.6, 0.1], [0.35, 0.4, 0.25], [0.2, 0.7, 0.1]], dtype=np.float32)
    result = agreement("flips", reference, candidate, 1.0)
    assert result.top1 == pytest.approx(1 / 3)
    assert (result.confident_images, result.confident_top1) == (2, 0.5)  # the 0.4 image is not counted there


@pytest.mark.slow  # a few hundred JPEGs and the calibration set
def test_int8_calibration_never_sees_an_image_the_gate_evaluates(model_cache: Path) -> None:
    classifier = load_classifier(ModelSpec(), runtime="onnx", cache_dir=model_cache, threads=1)
    evaluated = {classifier.prepare(jpeg, ImageLimits()).pixels.tobytes() for _, jpeg in corpus()}
    calibration = calibration_images(classifier.info.preprocessing)
    assert len(calibration) == len({image.tobytes() for image in calibration}) >= 300
    assert not evaluated & {image.tobytes() for image in calibration}
    # and three of the gate's photos (matplotlib's) are never cropped for calibration at all
    assert {name.split("/")[0] for name in source_photos()} - {package for package, _, _ in CALIBRATION_PHOTOS} == {
        "matplotlib"
    }


@pytest.mark.slow  # quantizes the embedded model, then two runtimes over a few hundred images
def test_int8_is_measured_against_the_gate(model_cache: Path) -> None:
    """INT8 does not pass the gate (BENCHMARKS.md); this holds it to what was measured, so a worse calibration or
    quantization recipe fails here: most answers kept, and those the FP32 model is confident about all kept."""
    _, (_, int8) = measure(["openvino-int8"], model_cache)
    assert int8.runtime == "openvino-int8"
    assert int8.top1 >= 0.8
    assert int8.top5 >= 0.85
    assert int8.confident_images >= 50
    assert int8.confident_top1 >= 0.97
