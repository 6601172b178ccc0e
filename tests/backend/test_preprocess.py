"""Our Pillow-only preprocessing must give what torchvision's ``weights.transforms()`` gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import get_model_weights
from torchvision.transforms.v2 import functional as F

from backend.classifier import Preprocessing
from backend.classifier._sources import _preprocessing_of
from tests.helpers import CAT, COFFEE, SKIMAGE_DATA


def _as_uint8(normalised: torch.Tensor, p: Preprocessing) -> np.ndarray:
    mean = torch.tensor(p.mean).view(3, 1, 1)
    std = torch.tensor(p.std).view(3, 1, 1)
    pixels: np.ndarray = np.rint((normalised * std + mean).numpy() * 255).astype(np.int16).transpose(1, 2, 0)
    return pixels


@pytest.mark.parametrize("model", ["resnet50", "mobilenet_v3_large", "vit_b_16", "efficientnet_b3"])
@pytest.mark.parametrize("photo", [CAT, COFFEE, SKIMAGE_DATA / "rocket.jpg"], ids=lambda p: p.name)
def test_matches_torchvision_transforms(model: str, photo: object) -> None:
    weights = get_model_weights(model).DEFAULT
    reference_transform = weights.transforms()
    ours = _preprocessing_of(weights)
    assert ours.crop_size == reference_transform.crop_size[0]
    image = Image.open(str(photo)).convert("RGB")
    expected = _as_uint8(reference_transform(image), ours)
    got = ours(image).astype(np.int16)
    assert got.shape == expected.shape == (ours.crop_size, ours.crop_size, 3)
    # Resampling only the cropped region may round a pixel the other way: at most one grey level.
    assert np.abs(got - expected).max() <= 1
    assert np.mean(got == expected) > 0.98


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (257, 256), (224, 224), (10000, 10), (10, 10000), (1, 1)])
def test_output_size_and_resize_rule(size: tuple[int, int]) -> None:
    p = Preprocessing(resize_size=256, crop_size=224)
    image = Image.new("RGB", size, (10, 200, 30))
    out = p(image)
    assert out.shape == (224, 224, 3)
    assert out.dtype == np.uint8
    assert (out == (10, 200, 30)).all()  # a flat colour stays flat: no padding, no wrap-around
    expected = F.resize(image, [256]).size  # torchvision's rule for the resized size
    assert p.resized_size(*size) == expected


def test_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="larger"):
        Preprocessing(resize_size=200, crop_size=224)
    with pytest.raises(ValueError, match="interpolation"):
        Preprocessing(interpolation="lanczos")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="RGB"):
        Preprocessing()(Image.new("L", (300, 300)))


def test_round_trips_through_json() -> None:
    p = Preprocessing(resize_size=232, crop_size=224, interpolation="bicubic")
    assert Preprocessing.from_dict(p.to_dict()) == p
