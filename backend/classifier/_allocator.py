"""How the process's C allocator (glibc) gives memory back to the operating system."""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Final

_M_MMAP_THRESHOLD: Final = -3  # glibc's mallopt parameter


def release_large_buffers_to_the_os() -> None:
    """Make glibc serve allocations of 1 MB or more with mmap, so freed image buffers return to the OS.

    By default glibc raises that threshold as soon as a large buffer is freed, after which decoded
    images (Pillow allocates them in 16 MB blocks) come from per-thread heaps that keep the memory:
    a server that decoded a few large images sat on hundreds of MB it did not use. An explicit
    ``MALLOC_MMAP_THRESHOLD_`` in the environment wins; other C libraries are left alone.

    Called by ``load_classifier`` for ONNX Runtime and OpenVINO only (they allocate from their own arenas;
    serving throughput measured the same either way, and an OpenVINO pass took 6.3 ms with or without
    it). Eager PyTorch allocates its activations with malloc on every forward pass: mapping and unmapping
    them each time made it several times slower, so it is left
    alone (BENCHMARKS.md, "Measurements behind the code").
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return
    mallopt(_M_MMAP_THRESHOLD, 1 << 20)


def return_free_memory() -> None:
    """Give the operating system back the free pages of every malloc arena (``malloc_trim(0)``).

    After a burst of large uploads, bodies grown chunk by chunk leave free but mapped pages in the heap
    and in the I/O threads' arenas: tens of MB stayed resident after a few large uploads, half of it
    returned by a trim. A few milliseconds; call it off the event loop, after large requests end.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return
    malloc_trim(0)
