"""Hostile uploads, made in code (nothing binary is committed): files whose headers promise far more
pixels than they hold, formats Pillow decodes slowly or through outside programs, and a progressive
JPEG whose every one of thousands of scans walks the whole image.

Each function returns the file's bytes. ``python -m tests.frontend.measure_previews`` times the page's
preview of each (see docs/frontend.md).
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, idat: bytes | None = None, alpha: bool = False) -> bytes:
    """An 8-bit RGB (or RGBA) PNG of ``width`` x ``height``: all black rows (compressed by zlib, so small
    on disk), or, with ``idat``, whatever compressed data is given (a few bytes: the header's promise is
    a lie)."""
    channels = 4 if alpha else 3
    if idat is None:
        compressor = zlib.compressobj(9)
        row = b"\x00" * (1 + channels * width)  # filter byte 0, then black pixels
        parts = [compressor.compress(row) for _ in range(height)]
        idat = b"".join(parts) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 6 if alpha else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def png_claiming(width: int, height: int) -> bytes:
    """A 100-byte PNG whose IHDR claims ``width`` x ``height`` (60000 x 60000 is 3.6 gigapixels)."""
    return png(width, height, idat=zlib.compress(b"\x00" * 64))


def gif_claiming(width: int, height: int) -> bytes:
    """A GIF whose logical screen and only image claim ``width`` x ``height`` (at most 65535 each)."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    lzw = b"\x02\x02\x44\x01\x00"  # minimum code size 2, one sub-block: a clear code and a pixel, then EOI
    return screen + descriptor + lzw + b"\x3b"


def bmp_rle8(width: int, height: int) -> bytes:
    """A BMP with RLE8 compression: one pixel and an end-of-line escape per row, four bytes on disk, which
    Pillow's pure-Python RLE decoder pads out one byte at a time (seconds for a few thousand rows)."""
    pixels = b"\x01\x00\x00\x00" * height + b"\x00\x01"  # a pixel and end of line per row, end of bitmap
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return header + info + palette + pixels


def eps() -> bytes:
    """An Encapsulated PostScript file: Pillow would hand it to Ghostscript (an outside program) to draw."""
    return (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n%%EndComments\n"
        b"newpath 10 10 moveto 90 90 lineto stroke showpage\n%%EOF\n"
    )


def tiff(width: int, height: int) -> bytes:
    """A real (black, deflate-compressed) TIFF of ``width`` x ``height``."""
    out = io.BytesIO()
    Image.new("L", (width, height)).save(out, "TIFF", compression="tiff_deflate")
    return out.getvalue()


def webp(width: int, height: int) -> bytes:
    """A real (black, lossless) WebP of ``width`` x ``height`` (WebP allows at most 16383 x 16383)."""
    out = io.BytesIO()
    Image.new("RGB", (width, height)).save(out, "WEBP", lossless=True, quality=0, method=0)
    return out.getvalue()


def jpeg(width: int, height: int, quality: int = 90) -> bytes:
    """A real baseline JPEG of ``width`` x ``height`` with some detail (a gradient)."""
    gradient = Image.linear_gradient("L").resize((width, height))
    out = io.BytesIO()
    Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT), gradient)).save(
        out, "JPEG", quality=quality
    )
    return out.getvalue()


class _Bits:
    """Huffman-coded bits for a JPEG scan, with the 0xFF byte stuffing the format requires."""

    def __init__(self) -> None:
        self.bits: list[int] = []

    def add(self, value: int, length: int) -> None:
        self.bits.extend((value >> shift) & 1 for shift in range(length - 1, -1, -1))

    def data(self) -> bytes:
        bits = self.bits + [1] * (-len(self.bits) % 8)  # pad with one bits
        out = bytearray()
        for i in range(0, len(bits), 8):
            byte = int("".join(map(str, bits[i : i + 8])), 2)
            out.append(byte)
            if byte == 0xFF:
                out.append(0)
        return bytes(out)


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def progressive_jpeg(width: int, height: int, scans: int) -> bytes:
    """A grayscale progressive JPEG with one DC scan and then ``scans`` AC scans.

    Each AC scan is a handful of bytes (runs of 32767 empty blocks, ``EOB14``), yet a decoder walks every
    8x8 block of the image for each: ``scans`` times the work of a normal picture, at any decoding scale.
    """
    blocks = ((width + 7) // 8) * ((height + 7) // 8)
    quantization = _segment(0xDB, b"\x00" + bytes([1] * 64))
    frame = _segment(0xC2, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
    # One code of length 1 in each table: DC category 0 (no change), AC "EOB14" (a run of empty blocks).
    tables = _segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00") + _segment(
        0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\xe0"
    )
    dc = _Bits()
    for _ in range(blocks):
        dc.add(0, 1)
    out = [b"\xff\xd8", quantization, frame, tables, _segment(0xDA, b"\x01\x01\x00\x00\x00\x00"), dc.data()]
    ac = _Bits()
    remaining = blocks
    while remaining > 0:  # runs of 16384 to 32767 blocks: EOB14's code, then 14 bits for the run's rest
        run = min(max(remaining, 1 << 14), 32767)
        ac.add(0, 1)
        ac.add(run - (1 << 14), 14)
        remaining -= run
    ac_scan = _segment(0xDA, b"\x01\x01\x00\x01\x3f\x00") + ac.data()
    out.extend([ac_scan] * scans)
    out.append(b"\xff\xd9")
    return b"".join(out)
