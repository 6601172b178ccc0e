"""Decoding untrusted image bytes into an RGB ``PIL.Image``: limits first, then the pixels.

Everything happens in memory. The header is read before any pixel data, so an image whose header
claims too many pixels (a decompression bomb) is refused without allocating its buffer. Large JPEGs
are decoded at a reduced scale (libjpeg's DCT scaling, Pillow's ``draft``) when the model only needs a
small image, which makes a 12-megapixel phone photo nearly as cheap as a 640x480 one. Other large
images are averaged down right after decoding, before any conversion makes more full-size copies.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

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
# What ImageOps.exif_transpose does for each orientation (which would also copy upright images).
_EXIF_TRANSPOSE: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_HIGH_DEPTH: Final = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
# Modes Image.reduce averages correctly (it premultiplies alpha itself); palette and 1-bit are not among them.
_REDUCIBLE: Final = ("L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV")
_ROWS_PER_BLOCK: Final = 512
_ONE_BYTE_MODES: Final = ("1", "L", "P")
_TWO_BYTE_MODES: Final = ("I;16", "I;16L", "I;16B", "I;16N")
_DECODER_OVERHEAD: Final = 16 << 20
_BMP_RLE: Final = (1, 2)  # BI_RLE8, BI_RLE4: decoded by Pillow in pure Python (a 29 kB file took 17.8 s)


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


def decode_memory(image: Image.Image, full_size: tuple[int, int]) -> int:
    """Bytes that decoding ``image`` (opened, draft already chosen) will allocate, from its header alone.

    Calibrated on 7000x7000 PNGs of every mode and 50-megapixel photos (peak RSS of a decoder process minus
    its baseline and the file; ``python -m tests.hostile.attacks measure`` has the images): Pillow stores
    most modes at 4 bytes a pixel and converts once to RGB(A) at 4 more (RGBA 7.7 bytes a pixel measured);
    palette images are stored at 1 and converted at 4 (4.8), or 8 with transparency (8.6); 16-bit images
    are copied once more for the conversion to 8 bits (6.5); WebP decodes through libwebp's RGBA buffer
    and Pillow's copy (15.7); a progressive JPEG keeps every DCT coefficient of the full-size image, 2 bytes
    each, even when decoded at 1/8 scale. A baseline JPEG decoded at 1/8 scale needs a few MB.
    """
    width, height = image.size
    pixels = width * height
    mode = image.mode
    stored = 1 if mode in _ONE_BYTE_MODES else 2 if mode in _TWO_BYTE_MODES else 4
    per_pixel = stored + 4  # the decoded image, and one RGB(A) conversion of it
    if mode == "P" and "transparency" in image.info:
        per_pixel += 4
    elif mode in _HIGH_DEPTH:
        per_pixel = 2 * stored + 5
    if image.format == "WEBP":
        per_pixel = 16
    estimate = pixels * per_pixel
    if image.format in ("JPEG", "MPO") and image.info.get("progressive"):
        estimate += full_size[0] * full_size[1] * len(image.getbands()) * 2
    return estimate + _DECODER_OVERHEAD


def decode_image(
    data: bytes, limits: ImageLimits, min_short_side: int = 0, reserve: Callable[[int], None] | None = None
) -> DecodedImage:
    """Decode ``data`` into RGB, refusing what is not a supported, intact image within ``limits``.

    ``min_short_side``: the smallest shorter side the caller needs; a JPEG may be decoded at 1/2, 1/4
    or 1/8 scale as long as the result keeps at least that much. ``reserve``, if given, is called with
    the bytes decoding will need (``decode_memory``) once the header is read and before any pixel is; it
    raises to refuse.
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
    if fmt == "BMP" and image.info.get("compression") in _BMP_RLE:
        raise UnsupportedImage(
            "BMP images with RLE compression are not accepted (they decode too slowly). "
            "Send it as a PNG or an uncompressed BMP."
        )
    try:
        if min_short_side and image.format in ("JPEG", "MPO") and image.mode in ("RGB", "L", "CMYK"):
            image.draft(image.mode, (min_short_side, min_short_side))
        if reserve is not None:
            reserve(decode_memory(image, (width, height)))
        image.load()  # the first frame of animations; decodes now so errors surface here
        # After load(): for a PNG, getexif() loads the whole image itself (eXIf may follow the pixels).
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        frame = _shrink(image, min_short_side)
        if (turn := _EXIF_TRANSPOSE.get(orientation)) is not None:
            frame = frame.transpose(turn)
        rgb = _to_rgb(frame)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidImage(
            f"The {fmt} image cannot be decoded ({exc}). The file is truncated or corrupt; send it again."
        ) from None
    if orientation in _SWAPS_AXES:
        width, height = height, width
    return DecodedImage(rgb, fmt, width, height)


def _shrink(image: Image.Image, min_short_side: int) -> Image.Image:
    """A large image averaged down by a whole factor (keeping at least twice ``min_short_side``).

    The JPEG ``draft`` above does this inside libjpeg; other formats are decoded at full size, and this
    keeps every conversion that follows (palette or 16-bit to 8-bit, alpha onto white, EXIF rotation)
    on the small image. Without it a 200 kB PNG of 7000x7000 RGBA pixels, within the pixel limit, made
    the server allocate about a gigabyte.
    """
    factor = min(image.size) // (2 * min_short_side) if min_short_side else 1
    if factor < 2:
        return image
    if image.mode in _HIGH_DEPTH:
        image = Image.fromarray(_to_uint8(np.asarray(image)), "L")
    elif image.mode not in _REDUCIBLE:  # palette, 1-bit, PA: to the true colours first
        image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    return image.reduce(factor)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB. Transparent areas become white, as a browser shows them on a page."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _HIGH_DEPTH:
        return Image.fromarray(_to_uint8(np.asarray(image)), "L").convert("RGB")
    if mode == "P":
        mode = "RGBA" if "transparency" in image.info else "RGB"
        image = image.convert(mode)
        if mode == "RGB":
            return image
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image if mode == "RGBA" else image.convert("RGBA")
        rgb = Image.new("RGB", rgba.size, _WHITE)
        rgb.paste(rgba, mask=rgba)  # blends by alpha, as alpha_composite onto white does, in one buffer
        return rgb
    return image.convert("RGB")


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Grey levels of any depth to 0..255: 16-bit data by its range, anything else stretched if needed.

    Works through the rows in blocks, so a large 16-bit image needs one byte per pixel more, not eight.
    """
    divisor, low, scale = 1.0, 0.0, 1.0
    if pixels.dtype.kind == "u" and pixels.dtype.itemsize == 2:
        divisor = 257.0
    else:
        low, high = float(pixels.min()), float(pixels.max())
        if low < 0 or high > 255:
            if low >= 0 and high <= 65535:
                divisor, low = 257.0, 0.0
            else:
                scale = 255.0 / (high - low or 1.0)
        else:
            low = 0.0
    out = np.empty(pixels.shape, dtype=np.uint8)
    for start in range(0, pixels.shape[0], _ROWS_PER_BLOCK):
        block = pixels[start : start + _ROWS_PER_BLOCK].astype(np.float64)
        if divisor != 1.0:
            block /= divisor
        elif low != 0.0 or scale != 1.0:
            block = (block - low) * scale
        out[start : start + _ROWS_PER_BLOCK] = np.clip(np.rint(block), 0, 255)
    return out
