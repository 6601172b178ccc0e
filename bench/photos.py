"""The photos the benchmark sends: real photos (scikit-image's samples) re-encoded as JPEGs at set sizes."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps
from skimage import data

VGA = (640, 480)
PHONE_12MP = (4032, 3024)


@dataclass(frozen=True)
class Photo:
    name: str
    width: int
    height: int
    jpeg: bytes

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height}"

    def save(self, folder: Path) -> Path:
        path = folder / f"{self.name}-{self.label}.jpg"
        path.write_bytes(self.jpeg)
        return path


def photo(name: str, size: tuple[int, int], quality: int = 90) -> Photo:
    """scikit-image's sample photo ``name`` (``chelsea``: a cat, ``coffee``: an espresso) as a JPEG of ``size``.

    The photo is scaled to cover ``size`` and centre-cropped (no distortion); for a 12-megapixel size it
    is upscaled, which gives a JPEG of realistic dimensions and a realistic file size (~1 MB).
    """
    image = Image.fromarray(getattr(data, name)()).convert("RGB")
    out = io.BytesIO()
    ImageOps.fit(image, size, Image.Resampling.BICUBIC).save(out, "JPEG", quality=quality)
    return Photo(name, size[0], size[1], out.getvalue())
