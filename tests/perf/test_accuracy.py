"""The accuracy gate (bench/accuracy.py): its arithmetic, its images, and OpenVINO passing it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

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
