"""Turning a decoded RGB image into the model's input, exactly as torchvision's ``weights.transforms()`` does.

The resize and the centre crop happen here, in Pillow, with the same sizes, rounding and filter that
torchvision's ``ImageClassification`` applies to a PIL image. The scaling to [0, 1] and the mean/std
normalisation are part of the exported model graph, so what crosses into the runtime is a compact
``uint8`` array of shape ``(crop, crop, 3)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

Interpolation = Literal["nearest", "bilinear", "bicubic"]

_PIL_FILTERS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to ``resize_size``, centre-crop ``crop_size``, normalise with ``mean``/``std``."""

    resize_size: int = 256
    crop_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: Interpolation = "bilinear"

    def __post_init__(self) -> None:
        if self.crop_size > self.resize_size:
            raise ValueError(f"crop_size {self.crop_size} is larger than resize_size {self.resize_size}")
        if self.interpolation not in _PIL_FILTERS:
            raise ValueError(f"unsupported interpolation {self.interpolation!r}")

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) torchvision's ``resize(img, [resize_size])`` gives: shorter side matched."""
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.resize_size, int(self.resize_size * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """An RGB image in, a ``uint8`` array ``(crop_size, crop_size, 3)`` out.

        Only the region that survives the crop is resampled (Pillow's ``box``), with the same sampling
        positions and filter support as resizing the whole image and then cropping. That keeps the
        cost flat for extreme aspect ratios (a 10000x10 strip would otherwise become 256000x256).
        """
        if image.mode != "RGB":
            raise ValueError(f"expected an RGB image, got mode {image.mode}")
        width, height = image.size
        new_w, new_h = self.resized_size(width, height)
        crop = self.crop_size
        top = round((new_h - crop) / 2.0)
        left = round((new_w - crop) / 2.0)
        if (new_w, new_h) == (width, height):
            region = image.crop((left, top, left + crop, top + crop))
        else:
            sx, sy = width / new_w, height / new_h
            box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
            region = image.resize((crop, crop), _PIL_FILTERS[self.interpolation], box=box)
        return np.asarray(region, dtype=np.uint8)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            resize_size=int(data["resize_size"]),
            crop_size=int(data["crop_size"]),
            mean=(float(data["mean"][0]), float(data["mean"][1]), float(data["mean"][2])),
            std=(float(data["std"][0]), float(data["std"][1]), float(data["std"][2])),
            interpolation=data["interpolation"],
        )
