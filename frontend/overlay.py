"""An explanation's heat map laid over the image's preview, and its legend: Pillow, without Streamlit.

The preview is this page's own (``frontend.previews`` made it in a worker process: a JPEG or PNG of at most
640 x 640 pixels); the heat map is the backend's PNG, of the original's aspect (``POST /explain``), read only
as a PNG and only when its header gives a size within ``MAX_HEATMAP_SIDE``. Both are small, so the page's
process composes them itself (a few milliseconds).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Final

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_HEATMAP_SIDE: Final = 1024  # the backend sends 256 at most
_PREVIEW_FORMATS: Final = ("JPEG", "PNG")


class OverlayError(Exception):
    """The heat map (or the preview) cannot be read; the message says why (for the logs)."""


def _open(data: bytes, formats: tuple[str, ...], max_side: int) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=formats)
        if max(image.size) > max_side or min(image.size) < 1:
            raise OverlayError(f"an image of {image.size[0]} x {image.size[1]} pixels")
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise OverlayError(f"unreadable ({type(exc).__name__})") from exc
    return image


def overlay(preview: bytes, heatmap_png: bytes) -> bytes:
    """The preview with the heat map stretched over it (the same aspect: both are of the upright original) and
    alpha-blended, as a JPEG."""
    heat = _open(heatmap_png, ("PNG",), MAX_HEATMAP_SIDE).convert("RGBA")
    photo = _open(preview, _PREVIEW_FORMATS, 2 * MAX_HEATMAP_SIDE).convert("RGBA")
    blended = Image.alpha_composite(photo, heat.resize(photo.size, Image.Resampling.BILINEAR))
    out = io.BytesIO()
    blended.convert("RGB").save(out, "JPEG", quality=88)
    return out.getvalue()


def colour_bar(colormap: Sequence[tuple[int, int, int]], width: int = 320, height: int = 14) -> bytes:
    """The legend: the heat map's colours from least (left) to most influence (right), as a PNG."""
    stops = np.linspace(0.0, 1.0, len(colormap))
    table = np.asarray(colormap, dtype=np.float64)
    x = np.linspace(0.0, 1.0, width)
    row = np.stack([np.interp(x, stops, table[:, channel]) for channel in range(3)], axis=-1)
    pixels = np.rint(np.repeat(row[np.newaxis], height, axis=0)).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "PNG")
    return out.getvalue()
