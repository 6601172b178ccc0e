"""Real photos for tests: scikit-image's samples, as files and re-encoded as JPEG bytes.

(The benchmark's and the load test's photos come from ``bench.photos``, which scales and crops without
distortion; these tests keep their own resize, whose expected classes they were written against.)"""

from __future__ import annotations

import io
from pathlib import Path

import skimage
from PIL import Image

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
CAT = SKIMAGE_DATA / "chelsea.png"  # a tabby cat, photographed by someone else
COFFEE = SKIMAGE_DATA / "coffee.png"  # a cup of espresso
CAT_CLASSES = frozenset({"tabby", "tiger cat", "Egyptian cat"})
COFFEE_CLASSES = frozenset({"espresso", "cup", "coffee mug", "eggnog"})


def jpeg_bytes(path: Path, size: tuple[int, int] | None = None, quality: int = 90) -> bytes:
    """A real photo re-encoded as JPEG, optionally resized (to make phone-sized or small test images)."""
    image = Image.open(path).convert("RGB")
    if size is not None:
        image = image.resize(size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()
