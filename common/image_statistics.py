"""The prediction log's four image statistics, from the model's input crop (``uint8`` RGB, ``(H, W, 3)``).

Definitions (``common.prediction_log`` lists them with the columns): luma is ITU-R BT.601's
``0.299 R + 0.587 G + 0.114 B``; ``brightness`` its mean, ``contrast`` its standard deviation;
``colourfulness`` Hasler and Süsstrunk's (2003) ``sqrt(var(rg) + var(yb)) + 0.3 * sqrt(mean(rg)² + mean(yb)²)``
with ``rg = R - G`` and ``yb = (R + G) / 2 - B``; ``sharpness`` the variance of the luma's 4-neighbour Laplacian
``L[y-1,x] + L[y+1,x] + L[y,x-1] + L[y,x+1] - 4 L[y,x]`` over the interior pixels (no border padding).
Variances and standard deviations are population ones (``ddof=0``), as ``numpy.var``.

Numpy only (no pyarrow, no Pillow): the backend's decoder processes import it, and so may anything that builds
a reference set from sample photos. Written here rather than taken from a library: OpenCV's ``Laplacian`` and
scikit-image's ``laplace`` pad the border (another value), and neither has colourfulness. Written for speed,
as it runs once per classified image (in the decoder processes, beside the decode): the first three come
exactly from the channel sums and the 3x3 sums of products of R, G and B (integers below 2**53: exact in
float64 in any order), not from float arrays of luma and opponent colours; the Laplacian runs on 1000 x luma
in float32 (integers below 2**24: exact). Measured on a 224x224 crop, one thread, load average 3-7: 0.3-0.5 ms
of CPU against 1.5-1.8 ms for the definitions written as float64 arrays (tests/monitoring compares the two).
"""

from __future__ import annotations

import math
import threading
from typing import NamedTuple

import numpy as np

__all__ = ["ImageStatistics", "image_statistics"]

# Columns: the luma, rg and yb weights of R, G and B.
_OPPONENT = np.array([[0.299, 1.0, 0.5], [0.587, -1.0, 0.5], [0.114, 0.0, -1.0]])


class ImageStatistics(NamedTuple):
    brightness: float
    contrast: float
    colourfulness: float
    sharpness: float


def image_statistics(crop: np.ndarray) -> ImageStatistics:
    """The four statistics of a ``uint8`` ``(H, W, 3)`` RGB crop (H, W >= 1)."""
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) array, got {crop.dtype} {crop.shape}")
    height, width, _ = crop.shape
    n = height * width
    space = _workspace(height, width)
    # Sums of R, G, B and of their products R*R, R*G, ...: integers below 2**53, so exact in float64 whatever
    # order they are added in. Dot products of contiguous planes (planes @ planes.T took 6 times as long),
    # with numpy's own loops (einsum): BLAS's woke its thread pool in every decoder process, which tripled
    # the CPU time on a busy machine.
    planes = space.planes
    np.copyto(planes, crop.reshape(n, 3).T)
    sums = planes.sum(axis=1)
    products = np.empty((3, 3))
    for i in range(3):
        for j in range(i, 3):
            products[i, j] = products[j, i] = np.einsum("i,i->", planes[i], planes[j])
    mean = sums / n
    covariance = products / n - np.outer(mean, mean)
    opponent_mean = mean @ _OPPONENT  # luma, rg, yb
    opponent_var = np.maximum(((covariance @ _OPPONENT) * _OPPONENT).sum(axis=0), 0.0)
    return ImageStatistics(
        brightness=float(opponent_mean[0]),
        contrast=math.sqrt(opponent_var[0]),
        colourfulness=math.sqrt(opponent_var[1] + opponent_var[2])
        + 0.3 * math.hypot(opponent_mean[1], opponent_mean[2]),
        sharpness=_sharpness(height, width, space),
    )


class _Workspace:
    """Arrays reused from one image to the next: fresh ones of this size are fresh pages from the kernel
    (``mmap``), and faulting them in took longer than the arithmetic (1.3 ms a crop instead of 0.5)."""

    def __init__(self, height: int, width: int) -> None:
        n = height * width
        self.shape = (height, width)
        self.planes = np.empty((3, n))
        self.luma = np.empty(n, np.float32)
        self.scratch = np.empty(n, np.float32)
        interior = max(height - 2, 0) * width
        self.rows = np.empty(interior, np.float32)
        self.centre = np.empty(interior, np.float32)
        self.exact = np.empty(interior)


_local = threading.local()  # one workspace per thread (and per process: decoder processes each have theirs)


def _workspace(height: int, width: int) -> _Workspace:
    space: _Workspace | None = getattr(_local, "space", None)
    if space is None or space.shape != (height, width):
        space = _local.space = _Workspace(height, width)
    return space


def _sharpness(height: int, width: int, space: _Workspace) -> float:
    """Variance of the luma's 4-neighbour Laplacian over the interior pixels.

    On 1000 times the luma (299 R + 587 G + 114 B), an integer below 2**24, as is its Laplacian: exact in
    float32, which is twice as fast as float64; summed in float64. Computed on whole rows 1 .. height-2 as one
    contiguous run (neighbours at offsets -1, +1, -width, +width), then the first and last column, whose left
    or right neighbour wrapped to another row, are taken out of the sums: strided 2-D slices took three times
    as long.
    """
    if height < 3 or width < 3:
        return 0.0  # no interior pixel
    n = height * width
    luma = np.multiply(space.planes[0], 299.0, out=space.luma)  # the planes hold the crop (image_statistics)
    luma += np.multiply(space.planes[1], 587.0, out=space.scratch)
    luma += np.multiply(space.planes[2], 114.0, out=space.scratch)
    rows = np.add(luma[: n - 2 * width], luma[2 * width :], out=space.rows)  # above + below
    rows += luma[width - 1 : n - width - 1]  # left
    rows += luma[width + 1 : n - width + 1]  # right
    rows -= np.multiply(luma[width : n - width], 4.0, out=space.centre)
    exact = space.exact
    np.copyto(exact, rows)
    edges = exact.reshape(height - 2, width)[:, :: width - 1]  # columns 0 and width-1
    count = (height - 2) * (width - 2)
    mean = float(exact.sum() - edges.sum()) / count
    squares = float(np.einsum("i,i->", exact, exact) - np.einsum("ij,ij->", edges, edges))
    return max(squares / count - mean * mean, 0.0) / 1e6
