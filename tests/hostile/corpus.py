"""A corpus of hostile, broken and odd uploads, generated (never committed as binaries).

Every case is a complete HTTP request to ``POST /predict`` (query, headers, body) plus what a correct
server answers: an allowed set of status codes, the error ``code`` when one is expected, and for valid
images made from a real photo whether the top-1 class must be a cat (or must not be, to prove which
frame of an animation was classified).

``python -m tests.hostile.corpus OUT_DIR`` writes every body to ``OUT_DIR`` (with a ``cases.json``
index), to replay the cases by hand with curl.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import random
import struct
import sys
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal, cast

import numpy as np
from PIL import Image

from tests.helpers import CAT, COFFEE

Expect = Literal["cat", "not_cat"]
BOUNDARY = "hostile-corpus-boundary-7d41"
BOMB_SIDE = 60_000  # 3.6 gigapixels claimed: a ~10 GB RGB buffer if a server believed it
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # the default of MAX_IMAGE_BYTES in backend/config.py


@dataclass(frozen=True)
class Part:
    """One multipart part, written byte for byte as given (names are not escaped on purpose)."""

    data: bytes
    name: str | None = "file"
    filename: str | None = "image.jpg"
    content_type: str | None = "image/jpeg"
    raw_disposition: bytes | None = None  # overrides the Content-Disposition header entirely


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    query: str = ""
    statuses: frozenset[int] = frozenset({200})
    code: str | None = None  # the error code the answer must carry
    label: Expect | None = None  # for 200s: top-1 must (not) be a cat class
    filename: str | None = None  # for 200s with checks_filename: the sanitised name the answer must echo
    checks_filename: bool = False
    size: tuple[int, int] | None = None  # for 200s: width, height the answer must report
    bomb: bool = False  # claims or holds a huge pixel count (used by the memory test)
    route: str = "/predict"  # the protocols' cases (build_protocol_corpus) post elsewhere

    @property
    def path(self) -> str:
        return self.route + (f"?{self.query}" if self.query else "")


def multipart(parts: Iterable[Part], boundary: str = BOUNDARY) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body built by hand, so that odd names and headers reach the server as written."""
    out = io.BytesIO()
    for part in parts:
        out.write(f"--{boundary}\r\n".encode())
        if part.raw_disposition is not None:
            out.write(b"Content-Disposition: " + part.raw_disposition + b"\r\n")
        else:
            disposition = "form-data"
            if part.name is not None:
                disposition += f'; name="{part.name}"'
            if part.filename is not None:
                disposition += f'; filename="{part.filename}"'
            out.write(f"Content-Disposition: {disposition}\r\n".encode())
        if part.content_type is not None:
            out.write(f"Content-Type: {part.content_type}\r\n".encode())
        out.write(b"\r\n" + part.data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


# --- images made from real photos ----------------------------------------------------------------


@cache
def cat() -> Image.Image:
    return Image.open(CAT).convert("RGB")  # 451x300


@cache
def coffee() -> Image.Image:
    return Image.open(COFFEE).convert("RGB")


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def cat_jpeg() -> bytes:
    return encode(cat(), "JPEG", quality=90)


def cat_png() -> bytes:
    return encode(cat(), "PNG")


def exif_rotated_cat() -> bytes:
    """The cat stored on its side, with EXIF orientation 6 ("rotate 90 degrees clockwise to display")."""
    sideways = cat().transpose(Image.Transpose.ROTATE_90)  # counter-clockwise: 300x451 as stored
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(sideways, "JPEG", quality=90, exif=exif.tobytes())


def png16_cat() -> bytes:
    grey = np.asarray(cat().convert("L"), dtype=np.uint16) * 257  # the full 16-bit range
    image = Image.fromarray(grey.astype(np.uint16))
    assert image.mode in ("I;16", "I;16L", "I"), image.mode
    data = encode(image, "PNG")
    assert data[24] == 16, "bit depth in IHDR"  # really a 16-bit PNG on the wire
    return data


def palette_cat(transparent: bool) -> bytes:
    image = cat().quantize(256)
    if transparent:
        image.info["transparency"] = 0  # palette entry 0 is see-through (tRNS chunk)
        return encode(image, "PNG", transparency=0)
    return encode(image, "PNG")


def alpha_cat(mode: Literal["LA", "RGBA"]) -> bytes:
    base = cat().convert("L" if mode == "LA" else "RGB")
    alpha = Image.new("L", base.size, 255)
    alpha.paste(0, (0, 0, 40, 40))  # a small fully transparent corner
    base.putalpha(alpha)
    assert base.mode == mode
    return encode(base, "PNG")


def animation(fmt: str, first: Image.Image, second: Image.Image) -> bytes:
    frames = [first, second.resize(first.size)]
    params: dict[str, object] = {"save_all": True, "append_images": frames[1:]}
    if fmt == "GIF":
        params.update(duration=200, loop=0)
    elif fmt == "WEBP":
        params.update(duration=200, loop=0, quality=90)
    data = encode(frames[0], fmt, **params)
    with Image.open(io.BytesIO(data)) as check:
        assert getattr(check, "n_frames", 1) == 2, f"{fmt} animation has {getattr(check, 'n_frames', 1)} frames"
    return data


def aspect(width: int, height: int) -> bytes:
    return encode(cat().resize((width, height), Image.Resampling.BILINEAR), "PNG")


# --- broken and malicious files ------------------------------------------------------------------


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_bomb(fix_crc: bool = True) -> bytes:
    """A real 64x64 PNG whose IHDR is patched to claim 60000x60000 (with the chunk CRC recomputed)."""
    data = bytearray(encode(cat().resize((64, 64)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", BOMB_SIDE, BOMB_SIDE)
    if fix_crc:
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def jpeg_header_bomb() -> bytes:
    """A real 64x64 JPEG whose SOF0 frame header is patched to claim 60000x60000."""
    data = bytearray(encode(cat().resize((64, 64)), "JPEG", quality=80))
    index = 2
    while index < len(data):
        assert data[index] == 0xFF, "walked off the JPEG markers"
        marker = data[index + 1]
        length = struct.unpack(">H", data[index + 2 : index + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):  # SOF: length, precision, height, width
            data[index + 5 : index + 9] = struct.pack(">HH", BOMB_SIDE, BOMB_SIDE)
            return bytes(data)
        index += 2 + length
    raise AssertionError("no SOF marker found")


def gif_header_bomb() -> bytes:
    """A real 64x64 GIF whose logical screen and image descriptor claim 60000x60000."""
    data = bytearray(encode(cat().resize((64, 64)).quantize(64), "GIF"))
    data[6:10] = struct.pack("<HH", BOMB_SIDE, BOMB_SIDE)
    descriptor = data.index(b"\x2c")  # image separator, after the global colour table
    data[descriptor + 5 : descriptor + 9] = struct.pack("<HH", BOMB_SIDE, BOMB_SIDE)
    return bytes(data)


PNG_CHANNELS: dict[int, int] = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type: grey, RGB, palette, LA, RGBA


def png_zeros(width: int, height: int, color_type: int = 0, bit_depth: int = 8, extra_chunks: bytes = b"") -> bytes:
    """A genuine ``width`` x ``height`` PNG of zeros: it compresses about 1000:1 (a real decompression bomb)."""
    row = b"\x00" * (width * PNG_CHANNELS[color_type] * bit_depth // 8 + 1)  # filter byte + pixels
    compressor = zlib.compressobj(9)
    chunks = [compressor.compress(row * 256) for _ in range(height // 256)]
    chunks += [compressor.compress(row * (height % 256)), compressor.flush()]
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + extra_chunks
        + _png_chunk(b"IDAT", b"".join(chunks))
        + _png_chunk(b"IEND", b"")
    )


def grey_palette(transparent: bool) -> bytes:
    """PLTE (and tRNS) chunks for a palette PNG: 256 greys, entry 0 see-through if ``transparent``."""
    chunks = _png_chunk(b"PLTE", bytes(v for v in range(256) for _ in range(3)))
    return chunks + (_png_chunk(b"tRNS", b"\x00") if transparent else b"")


def png_idat_overflow() -> bytes:
    """A 100x100 PNG whose image data inflates to 100 MB: far more than its header says it needs."""
    compressor = zlib.compressobj(9)
    payload = b"".join(compressor.compress(b"\x00" * 1_000_000) for _ in range(100)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", 100, 100, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", payload) + _png_chunk(b"IEND", b"")


def png_ztxt_bomb() -> bytes:
    """A small valid PNG carrying a compressed text chunk that inflates to 200 MB."""
    data = cat_png()
    compressor = zlib.compressobj(9)
    text = b"".join(compressor.compress(b"A" * 1_000_000) for _ in range(200)) + compressor.flush()
    chunk = _png_chunk(b"zTXt", b"Comment\x00\x00" + text)
    return data[:33] + chunk + data[33:]  # right after IHDR


def truncated(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


SVG = b"""<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="100000">
  <script>alert(1)</script><rect width="100%" height="100%" fill="red"/>
</svg>
"""
HTML = b"<!doctype html><html><body><img src=x onerror=alert(1)><h1>not a cat</h1></body></html>\n"
TEXT = b"This is a text file that was renamed to cat.jpg.\n" * 20


def _raw(data: bytes, content_type: str | None = "image/jpeg") -> dict[str, object]:
    return {"body": data, "headers": {"Content-Type": content_type} if content_type is not None else {}}


def _form(*parts: Part) -> dict[str, object]:
    body, headers = multipart(parts)
    return {"body": body, "headers": headers}


def build_corpus() -> list[Case]:
    """Every case, generated deterministically (seeded) from scikit-image's sample photos."""
    rng = random.Random(20240613)
    random_bytes = rng.randbytes(64 * 1024)
    jpeg, png = cat_jpeg(), cat_png()
    width, height = cat().size
    cases: list[Case] = []

    def add(name: str, description: str, request: dict[str, object], **expect: object) -> None:
        expect.setdefault("checks_filename", "filename" in expect)
        cases.append(Case(name, description, **request, **expect))  # type: ignore[arg-type]

    # --- not images at all
    add("empty_body", "raw body of 0 bytes", _raw(b""), statuses=frozenset({400}), code="no_image")
    add(
        "empty_file_part",
        "multipart 'file' part of 0 bytes",
        _form(Part(b"")),
        statuses=frozenset({400}),
        code="empty_file",
    )
    add(
        "random_bytes",
        "64 KiB of random bytes named .jpg",
        _form(Part(random_bytes)),
        statuses=frozenset({415}),
        code="unsupported_image",
    )
    add(
        "text_as_jpg",
        "a text file named cat.jpg",
        _form(Part(TEXT, filename="cat.jpg")),
        statuses=frozenset({415}),
        code="unsupported_image",
    )
    add(
        "html_as_jpg",
        "an HTML page with a script, named .jpg",
        _form(Part(HTML)),
        statuses=frozenset({415}),
        code="unsupported_image",
    )
    add(
        "svg_as_jpg",
        "an SVG (100000x100000, with a script) named .jpg",
        _form(Part(SVG, content_type="image/svg+xml")),
        statuses=frozenset({415}),
        code="unsupported_image",
    )
    add(
        "json_body",
        "a JSON document as the body",
        _raw(b'{"file": "cat.jpg"}', "application/json"),
        statuses=frozenset({415}),
        code="unsupported_image",
    )
    add(
        "pdf_magic",
        "a PDF header",
        _raw(b"%PDF-1.7\n" + random_bytes[:2000], "application/pdf"),
        statuses=frozenset({415}),
        code="unsupported_image",
    )

    # --- broken images
    add(
        "truncated_jpeg",
        "the cat JPEG cut at half its length",
        _form(Part(truncated(jpeg, 0.5))),
        statuses=frozenset({400}),
        code="invalid_image",
    )
    add(
        "truncated_png",
        "the cat PNG cut at half its length",
        _form(Part(truncated(png, 0.5), filename="cat.png", content_type="image/png")),
        statuses=frozenset({400}),
        code="invalid_image",
    )
    add(
        "jpeg_header_only",
        "the first 300 bytes of a JPEG",
        _form(Part(jpeg[:300])),
        statuses=frozenset({400}),
        code="invalid_image",
    )
    add(
        "png_signature_only",
        "the 8-byte PNG signature and nothing else",
        _raw(png[:8], "image/png"),
        statuses=frozenset({400, 415}),
    )
    add(
        "png_bad_crc",
        "PNG with IHDR patched to 60000x60000 and the CRC left wrong",
        _raw(png_header_bomb(fix_crc=False), "image/png"),
        statuses=frozenset({400, 415}),
    )
    corrupt = bytearray(jpeg)
    for offset in range(len(corrupt) // 3, len(corrupt) * 2 // 3, 97):
        corrupt[offset] = rng.randrange(256)
    add(
        "jpeg_corrupted_middle",
        "the cat JPEG with bytes overwritten in its entropy-coded data",
        _form(Part(bytes(corrupt))),
        statuses=frozenset({200, 400}),
    )

    # --- decompression bombs
    add(
        "png_bomb_header",
        "real 64x64 PNG, IHDR patched to 60000x60000 (CRC fixed)",
        _raw(png_header_bomb(), "image/png"),
        statuses=frozenset({413}),
        code="image_too_large",
        bomb=True,
    )
    add(
        "jpeg_bomb_header",
        "real 64x64 JPEG, SOF patched to 60000x60000",
        _raw(jpeg_header_bomb()),
        statuses=frozenset({413}),
        code="image_too_large",
        bomb=True,
    )
    add(
        "gif_bomb_header",
        "real 64x64 GIF, screen and frame patched to 60000x60000",
        _raw(gif_header_bomb(), "image/gif"),
        statuses=frozenset({413}),
        code="image_too_large",
        bomb=True,
    )
    add(
        "png_bomb_zeros",
        "a real 12000x12000 greyscale PNG of zeros (~140 KB that inflate to 144 MB)",
        _raw(png_zeros(12_000, 12_000), "image/png"),
        statuses=frozenset({413}),
        code="image_too_large",
        bomb=True,
    )
    add(
        "png_idat_overflow",
        "a 100x100 PNG whose pixel data inflates to 100 MB",
        _raw(png_idat_overflow(), "image/png"),
        statuses=frozenset({200, 400}),
        bomb=True,
    )
    add(
        "png_ztxt_bomb",
        "the cat PNG with a zTXt chunk inflating to 200 MB",
        _raw(png_ztxt_bomb(), "image/png"),
        statuses=frozenset({200, 400}),
        bomb=True,
    )

    # --- odd but valid images
    add(
        "one_pixel",
        "a 1x1 PNG",
        _raw(encode(Image.new("RGB", (1, 1), (200, 120, 40)), "PNG"), "image/png"),
        size=(1, 1),
    )
    add("aspect_wide", "the cat squeezed to 10000x10", _raw(aspect(10_000, 10), "image/png"), size=(10_000, 10))
    add("aspect_tall", "the cat squeezed to 10x10000", _raw(aspect(10, 10_000), "image/png"), size=(10, 10_000))
    add(
        "png_16bit",
        "the cat as a 16-bit greyscale PNG (mode I;16)",
        _raw(png16_cat(), "image/png"),
        label="cat",
        size=(width, height),
    )
    add(
        "jpeg_cmyk",
        "the cat as a CMYK JPEG",
        _raw(encode(cat().convert("CMYK"), "JPEG", quality=90)),
        label="cat",
        size=(width, height),
    )
    add(
        "png_palette",
        "the cat as a 256-colour palette PNG (mode P)",
        _raw(palette_cat(False), "image/png"),
        label="cat",
        size=(width, height),
    )
    add(
        "png_palette_transparent",
        "palette PNG with a transparent entry (tRNS)",
        _raw(palette_cat(True), "image/png"),
        label="cat",
        size=(width, height),
    )
    add(
        "png_la",
        "the cat as greyscale with alpha (LA)",
        _raw(alpha_cat("LA"), "image/png"),
        label="cat",
        size=(width, height),
    )
    add(
        "png_rgba",
        "the cat as RGBA with a transparent corner",
        _raw(alpha_cat("RGBA"), "image/png"),
        label="cat",
        size=(width, height),
    )
    add(
        "gif_animated",
        "2-frame GIF: cat, then coffee",
        _raw(animation("GIF", cat(), coffee()), "image/gif"),
        label="cat",
        size=(width, height),
    )
    add(
        "gif_animated_coffee_first",
        "2-frame GIF: coffee, then cat",
        _raw(animation("GIF", coffee(), cat()), "image/gif"),
        label="not_cat",
    )
    add(
        "tiff_multipage",
        "2-page TIFF: cat, then coffee",
        _raw(animation("TIFF", cat(), coffee()), "image/tiff"),
        label="cat",
        size=(width, height),
    )
    add(
        "tiff_multipage_coffee_first",
        "2-page TIFF: coffee, then cat",
        _raw(animation("TIFF", coffee(), cat()), "image/tiff"),
        label="not_cat",
    )
    add(
        "webp_animated",
        "2-frame animated WebP: cat, then coffee",
        _raw(animation("WEBP", cat(), coffee()), "image/webp"),
        label="cat",
        size=(width, height),
    )
    add(
        "webp_animated_coffee_first",
        "2-frame animated WebP: coffee, then cat",
        _raw(animation("WEBP", coffee(), cat()), "image/webp"),
        label="not_cat",
    )
    add("bmp", "the cat as BMP", _raw(encode(cat(), "BMP"), "image/bmp"), label="cat", size=(width, height))
    add(
        "exif_rotated",
        "the cat stored sideways with EXIF orientation 6",
        _raw(exif_rotated_cat()),
        label="cat",
        size=(width, height),
    )

    # --- sizes and counts
    over = jpeg + b"\x00" * (MAX_IMAGE_BYTES + 1 - len(jpeg))
    add(
        "raw_over_byte_limit",
        "a raw body 1 byte over MAX_IMAGE_BYTES (a JPEG padded with zeros)",
        _raw(over),
        statuses=frozenset({413}),
        code="image_too_large",
    )
    add(
        "part_over_byte_limit",
        "a multipart file 1 byte over MAX_IMAGE_BYTES",
        _form(Part(over)),
        statuses=frozenset({413}),
        code="image_too_large",
    )
    add(
        "file_parts_300",
        "300 tiny 'file' parts",
        _form(*[Part(b"x", filename=f"{i}.jpg") for i in range(300)]),
        statuses=frozenset({413}),
        code="too_many_files",
    )
    add(
        "form_fields_300",
        "300 ordinary form fields and one image",
        _form(*[Part(b"v", name=f"f{i}", filename=None, content_type=None) for i in range(300)], Part(jpeg)),
        statuses=frozenset({413}),
        code="too_many_parts",
    )
    add(
        "valid_files_17",
        "17 valid cat JPEGs (MAX_FILES is 16)",
        _form(*[Part(jpeg, filename=f"cat{i}.jpg") for i in range(17)]),
        statuses=frozenset({413}),
        code="too_many_files",
    )
    add(
        "one_bad_of_three",
        "cat, text, cat: the text file is named in the error",
        _form(Part(jpeg, filename="a.jpg"), Part(TEXT, filename="b.jpg"), Part(jpeg, filename="c.jpg")),
        statuses=frozenset({415}),
        code="unsupported_image",
    )
    add(
        "big_field",
        "a 1 MB ordinary form field next to an image",
        _form(Part(b"v" * 1_000_000, name="note", filename=None, content_type=None), Part(jpeg)),
        statuses=frozenset({413}),
        code="field_too_large",
    )

    # --- content types
    add("raw_text_plain", "a JPEG body sent as text/plain", _raw(jpeg, "text/plain"), label="cat", size=(width, height))
    add(
        "raw_no_content_type",
        "a JPEG body with no Content-Type header",
        _raw(jpeg, None),
        label="cat",
        size=(width, height),
    )
    add(
        "raw_png_as_jpeg",
        "a PNG body declared as image/jpeg",
        _raw(png, "image/jpeg"),
        label="cat",
        size=(width, height),
    )
    add(
        "raw_form_urlencoded",
        "a JPEG body declared as a url-encoded form",
        _raw(jpeg, "application/x-www-form-urlencoded"),
        label="cat",
    )
    add(
        "multipart_no_boundary",
        "multipart/form-data without a boundary",
        _raw(jpeg, "multipart/form-data"),
        statuses=frozenset({400}),
        code="invalid_multipart",
    )
    add(
        "multipart_mixed",
        "multipart/mixed instead of form-data",
        {"body": multipart([Part(jpeg)])[0], "headers": {"Content-Type": f"multipart/mixed; boundary={BOUNDARY}"}},
        statuses=frozenset({415}),
        code="unsupported_media_type",
    )
    add(
        "multipart_wrong_boundary",
        "a multipart body whose boundary differs from the header's",
        {
            "body": multipart([Part(jpeg)], "other")[0],
            "headers": {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        },
        statuses=frozenset({400}),
    )
    add(
        "multipart_garbage",
        "multipart header, random bytes for a body",
        {"body": random_bytes[:5000], "headers": {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}},
        statuses=frozenset({400}),
    )
    add(
        "multipart_unterminated",
        "a multipart body cut before its closing boundary",
        {
            "body": multipart([Part(jpeg)])[0][:-40],
            "headers": {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        },
        statuses=frozenset({400}),
    )
    add(
        "multipart_wrong_field",
        "the image in a field named 'image' instead of 'file'",
        _form(Part(jpeg, name="image", filename=None)),
        statuses=frozenset({400}),
        code="no_image",
    )
    add(
        "part_content_type_wrong",
        "a JPEG part declared text/plain",
        _form(Part(jpeg, content_type="text/plain")),
        label="cat",
    )
    add("part_no_content_type", "a JPEG part with no Content-Type", _form(Part(jpeg, content_type=None)), label="cat")

    # --- file names
    add(
        "filename_traversal",
        "filename ../../../etc/passwd.jpg",
        _form(Part(jpeg, filename="../../../etc/passwd.jpg")),
        label="cat",
        filename="passwd.jpg",
    )
    add(
        "filename_windows_path",
        r"filename C:\Users\me\cat.jpg",
        _form(Part(jpeg, filename="C:\\Users\\me\\cat.jpg")),
        label="cat",
        filename="cat.jpg",
    )
    add(
        "filename_control_chars",
        "filename with NUL, ESC, BEL, TAB",
        _form(Part(jpeg, filename="c\x00a\x1b[31mt\x07\t.jpg")),
        label="cat",
        filename="ca[31mt.jpg",
    )
    add(
        "filename_bidi_override",
        "filename with a right-to-left override (gpj.exe trick)",
        _form(Part(jpeg, filename="cat\u202egpj.exe")),
        label="cat",
        filename="catgpj.exe",
    )
    add(
        "filename_utf8",
        "a UTF-8 filename with CJK and an emoji",
        _form(Part(jpeg, filename="\u732b \U0001f431.jpg")),
        label="cat",
        filename="\u732b \U0001f431.jpg",
    )
    add(
        "filename_long",
        "a 1000-character filename (echoed cut to 255)",
        _form(Part(jpeg, filename="a" * 1000 + ".jpg")),
        label="cat",
        filename="a" * 255,
    )
    add(
        "filename_huge",
        "a 5000-character filename (part header over 4 KiB)",
        _form(Part(jpeg, filename="a" * 5000 + ".jpg")),
        statuses=frozenset({400}),
        code="invalid_multipart",
    )
    add(
        "part_headers_many",
        "a part with 50 headers",
        _form(
            Part(
                jpeg,
                raw_disposition=b'form-data; name="file"; filename="a.jpg"'
                + b"".join(b"\r\nX-H%d: v" % i for i in range(50)),
            )
        ),
        statuses=frozenset({400}),
        code="invalid_multipart",
    )
    add("filename_only_separators", "filename ../", _form(Part(jpeg, filename="../")), label="cat", filename=None)
    add(
        "filename_latin1_bytes",
        "filename bytes that are not UTF-8",
        _form(Part(jpeg, raw_disposition=b'form-data; name="file"; filename="caf\xe9.jpg"')),
        label="cat",
        filename="caf\ufffd.jpg",
    )

    # --- query
    add("top_k_zero", "top_k=0", _raw(jpeg), query="top_k=0", statuses=frozenset({422}), code="invalid_request")
    add("top_k_huge", "top_k=1001", _raw(jpeg), query="top_k=1001", statuses=frozenset({422}), code="invalid_request")
    add("top_k_text", "top_k=abc", _raw(jpeg), query="top_k=abc", statuses=frozenset({422}), code="invalid_request")
    add("top_k_all", "top_k=1000 (every class)", _raw(jpeg), query="top_k=1000", label="cat")

    names = [case.name for case in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


MODEL = "efficientnet_lite0"
V2_INFER = f"/v2/models/{MODEL}/infer"
PREDICTIONS = f"/predictions/{MODEL}"
PIXELS = 3 * 224 * 224
_BAD, _NOT_FOUND, _TOO_LARGE, _UNSUPPORTED = frozenset({400}), frozenset({404}), frozenset({413}), frozenset({415})


def _v2(
    request: object, binary: bytes = b"", header_length: str | None = None, headers: dict[str, str] | None = None
) -> dict[str, object]:
    """An Open Inference Protocol v2 request: JSON, then ``binary`` (its length header as tritonclient sends it)."""
    header = request if isinstance(request, bytes) else json.dumps(request).encode()
    fields = dict(headers or {})
    if binary or header_length is not None:
        fields["Inference-Header-Content-Length"] = header_length or str(len(header))
    return {"body": header + binary, "headers": fields, "route": V2_INFER}


def _image(data: object, shape: tuple[int, ...] = (1,), datatype: str = "BYTES", **extra: object) -> dict[str, object]:
    tensor: dict[str, object] = {"name": "IMAGE", "shape": list(shape), "datatype": datatype, **extra}
    if data is not None:
        tensor["data"] = data
    return {"inputs": [tensor]}


def _pixels(data: object, shape: tuple[int, ...] = (1, 3, 224, 224), **extra: object) -> dict[str, object]:
    tensor: dict[str, object] = {"name": "PIXELS", "shape": list(shape), "datatype": "FP32", **extra}
    if data is not None:
        tensor["data"] = data
    return {"inputs": [tensor]}


def _sized(data: bytes) -> dict[str, object]:
    return {"binary_data_size": len(data)}


def _elements(*items: bytes) -> bytes:
    """BYTES tensor data in the binary format: a 4-byte little-endian length before each element."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _expect(statuses: frozenset[int], **more: object) -> dict[str, object]:
    return {"statuses": statuses, **more}


def _top(k: object) -> dict[str, object]:
    return {"outputs": [{"name": "PROBABILITIES", "parameters": {"classification": k}}]}


def _v2_cases(jpeg: bytes) -> list[tuple[str, str, dict[str, object], dict[str, object]]]:
    b64 = base64.b64encode(jpeg).decode()
    one = _elements(jpeg)
    two = _elements(jpeg, jpeg)
    overrun = struct.pack("<I", 0xFFFFFFFF) + jpeg[:100]
    bomb = _elements(png_header_bomb())
    big = _elements(b"\xff\xd8" + bytes(MAX_IMAGE_BYTES + 10))
    gzipped = _v2(_image([b64]), headers={"Content-Encoding": "gzip"})
    gzipped["body"] = gzip.compress(cast(bytes, gzipped["body"]))
    cat: dict[str, object] = {"label": "cat"}
    bad = _expect(_BAD)
    return [
        # well-formed: answered with the class
        (
            "v2_binary_image",
            "tritonclient's binary BYTES, no Content-Type",
            _v2(_image(None, parameters=_sized(one)), one),
            cat,
        ),
        ("v2_json_base64", "base64 in JSON", _v2(_image([b64])), cat),
        ("v2_json_data_uri", "a data: URI in JSON", _v2(_image(["data:image/jpeg;base64," + b64])), cat),
        ("v2_json_base64_unpadded", "base64 without '=' padding", _v2(_image([b64.rstrip("=")])), cat),
        ("v2_json_base64_urlsafe", "URL-safe base64", _v2(_image([base64.urlsafe_b64encode(jpeg).decode()])), cat),
        ("v2_classification_huge", "classification 10**9 (every class)", _v2(_image([b64]) | _top(10**9)), cat),
        # not the protocol
        ("v2_empty_body", "0 bytes", _v2(b""), bad),
        ("v2_invalid_json", "not JSON", _v2(b"{not json"), bad),
        ("v2_json_array", "a JSON array, not an object", _v2(b"[]"), bad),
        ("v2_json_nan", "NaN, which JSON does not have", _v2(b'{"inputs": NaN}'), bad),
        (
            "v2_deep_nesting",
            "arrays nested 100,000 deep",
            _v2(b'{"inputs":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
            bad,
        ),
        ("v2_not_utf8", "JSON that is not UTF-8", _v2(b'{"id": "\xff\xfe"}'), bad),
        ("v2_missing_inputs", "no inputs", _v2({}), bad),
        ("v2_no_inputs", "an empty list of inputs", _v2({"inputs": []}), bad),
        ("v2_two_inputs", "two IMAGE inputs", _v2({"inputs": _image([b64])["inputs"] * 2}), bad),  # type: ignore[operator]
        ("v2_input_not_object", "an input that is a string", _v2({"inputs": ["IMAGE"]}), bad),
        (
            "v2_unknown_input",
            "an input the model does not have",
            _v2({"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "BYTES", "data": [b64]}]}),
            bad,
        ),
        ("v2_image_wrong_datatype", "IMAGE as FP32", _v2(_image([1.0], datatype="FP32")), bad),
        (
            "v2_pixels_wrong_datatype",
            "PIXELS as INT64",
            _v2({"inputs": [{"name": "PIXELS", "shape": [1, 3, 224, 224], "datatype": "INT64", "data": [0] * PIXELS}]}),
            bad,
        ),
        ("v2_shape_count_mismatch", "shape [2], one image", _v2(_image([b64], shape=(2,))), bad),
        ("v2_shape_negative", "shape [-1]", _v2(_image([b64], shape=(-1,))), bad),
        (
            "v2_shape_not_numbers",
            "shape [true]",
            _v2({"inputs": [{"name": "IMAGE", "shape": [True], "datatype": "BYTES", "data": [b64]}]}),
            bad,
        ),
        ("v2_shape_zero", "shape [0], no images", _v2(_image([], shape=(0,))), bad),
        ("v2_too_many_images", "17 images (MAX_FILES is 16)", _v2(_image([b64] * 17, shape=(17,))), bad),
        ("v2_pixels_wrong_shape", "PIXELS [1, 3, 10, 10]", _v2(_pixels([0.0] * 300, shape=(1, 3, 10, 10))), bad),
        ("v2_pixels_count_mismatch", "PIXELS with 5 numbers", _v2(_pixels([0.0] * 5)), bad),
        ("v2_pixels_strings", "PIXELS as strings", _v2(_pixels(["0.5"] * PIXELS)), bad),
        ("v2_pixels_ragged", "PIXELS nested unevenly", _v2(_pixels([[0.0], [0.0, 1.0]])), bad),
        ("v2_pixels_overflow", "1e39, beyond FP32", _v2(_pixels([1e39] * PIXELS)), bad),
        ("v2_pixels_nulls", "PIXELS of nulls", _v2(_pixels([None] * PIXELS)), bad),
        (
            "v2_pixels_binary_size_mismatch",
            "400 binary bytes for [1,3,224,224]",
            _v2(_pixels(None, parameters=_sized(bytes(400))), bytes(400)),
            bad,
        ),
        # the binary extension's sizes
        (
            "v2_binary_size_overruns_body",
            "binary_data_size 1,000,000, 10 bytes sent",
            _v2(_image(None, parameters={"binary_data_size": 1_000_000}), bytes(10)),
            bad,
        ),
        (
            "v2_binary_size_negative",
            "binary_data_size -1",
            _v2(_image(None, parameters={"binary_data_size": -1}), bytes(10)),
            bad,
        ),
        (
            "v2_binary_size_huge",
            "binary_data_size 2**64",
            _v2(_image(None, parameters={"binary_data_size": 2**64}), bytes(10)),
            bad,
        ),
        (
            "v2_binary_size_text",
            "binary_data_size '10'",
            _v2(_image(None, parameters={"binary_data_size": "10"}), bytes(10)),
            bad,
        ),
        (
            "v2_binary_size_float",
            "binary_data_size 10.0",
            _v2(_image(None, parameters={"binary_data_size": 10.0}), bytes(10)),
            bad,
        ),
        ("v2_binary_without_size", "bytes after the JSON, no binary_data_size", _v2(_image([b64]), bytes(10)), bad),
        ("v2_binary_and_json_data", "binary_data_size and data", _v2(_image([b64], parameters=_sized(one)), one), bad),
        ("v2_no_data", "an input without data", _v2(_image(None)), bad),
        (
            "v2_header_length_over_body",
            "Inference-Header-Content-Length past the body",
            _v2(_image([b64]), header_length="99999999"),
            bad,
        ),
        (
            "v2_header_length_negative",
            "Inference-Header-Content-Length -5",
            _v2(_image([b64]), header_length="-5"),
            bad,
        ),
        ("v2_header_length_text", "Inference-Header-Content-Length abc", _v2(_image([b64]), header_length="abc"), bad),
        (
            "v2_header_length_splits_json",
            "a header length that cuts the JSON",
            _v2(_image([b64]), header_length="10"),
            bad,
        ),
        (
            "v2_element_length_overrun",
            "a BYTES element claiming 4 GiB",
            _v2(_image(None, parameters=_sized(overrun)), overrun),
            bad,
        ),
        (
            "v2_element_prefix_cut",
            "2 bytes of a 4-byte length",
            _v2(_image(None, parameters={"binary_data_size": 2}), b"\x10\x00"),
            bad,
        ),
        (
            "v2_elements_more_than_shape",
            "2 elements for shape [1]",
            _v2(_image(None, parameters=_sized(two)), two),
            bad,
        ),
        (
            "v2_empty_element",
            "an image of 0 bytes",
            _v2(_image(None, parameters={"binary_data_size": 4}), _elements(b"")),
            bad,
        ),
        # base64
        ("v2_bad_base64", "not base64", _v2(_image(["!!! not base64 !!!"])), bad),
        ("v2_base64_non_ascii", "non-ASCII in base64", _v2(_image(["aGVsbG8\u00fc"])), bad),
        (
            "v2_base64_raw_latin1",
            "raw JPEG bytes as a latin-1 string",
            _v2(_image([jpeg[:2000].decode("latin-1")])),
            bad,
        ),
        ("v2_data_not_list", "data as a string", _v2(_image(b64)), bad),
        ("v2_data_numbers", "IMAGE data of numbers", _v2(_image([1, 2, 3], shape=(3,))), bad),
        # outputs and parameters
        (
            "v2_unknown_output",
            "an output the model does not have",
            _v2(_image([b64]) | {"outputs": [{"name": "OUTPUT0"}]}),
            bad,
        ),
        (
            "v2_outputs_not_list",
            "outputs as an object",
            _v2(_image([b64]) | {"outputs": {"name": "PROBABILITIES"}}),
            bad,
        ),
        ("v2_classification_negative", "classification -3", _v2(_image([b64]) | _top(-3)), bad),
        ("v2_classification_text", "classification 'three'", _v2(_image([b64]) | _top("three")), bad),
        (
            "v2_binary_output_text",
            "binary_data_output 'yes'",
            _v2(_image([b64]) | {"parameters": {"binary_data_output": "yes"}}),
            bad,
        ),
        ("v2_parameters_not_object", "parameters as a list", _v2(_image([b64]) | {"parameters": [1]}), bad),
        ("v2_id_number", "id as a number", _v2(_image([b64]) | {"id": 7}), bad),
        # the model, the encoding, the images, the sizes
        (
            "v2_unknown_model",
            "a model not served",
            _v2(_image([b64])) | {"route": "/v2/models/resnet50/infer"},
            _expect(_NOT_FOUND),
        ),
        (
            "v2_unknown_version",
            "a version not served",
            _v2(_image([b64])) | {"route": f"/v2/models/{MODEL}/versions/7/infer"},
            _expect(_NOT_FOUND),
        ),
        ("v2_gzip_body", "Content-Encoding: gzip", gzipped, _expect(_UNSUPPORTED)),
        (
            "v2_not_an_image",
            "base64 of text",
            _v2(_image([base64.b64encode(TEXT).decode()])),
            _expect(_UNSUPPORTED),
        ),
        ("v2_svg_image", "base64 of SVG", _v2(_image([base64.b64encode(SVG).decode()])), _expect(_UNSUPPORTED)),
        (
            "v2_truncated_image",
            "base64 of half a JPEG",
            _v2(_image([base64.b64encode(truncated(jpeg, 0.5)).decode()])),
            bad,
        ),
        (
            "v2_pixel_bomb",
            "PNG claiming 60000x60000",
            _v2(_image(None, parameters=_sized(bomb)), bomb),
            _expect(_TOO_LARGE, bomb=True),
        ),
        (
            "v2_image_over_limit",
            "an image of 20 MiB + 12 bytes",
            _v2(_image(None, parameters=_sized(big)), big),
            _expect(_TOO_LARGE),
        ),
        ("v2_body_over_limit", "a 33 MiB body", _v2(_image(["A" * (33 * 1024 * 1024)])), _expect(_TOO_LARGE)),
    ]


def build_protocol_corpus() -> list[Case]:
    """Hostile and odd requests to the Open Inference Protocol v2 and TorchServe routes (same limits as /predict).

    Error answers are in each protocol's own body (v2: ``{"error"}``; TorchServe: ``{code, type, message}``),
    so ``code`` is left unset: the statuses are the design."""
    jpeg = cat_jpeg()
    ts: dict[str, object] = {"route": PREDICTIONS}
    torchserve: list[tuple[str, str, dict[str, object], dict[str, object]]] = [
        (
            "ts_raw_image",
            "raw JPEG body, no Content-Type",
            _raw(jpeg, None) | ts,
            _expect(frozenset({200}), label="cat"),
        ),
        (
            "ts_data_part",
            "multipart 'data'",
            _form(Part(jpeg, name="data")) | ts,
            _expect(frozenset({200}), label="cat"),
        ),
        ("ts_empty_body", "0 bytes", _raw(b"", None) | ts, _expect(_BAD)),
        ("ts_not_an_image", "text", _raw(TEXT) | ts, _expect(_UNSUPPORTED)),
        ("ts_no_data_part", "multipart without 'data'", _form(Part(jpeg, name="picture")) | ts, _expect(_BAD)),
        ("ts_too_many_parts", "17 'data' parts", _form(*[Part(jpeg, name="data")] * 17) | ts, _expect(_TOO_LARGE)),
        (
            "ts_unknown_model",
            "a model not served",
            _raw(jpeg) | {"route": "/predictions/resnet-18"},
            _expect(_NOT_FOUND),
        ),
        (
            "ts_unknown_version",
            "a version not served",
            _raw(jpeg) | {"route": f"{PREDICTIONS}/2.0"},
            _expect(_NOT_FOUND),
        ),
        (
            "ts_gzip_body",
            "Content-Encoding: gzip",
            {"body": gzip.compress(jpeg), "headers": {"Content-Encoding": "gzip"}} | ts,
            _expect(_UNSUPPORTED),
        ),
        (
            "ts_pixel_bomb",
            "PNG claiming 60000x60000",
            _raw(png_header_bomb(), "image/png") | ts,
            _expect(_TOO_LARGE, bomb=True),
        ),
    ]
    cases = [
        Case(name, description, **request, **expect)  # type: ignore[arg-type]
        for name, description, request, expect in [*_v2_cases(jpeg), *torchserve]
    ]
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m tests.hostile.corpus OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for case in [*build_corpus(), *build_protocol_corpus()]:
        (out / f"{case.name}.bin").write_bytes(case.body)
        index.append(
            {
                "name": case.name,
                "description": case.description,
                "path": case.path,
                "headers": case.headers,
                "bytes": len(case.body),
                "statuses": sorted(case.statuses),
                "code": case.code,
            }
        )
    (out / "cases.json").write_text(json.dumps(index, indent=2) + "\n")
    print(f"wrote {len(index)} cases to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
