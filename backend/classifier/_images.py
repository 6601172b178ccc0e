"""Decoding untrusted image bytes into an RGB ``PIL.Image``: limits first, then the pixels.

Everything happens in memory. The header is read before any pixel data, so an image whose header
claims too many pixels (a decompression bomb) is refused without allocating its buffer. Large JPEGs
are decoded at a reduced scale (libjpeg's DCT scaling, Pillow's ``draft``) when the model only needs a
small image, which makes a 12-megapixel phone photo nearly as cheap as a 640x480 one.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ._errors import ImageTooLarge, InvalidImage, UnsupportedImage

# Formats Pillow decodes without plugins and that people actually upload. The JPEG opener also
# yields MPO, what many phone cameras write (a JPEG with extra frames).
SUPPORTED_FORMATS: Final = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

# Pillow's own bomb check warns above 89 Mpx and raises above 178 Mpx. The per-request limit below
# replaces it, so a warning never escapes into logs or tests.
Image.MAX_IMAGE_PIXELS = None
Image.init()  # register every plugin now (MPO among them), not lazily inside a request

_WHITE: Final = (255, 255, 255)
_SWAPS_AXES: Final = (5, 6, 7, 8)  # EXIF orientations that turn the image by 90 or 270 degrees


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied, possibly decoded at reduced scale
    format: str
    width: int  # of the original, as the user sees it (after EXIF rotation)
    height: int


def _describe(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 1_000_000 else f"{n} bytes"


def check_size(n_bytes: int, limits: ImageLimits) -> None:
    if n_bytes > limits.max_bytes:
        raise ImageTooLarge(
            f"The image is {_describe(n_bytes)}; the limit is {_describe(limits.max_bytes)}. "
            "Send a smaller or more compressed image."
        )


def decode_image(data: bytes, limits: ImageLimits, min_short_side: int = 0) -> DecodedImage:
    """Decode ``data`` into RGB, refusing what is not a supported, intact image within ``limits``.

    ``min_short_side``: the smallest shorter side the caller needs; a JPEG may be decoded at 1/2, 1/4
    or 1/8 scale as long as the result keeps at least that much.
    """
    if not data:
        raise InvalidImage("The image is empty (0 bytes). Send the image file's contents.")
    check_size(len(data), limits)
    try:
        image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except UnidentifiedImageError:
        raise UnsupportedImage(
            "This is not an image in a supported format. Send a JPEG, PNG, WebP, GIF, BMP or TIFF image."
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidImage(f"The image header cannot be read ({exc}). The file may be corrupt.") from None

    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidImage(f"The image claims a size of {width}x{height}. The file is corrupt.")
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"The image is {width}x{height} = {width * height / 1e6:.1f} megapixels; the limit is "
            f"{limits.max_pixels / 1e6:.1f} megapixels. Downscale it before sending."
        )
    fmt = image.format or "unknown"
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        if min_short_side and image.format in ("JPEG", "MPO") and image.mode in ("RGB", "L", "CMYK"):
            image.draft(image.mode, (min_short_side, min_short_side))
        image.load()  # the first frame of animations; decodes now so errors surface here
        image = ImageOps.exif_transpose(image) or image
        rgb = _to_rgb(image)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidImage(
            f"The {fmt} image cannot be decoded ({exc}). The file is truncated or corrupt; send it again."
        ) from None
    if orientation in _SWAPS_AXES:
        width, height = height, width
    return DecodedImage(rgb, fmt, width, height)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB. Transparent areas become white, as a browser shows them on a page."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image)), "L").convert("RGB")
    if mode == "P":
        mode = "RGBA" if "transparency" in image.info else "RGB"
        image = image.convert(mode)
        if mode == "RGB":
            return image
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Grey levels of any depth to 0..255: 16-bit data by its range, anything else stretched if needed."""
    values = pixels.astype(np.float64)
    if pixels.dtype.kind == "u" and pixels.dtype.itemsize == 2:
        values /= 257.0
    else:
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 255:
            if 0 <= low and high <= 65535:
                values /= 257.0
            else:
                values = (values - low) * (255.0 / (high - low or 1.0))
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
