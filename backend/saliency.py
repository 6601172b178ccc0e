"""Where in an image the model sees a class: occlusion sensitivity, on any runtime, through the batcher.

The method needs nothing but the model's probabilities (no gradients: the serving image has no torch), so it
runs on the ONNX Runtime and OpenVINO exports as served. The model's input crop (``uint8 (H, W, 3)``, what
``Preprocessing`` makes) is cut into ``grid`` x ``grid`` cells; for each cell, a copy of the crop with that
cell painted the normalisation's mean colour (the model's "zero" input) is classified, and the cell's score
is how much the class's probability drops (Zeiler and Fergus, 2014, "Visualizing and Understanding
Convolutional Networks"). A cell whose loss costs the class most is where the model looked.

Why occlusion and not RISE (Petsiuk et al., 2018): RISE averages hundreds to thousands of random masks per
image for a stable map; occlusion with non-overlapping cells needs ``grid**2`` passes (49 at the default,
a few hundred milliseconds on 2 CPUs: BENCHMARKS.md) and its scores are plain probability drops a person can
read. Cells the size of the default (32 px of 224) put the hottest cell on the object in the test photos
(tests/backend/test_explain.py); windows 1.5 and 2 cells wide, overlapping, were tried on the same photos
(a scratch script, painting ImageNet's mean colour rather than the embedded model's grey 127): they moved the
rocket's hottest cell off the rocket at grid 7 and gained little elsewhere.

The masked crops are made one chunk at a time and go through ``infer``, the service's own admission control
and batcher (``ModelService.classify_pixels``): an explanation counts as the many images it runs.

Nothing here imports FastAPI: ``backend.routes.explain`` is the HTTP side.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import Image

from backend.classifier import Preprocessing

MIN_GRID: Final = 4
MAX_GRID: Final = 14
DEFAULT_GRID: Final = 7
HEATMAP_MAX_SIDE: Final = 256  # the heat map PNG's longer side at most (it is laid over a preview, not a print)

# The colour map: matplotlib's "turbo" (blue for little influence, red for the most), sampled at 11 even
# steps and interpolated linearly between them. matplotlib is not in the serving image (about 40 MB
# installed for this one table); tests/backend/test_explain.py checks the samples against it.
TURBO: Final = (
    (48, 18, 59),
    (69, 89, 203),
    (62, 155, 254),
    (25, 213, 205),
    (70, 248, 132),
    (164, 252, 60),
    (225, 221, 55),
    (254, 164, 49),
    (240, 91, 18),
    (195, 37, 3),
    (122, 4, 3),
)
# Opacity inside the crop: cells of little influence stay see-through, the strongest are mostly colour.
MIN_ALPHA: Final = 0.25
MAX_ALPHA: Final = 0.75

Infer = Callable[[Sequence[np.ndarray]], Awaitable[list[np.ndarray]]]


class InvalidClass(Exception):
    """The class asked for is not one of the model's (its HTTP answer: ``backend.errors``)."""

    code = "invalid_class"

    def __init__(self, index: int, classes: int) -> None:
        self.message = f"class_index {index} is not a class of this model: it has classes 0 to {classes - 1}."
        super().__init__(self.message)


@dataclass(frozen=True)
class CropBox:
    """Where the model's input crop lies on the original image (after EXIF orientation), in its pixels."""

    left: float
    top: float
    right: float
    bottom: float


@dataclass(frozen=True)
class Saliency:
    class_index: int
    probability: float  # of the whole crop, unmasked
    drops: np.ndarray  # (grid, grid): probability with the cell masked subtracted from ``probability``
    scores: np.ndarray  # (grid, grid): the positive drops divided by the largest, 0..1 (all 0 if none is positive)

    @property
    def grid(self) -> int:
        return int(self.drops.shape[0])


def fill_colour(preprocessing: Preprocessing) -> np.ndarray:
    """The mean colour of the normalisation as ``uint8``: what the model sees as zero input."""
    return np.array([round(255 * m) for m in preprocessing.mean], dtype=np.uint8)


def crop_box(preprocessing: Preprocessing, width: int, height: int) -> CropBox:
    """The centre crop of ``Preprocessing`` mapped back onto a ``width`` x ``height`` image.

    The decoder may have decoded a large JPEG at a reduced scale first (``_images.decode_image``); the crop's
    place differs from this by under a pixel of that scale."""
    new_w, new_h = preprocessing.resized_size(width, height)
    crop = preprocessing.crop_size
    top = round((new_h - crop) / 2.0)
    left = round((new_w - crop) / 2.0)
    sx, sy = width / new_w, height / new_h
    return CropBox(left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)


def cell_edges(size: int, grid: int) -> list[int]:
    """Where the cells of a ``grid`` split ``size`` pixels begin and end (``grid + 1`` edges, 0 to size)."""
    return [round(i * size / grid) for i in range(grid + 1)]


def occluded(pixels: np.ndarray, grid: int, fill: np.ndarray, cells: range) -> Iterator[np.ndarray]:
    """Copies of ``pixels`` with one cell each painted ``fill``; cells are numbered row by row."""
    rows, cols = cell_edges(pixels.shape[0], grid), cell_edges(pixels.shape[1], grid)
    for cell in cells:
        r, c = divmod(cell, grid)
        masked = pixels.copy()
        masked[rows[r] : rows[r + 1], cols[c] : cols[c + 1]] = fill
        yield masked


def scores_from(probability: float, masked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(drops, scores) from the class's probability unmasked and with each cell masked."""
    drops = probability - masked
    top = float(drops.max(initial=0.0))
    scores = np.clip(drops, 0.0, None) / top if top > 0 else np.zeros_like(drops)
    return drops, scores


async def occlusion(
    pixels: np.ndarray,
    class_index: int,
    probability: float,
    *,
    grid: int,
    fill: np.ndarray,
    infer: Infer,
    chunk: int,
) -> Saliency:
    """Occlusion sensitivity of ``class_index`` on the crop ``pixels`` (whose probability is ``probability``).

    The ``grid**2`` masked crops go to ``infer`` ``chunk`` at a time, one chunk after the other: no more
    than ``chunk`` of an explanation's images are ever admitted at once, and each chunk passes admission
    on its own (``infer`` raises to refuse; the explanation then stops there)."""
    if not MIN_GRID <= grid <= MAX_GRID:
        raise ValueError(f"grid must be {MIN_GRID} to {MAX_GRID}, got {grid}")
    total = grid * grid
    masked_probabilities = np.empty(total, dtype=np.float64)
    for start in range(0, total, max(1, chunk)):
        cells = range(start, min(total, start + max(1, chunk)))
        rows = await infer(list(occluded(pixels, grid, fill, cells)))
        masked_probabilities[cells.start : cells.stop] = [float(row[class_index]) for row in rows]
    drops, scores = scores_from(probability, masked_probabilities.reshape(grid, grid))
    return Saliency(class_index, probability, drops, scores)


def heatmap_size(width: int, height: int, max_side: int = HEATMAP_MAX_SIDE) -> tuple[int, int]:
    """The heat map's size: the original's aspect, its longer side ``max_side`` at most (never 0)."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def colourize(scores: np.ndarray) -> np.ndarray:
    """``uint8`` RGBA for scores in 0..1: the colour map, and opacity growing with the score."""
    stops = np.linspace(0.0, 1.0, len(TURBO))
    table = np.asarray(TURBO, dtype=np.float64)
    s = np.clip(scores, 0.0, 1.0)
    rgba = np.empty((*s.shape, 4), dtype=np.uint8)
    for channel in range(3):
        rgba[..., channel] = np.rint(np.interp(s, stops, table[:, channel]))
    rgba[..., 3] = np.rint(255 * (MIN_ALPHA + (MAX_ALPHA - MIN_ALPHA) * s))
    return rgba


def heatmap_png(scores: np.ndarray, box: CropBox, width: int, height: int) -> tuple[bytes, int, int]:
    """A PNG laid out like the original ``width`` x ``height`` image (scaled to ``heatmap_size``): the scores,
    smoothly upsampled, coloured over the crop box, fully transparent outside it. Returns (PNG, width, height)."""
    out_w, out_h = heatmap_size(width, height)
    sx, sy = out_w / width, out_h / height
    left, top = round(box.left * sx), round(box.top * sy)
    right, bottom = max(left + 1, round(box.right * sx)), max(top + 1, round(box.bottom * sy))
    right, bottom = min(right, out_w), min(bottom, out_h)
    left, top = min(left, right - 1), min(top, bottom - 1)
    grid = Image.fromarray(np.ascontiguousarray(scores, dtype=np.float32), "F")
    upsampled = np.asarray(grid.resize((right - left, bottom - top), Image.Resampling.BILINEAR))
    canvas = np.zeros((out_h, out_w, 4), dtype=np.uint8)
    canvas[top:bottom, left:right] = colourize(upsampled)
    buffer = io.BytesIO()
    Image.fromarray(canvas, "RGBA").save(buffer, "PNG", optimize=False, compress_level=6)
    return buffer.getvalue(), out_w, out_h
