"""``Classifier.top_k``'s contract over its whole input range: every k, ties, any number of classes.

The contract: the ``k`` most probable classes, most probable first, ties in ascending class index, with
each class's own label and probability; ``k`` beyond the number of classes means all of them.
"""

from __future__ import annotations

import numpy as np
import pytest

from backend.classifier import Classifier, ModelInfo, Preprocessing, RuntimeName


class _NoModel:
    """``top_k`` ranks probabilities it is given; it never runs the model."""

    name: RuntimeName = "onnx"
    parallel_calls = 1

    def __call__(self, images: np.ndarray) -> np.ndarray:
        raise AssertionError("top_k must not run the model")


def _classifier(classes: int) -> Classifier:
    labels = tuple(f"class {i}" for i in range(classes))
    return Classifier(ModelInfo("test", "none", "embedded", labels, Preprocessing()), _NoModel())


def _expected(probabilities: np.ndarray, k: int) -> list[int]:
    """The contract, written the slow, obvious way."""
    return sorted(range(len(probabilities)), key=lambda i: (-float(probabilities[i]), i))[:k]


def _softmax(rng: np.random.Generator, classes: int) -> np.ndarray:
    logits = rng.normal(0.0, 3.0, classes)
    exp = np.exp(logits - logits.max())
    probabilities: np.ndarray = (exp / exp.sum()).astype(np.float32)
    return probabilities


def _check(classifier: Classifier, probabilities: np.ndarray, k: int) -> None:
    ranked = classifier.top_k(probabilities, k)
    assert [p.index for p in ranked] == _expected(probabilities, k), f"k={k}"
    assert all(p.label == f"class {p.index}" for p in ranked)
    assert all(p.probability == float(probabilities[p.index]) for p in ranked)


def test_every_k_from_1_to_the_number_of_classes_is_ranked_most_probable_first() -> None:
    classifier = _classifier(1000)
    probabilities = _softmax(np.random.default_rng(0), 1000)
    for k in range(1, 1001):
        _check(classifier, probabilities, k)


@pytest.mark.parametrize("distinct_values", [1, 2, 5, 50])
def test_ties_go_to_the_lower_class_index_for_every_k(distinct_values: int) -> None:
    """Many equal probabilities (a model can saturate, or round to the same float32): ties are cut the same
    way every time, also where the k-th place falls inside a run of equal values."""
    classifier = _classifier(1000)
    rng = np.random.default_rng(distinct_values)
    probabilities = (rng.integers(0, distinct_values, 1000) / 1000).astype(np.float32)
    for k in range(1, 1001):
        _check(classifier, probabilities, k)


def test_equal_probabilities_keep_class_order() -> None:
    classifier = _classifier(10)
    uniform = np.full(10, 0.1, dtype=np.float32)
    assert [p.index for p in classifier.top_k(uniform, 3)] == [0, 1, 2]
    two_way = np.array([0.0, 0.3, 0.0, 0.3, 0.4, 0.0, 0.0, 0.0, 0.0, 0.0], dtype=np.float32)
    assert [p.index for p in classifier.top_k(two_way, 2)] == [4, 1]
    assert [p.index for p in classifier.top_k(two_way, 4)] == [4, 1, 3, 0]


@pytest.mark.parametrize("classes", [2, 3, 7, 1000, 21843])
def test_any_number_of_classes_and_k_beyond_it(classes: int) -> None:
    classifier = _classifier(classes)
    probabilities = _softmax(np.random.default_rng(classes), classes)
    for k in sorted({1, 2, classes // 2 or 1, classes - 1 or 1, classes}):
        _check(classifier, probabilities, k)
    everything = classifier.top_k(probabilities, classes + 5)  # more than there are: all of them
    assert [p.index for p in everything] == _expected(probabilities, classes)


@pytest.mark.parametrize("k", [0, -3])
def test_k_below_one_still_answers_the_most_probable_class(k: int) -> None:
    classifier = _classifier(5)
    probabilities = np.array([0.1, 0.2, 0.4, 0.2, 0.1], dtype=np.float32)
    assert [p.index for p in classifier.top_k(probabilities, k)] == [2]
