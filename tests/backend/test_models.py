"""Model loading: the embedded model, torchvision models through their real weights cache, checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.hub
import torchvision
from pydantic import ValidationError
from torchvision.models import ResNet18_Weights

from backend.classifier import Classifier, ImageLimits, ModelConfigError, ModelSpec, Preprocessing, load_classifier
from backend.classifier._export import artifact_dir
from backend.classifier._quantize import ensure_int8
from backend.classifier._runtimes import INT8_FILE
from backend.classifier._sources import build_module
from backend.config import Settings
from tests.helpers import CAT, CAT_CLASSES, COFFEE, SKIMAGE_DATA, jpeg_bytes

PHOTOS = [CAT.read_bytes(), COFFEE.read_bytes(), jpeg_bytes(CAT, size=(640, 480)), jpeg_bytes(COFFEE, (4032, 3024))]
# every colour photo scikit-image ships, beside the cat and the espresso (an astronaut, a rocket, ...)
SAMPLES = [
    jpeg_bytes(SKIMAGE_DATA / name)
    for name in ("astronaut.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg", "ihc.png", "retina.jpg")
]


@pytest.mark.parametrize(
    "runtime",
    ["onnx", pytest.param("openvino", marks=pytest.mark.slow), pytest.param("torch", marks=pytest.mark.slow)],
)
def test_embedded_model_recognises_real_photos(runtime: str, request: pytest.FixtureRequest) -> None:
    classifier: Classifier = request.getfixturevalue(f"{runtime}_classifier")
    cat, coffee = classifier.classify([CAT.read_bytes(), COFFEE.read_bytes()], top_k=5)
    assert cat[0].label in CAT_CLASSES
    assert coffee[0].label == "espresso"
    assert [p.probability for p in cat] == sorted((p.probability for p in cat), reverse=True)


def test_probabilities_of_all_classes_sum_to_one(onnx_classifier: Classifier) -> None:
    (everything,) = onnx_classifier.classify([CAT.read_bytes()], top_k=1000)
    assert len(everything) == 1000
    assert len({p.index for p in everything}) == 1000
    assert sum(p.probability for p in everything) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow  # eager PyTorch
def test_onnx_runtime_agrees_with_eager_pytorch(onnx_classifier: Classifier, torch_classifier: Classifier) -> None:
    """The fast path's parity with the reference: same top-5, probabilities within 1e-4 absolute."""
    for fast, reference in zip(onnx_classifier.classify(PHOTOS, 5), torch_classifier.classify(PHOTOS, 5), strict=True):
        assert [p.index for p in fast] == [p.index for p in reference]
        np.testing.assert_allclose([p.probability for p in fast], [p.probability for p in reference], atol=1e-4)


@pytest.mark.slow  # OpenVINO compiles the model
def test_openvino_agrees_with_onnx_runtime(onnx_classifier: Classifier, openvino_classifier: Classifier) -> None:
    """The same ONNX file on OpenVINO: every class's probability within 1e-5 of ONNX Runtime's, same top-5."""
    limits = ImageLimits()
    pixels = np.stack([onnx_classifier.prepare(photo, limits).pixels for photo in [*PHOTOS, *SAMPLES]])
    reference = onnx_classifier.probabilities(pixels)
    batched = openvino_classifier.probabilities(pixels)
    assert batched.dtype == np.float32
    assert batched.shape == reference.shape
    np.testing.assert_allclose(batched, reference, atol=1e-5, rtol=0)
    for i in range(len(pixels)):  # one image at a time, as at one client
        np.testing.assert_allclose(
            openvino_classifier.probabilities(pixels[i : i + 1]), reference[i : i + 1], atol=1e-5
        )
    assert (batched.argmax(axis=1) == reference.argmax(axis=1)).all()
    for ours, theirs in zip(openvino_classifier.classify(PHOTOS, 5), onnx_classifier.classify(PHOTOS, 5), strict=True):
        assert [p.index for p in ours] == [p.index for p in theirs]


def test_batched_and_single_inference_agree(onnx_classifier: Classifier) -> None:
    pixels = np.stack([onnx_classifier.prepare(photo, ImageLimits()).pixels for photo in PHOTOS])
    batched = onnx_classifier.probabilities(pixels)
    one_by_one = np.concatenate([onnx_classifier.probabilities(pixels[i : i + 1]) for i in range(len(PHOTOS))])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_onnx_runtime_does_not_import_torch(model_cache: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from backend.classifier import ModelSpec, load_classifier; "
        f"c = load_classifier(ModelSpec(), runtime='onnx', cache_dir=Path({str(model_cache)!r})); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def _place_resnet18_weights(torch_home: Path) -> dict[str, torch.Tensor]:
    """Put a state dict where torchvision looks for ResNet18_Weights.IMAGENET1K_V1 before downloading.

    There is no network here, so the weights are freshly initialised ones; what is tested is the real
    loading path: weights enum -> get_state_dict -> load_state_dict_from_url's cache lookup in TORCH_HOME.
    """
    torch.manual_seed(0)
    state = torchvision.models.resnet18(num_classes=1000).state_dict()
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url))
    return dict(state)


@pytest.mark.slow  # checkpoint loading
def test_torchvision_model_loads_weights_from_the_torch_home_cache(torch_home: Path) -> None:
    state = _place_resnet18_weights(torch_home)
    module, info = build_module(ModelSpec("resnet18", "DEFAULT"))
    loaded = module.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert info.source == "torchvision"
    assert info.weights == "ResNet18_Weights.IMAGENET1K_V1"
    assert info.labels == tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    assert (info.preprocessing.resize_size, info.preprocessing.crop_size) == (256, 224)


@pytest.mark.slow  # ONNX export
def test_torchvision_model_serves_through_onnx_with_its_own_labels(torch_home: Path, tmp_path: Path) -> None:
    _place_resnet18_weights(torch_home)
    spec = ModelSpec("resnet18", "IMAGENET1K_V1")
    fast = load_classifier(spec, runtime="onnx", cache_dir=tmp_path / "cache", threads=1)
    reference = load_classifier(spec, runtime="torch", cache_dir=tmp_path / "cache", threads=1)
    assert (artifact_dir(spec, tmp_path / "cache") / "model.onnx").is_file()
    assert fast.info.num_classes == 1000
    for a, b in zip(fast.classify(PHOTOS[:2], 3), reference.classify(PHOTOS[:2], 3), strict=True):
        assert [p.index for p in a] == [p.index for p in b]
        np.testing.assert_allclose([p.probability for p in a], [p.probability for p in b], atol=1e-4)


def test_without_cached_weights_or_network_the_error_says_how_to_fix_it(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No network, whether or not this machine has one: torchvision's download fails as it does offline.
    def offline(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError(f"no network for {url} (the test cuts it)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ModelConfigError, match=r"TORCH_HOME|prefetch") as caught:
        build_module(ModelSpec("resnet18"))
    assert "no network" in str(caught.value)  # torchvision really tried to download, and the error says so
    assert not list(torch_home.rglob("*.pth"))  # and nothing was cached


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ModelSpec("resnet9000"), "Unknown model"),
        (ModelSpec("resnet18", "IMAGENET9K"), "no weights"),
        (ModelSpec("fasterrcnn_resnet50_fpn"), "Unknown model"),  # detection, not classification
    ],
)
def test_bad_model_configuration_is_explained(spec: ModelSpec, message: str) -> None:
    with pytest.raises(ModelConfigError, match=message):
        build_module(spec)


def _fine_tuned_resnet18(tmp_path: Path, labels: list[str], wrap: bool = False) -> ModelSpec:
    torch.manual_seed(3)
    model = torchvision.models.resnet18(num_classes=len(labels))
    state: object = (
        {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}} if wrap else model.state_dict()
    )
    torch.save(state, tmp_path / "finetuned.pt")
    (tmp_path / "labels.txt").write_text("\n".join(labels) + "\n")
    return ModelSpec("resnet18", checkpoint=tmp_path / "finetuned.pt", labels=tmp_path / "labels.txt")


@pytest.mark.slow  # checkpoint loading and export
@pytest.mark.parametrize("wrap", [False, True], ids=["plain", "lightning-style"])
def test_fine_tuned_checkpoint_with_its_own_classes(tmp_path: Path, wrap: bool) -> None:
    spec = _fine_tuned_resnet18(tmp_path, ["healthy leaf", "rust", "blight"], wrap=wrap)
    classifier = load_classifier(spec, runtime="onnx", cache_dir=tmp_path / "cache", threads=1)
    assert classifier.info.labels == ("healthy leaf", "rust", "blight")
    assert classifier.info.source == "checkpoint"
    (predictions,) = classifier.classify([CAT.read_bytes()], top_k=10)  # more than there are classes
    assert len(predictions) == 3
    assert {p.label for p in predictions} == {"healthy leaf", "rust", "blight"}
    assert sum(p.probability for p in predictions) == pytest.approx(1.0, abs=1e-5)


def test_checkpoint_that_does_not_fit_its_labels_is_explained(tmp_path: Path) -> None:
    spec = _fine_tuned_resnet18(tmp_path, ["a", "b", "c"])
    (tmp_path / "labels.txt").write_text("a\nb\nc\nd\n")
    with pytest.raises(ModelConfigError, match="does not fit resnet18 with 4 classes"):
        build_module(spec)


def test_checkpoint_needs_labels(tmp_path: Path) -> None:
    spec = _fine_tuned_resnet18(tmp_path, ["a", "b"])
    with pytest.raises(ModelConfigError, match="labels"):
        build_module(ModelSpec("resnet18", checkpoint=spec.checkpoint))


def test_a_changed_checkpoint_is_exported_again(tmp_path: Path) -> None:
    spec = _fine_tuned_resnet18(tmp_path, ["a", "b"])
    first = artifact_dir(spec, tmp_path)
    (tmp_path / "labels.txt").write_text("a\nc\n")
    assert artifact_dir(spec, tmp_path) != first


# --- INT8 (PRECISION=int8): the NNCF-quantized export on OpenVINO


def test_int8_runs_on_openvino_only(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="RUNTIME=openvino"):
        load_classifier(ModelSpec(), runtime="onnx", cache_dir=tmp_path, precision="int8")
    with pytest.raises(ValidationError, match="RUNTIME=openvino"):
        Settings(_env_file=None, runtime="onnx", precision="int8")
    assert not list(tmp_path.iterdir())  # refused before exporting anything


def test_without_nncf_a_missing_int8_model_says_how_to_make_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nncf", None)  # as in the serving image, which never installs NNCF
    with pytest.raises(ModelConfigError, match=r"prefetch --precision int8") as caught:
        ensure_int8(tmp_path, Preprocessing())
    assert "NNCF" in str(caught.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow  # quantizes the embedded model (300 calibration images)
def test_int8_quantizes_the_export_once_and_runs_it(model_cache: Path, openvino_classifier: Classifier) -> None:
    int8 = load_classifier(ModelSpec(), runtime="openvino", cache_dir=model_cache, threads=1, precision="int8")
    made = artifact_dir(ModelSpec(), model_cache) / INT8_FILE
    assert made.is_file()
    assert made.with_suffix(".bin").is_file()
    cat, coffee = int8.classify([CAT.read_bytes(), COFFEE.read_bytes()], top_k=5)
    assert cat[0].label in CAT_CLASSES
    assert coffee[0].label == "espresso"
    # the quantized model, not the FP32 one: close, but not the same numbers
    pixels = np.stack([int8.prepare(photo, ImageLimits()).pixels for photo in PHOTOS])
    fp32 = openvino_classifier.probabilities(pixels)
    quantized = int8.probabilities(pixels)
    assert np.abs(quantized - fp32).max() > 1e-4
    np.testing.assert_allclose(quantized.sum(axis=1), 1.0, atol=1e-4)
    again = made.stat().st_mtime_ns
    load_classifier(ModelSpec(), runtime="openvino", cache_dir=model_cache, threads=1, precision="int8")
    assert made.stat().st_mtime_ns == again  # made once


@pytest.mark.slow  # checkpoint export and quantization
def test_int8_quantizes_a_fine_tuned_checkpoint_with_its_own_classes(tmp_path: Path) -> None:
    spec = _fine_tuned_resnet18(tmp_path, ["healthy leaf", "rust", "blight"])
    fp32 = load_classifier(spec, runtime="openvino", cache_dir=tmp_path / "cache", threads=1)
    int8 = load_classifier(spec, runtime="openvino", cache_dir=tmp_path / "cache", threads=1, precision="int8")
    assert (artifact_dir(spec, tmp_path / "cache") / INT8_FILE).is_file()
    assert int8.info.labels == ("healthy leaf", "rust", "blight")
    pixels = np.stack([int8.prepare(photo, ImageLimits()).pixels for photo in PHOTOS])
    quantized, reference = int8.probabilities(pixels), fp32.probabilities(pixels)
    assert quantized.shape == (len(PHOTOS), 3)
    np.testing.assert_allclose(quantized, reference, atol=0.05)  # calibrated through resnet18's own preprocessing
    assert not np.array_equal(quantized, reference)
