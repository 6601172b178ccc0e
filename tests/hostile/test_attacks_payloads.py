"""The hostile payload generators make what they claim, cheaply; the socket helpers report what happened.

Fast: payloads are checked at small sizes (or by parsing their headers, without decoding), and the socket
helpers talk to tiny in-process asyncio servers, not to the backend. ``python -m tests.hostile.attacks
measure`` is what decodes the full-size payloads.
"""

from __future__ import annotations

import asyncio
import io
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from tests.hostile import attacks
from tests.hostile.attacks import (
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    PAYLOADS,
    jpeg_segments,
    png_chunk_types,
    sos_parameters,
)

# --- a stand-in decoder for the measuring harness (``--decoder tests.hostile.test_attacks_payloads``) ---


class ImageLimits:
    pass


class _Decoded:
    width, height, format = 3, 2, "FAKE"
    image = Image.new("RGB", (3, 2))


def decode_image(data: bytes, limits: ImageLimits, min_short_side: int = 0) -> _Decoded:
    if data == b"sleep":
        time.sleep(30)
    if data == b"raise":
        raise ValueError("refused")
    return _Decoded()


# --- headers read without Pillow, so the full-size payloads are checked without being decoded -------


def claimed_size(data: bytes) -> tuple[int, int]:
    """Width and height as the file's header states them."""
    if data[:2] == b"\xff\xd8":
        sof = min(i for i in (data.find(b"\xff\xc0"), data.find(b"\xff\xc2")) if i >= 0)
        height, width = struct.unpack_from(">HH", data, sof + 5)
        return width, height
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return struct.unpack_from(">II", data, 16)
    if data[:2] == b"BM":
        return struct.unpack_from("<ii", data, 18)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return struct.unpack_from("<HH", data, 6)
    if data[:4] == b"RIFF" and data[12:16] == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        return width, int.from_bytes(data[27:30], "little") + 1
    if data[:4] == b"RIFF" and data[12:16] == b"VP8 ":
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if data[:4] == b"II*\x00":
        (ifd,) = struct.unpack_from("<I", data, 4)
        (count,) = struct.unpack_from("<H", data, ifd)
        tags: dict[int, int] = {}
        for i in range(count):
            tag, kind, _, value = struct.unpack_from("<HHII", data, ifd + 2 + 12 * i)
            tags[tag] = value & 0xFFFF if kind == 3 else value
        return tags[256], tags[257]
    raise AssertionError(f"unknown format: {data[:16]!r}")


def pillow_header(data: bytes) -> ImageFile.ImageFile:
    """What the backend's decoder opens: the header is parsed, no pixel is decoded yet."""
    image = Image.open(io.BytesIO(data), formats=("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"))
    assert isinstance(image, ImageFile.ImageFile)
    return image


# --- the registry ----------------------------------------------------------------------------------------


def test_payload_names_are_unique_and_described() -> None:
    names = [item.name for item in PAYLOADS]
    assert len(names) == len(set(names))
    assert all(item.description for item in PAYLOADS)
    assert attacks.payload("tiff_many_strips").make is attacks.tiff_many_strips
    with pytest.raises(KeyError):
        attacks.payload("nope")


@pytest.mark.slow
def test_attack_payloads_pass_the_cheap_checks() -> None:
    """Every attack at its default parameters: within the byte limit, and its header within the pixel limit."""
    for item in PAYLOADS:
        if item.legit or item.name == "tiff_many_strips_oversize":
            continue
        data = item.make()
        width, height = claimed_size(data)
        assert len(data) <= MAX_IMAGE_BYTES, item.name
        assert 0 < width * height <= MAX_IMAGE_PIXELS, (item.name, width, height)
    oversize = attacks.payload("tiff_many_strips_oversize").make()
    assert claimed_size(oversize) == (60_000, 9_900_000)
    assert len(oversize) <= MAX_IMAGE_BYTES


@pytest.mark.slow
def test_legit_payloads_pass_the_cheap_checks() -> None:
    for item in PAYLOADS:
        if not item.legit:
            continue
        data = item.make()
        assert len(data) <= MAX_IMAGE_BYTES, (item.name, len(data))
        with pillow_header(data) as image:
            assert image.size == claimed_size(data), item.name
            assert image.width * image.height <= MAX_IMAGE_PIXELS, item.name


# --- 1. progressive JPEG -----------------------------------------------------------------------------------


def test_progressive_jpeg_repeats_its_widest_refinement_scan() -> None:
    data = attacks.progressive_jpeg_scans(256, 192, scans=500)
    segments = jpeg_segments(data)
    scans = [sos_parameters(segment) for segment in segments if segment.marker == 0xDA]
    assert len(scans) >= 500
    assert scans[-500:] == [((1,), 1, 63, 1, 0)] * 500  # AC 1..63 refinement, Ah=1 Al=0
    assert segments[-1].marker == 0xD9
    assert sum(segment.marker == 0xC4 for segment in segments) >= 500  # each repeat carries its DHT
    with pillow_header(data) as image:
        assert image.size == (256, 192)
        assert image.info.get("progressive") or image.info.get("progression")
        image.load()  # valid: libjpeg decodes it (its progression warnings are not errors)
        pixels = np.asarray(image)
        assert 120 <= pixels.min() <= pixels.max() <= 136  # flat grey


def test_progressive_jpeg_default_is_small_and_claims_49_megapixels() -> None:
    data = attacks.progressive_jpeg_scans()
    assert 200_000 < len(data) < 300_000
    assert sum(segment.marker == 0xDA for segment in jpeg_segments(data)) > 1600
    with pillow_header(data) as image:
        assert image.size == (7000, 7000)
        assert image.mode == "L"


def test_progressive_jpeg_can_keep_the_dc_refinement() -> None:
    without = attacks.progressive_jpeg_scans(256, 192, scans=3)
    with_dc = attacks.progressive_jpeg_scans(256, 192, scans=3, keep_dc_refinement=True)
    dc_refinements = [
        sos_parameters(segment)
        for segment in jpeg_segments(with_dc)
        if segment.marker == 0xDA and sos_parameters(segment)[1] == 0 and sos_parameters(segment)[3] > 0
    ]
    assert len(dc_refinements) == 1
    assert len(with_dc) > len(without)
    with pillow_header(with_dc) as image:
        image.load()


# --- 2. BMP RLE --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rle4", "compression"), [(False, 1), (True, 2)])
def test_bmp_rle_header_says_rle_and_it_decodes(rle4: bool, compression: int) -> None:
    data = attacks.bmp_rle(40, 30, rle4=rle4)
    (kind,) = struct.unpack_from("<I", data, 30)
    assert kind == compression
    with pillow_header(data) as image:
        assert image.format == "BMP"
        assert image.info["compression"] == compression
        assert image.size == (40, 30)
        image.load()
        colours = image.convert("RGB")
        assert colours.getpixel((0, 0)) != (0, 0, 0)  # the one pixel of each row
        assert colours.getpixel((1, 0)) == colours.getpixel((39, 29)) == (0, 0, 0)  # padding, one byte at a time


def test_bmp_rle_default_is_29_kb_for_49_megapixels() -> None:
    data = attacks.bmp_rle()
    assert len(data) < 30_000
    assert claimed_size(data) == (7000, 7000)
    assert data.endswith(b"\x00\x01")  # end of bitmap


@pytest.mark.parametrize("rle4", [False, True])
def test_bmp_rle_idle_runs_still_decode(rle4: bool) -> None:
    plain = attacks.bmp_rle(300, 20, rle4=rle4)
    data = attacks.bmp_rle(300, 20, rle4=rle4, idle_runs=1000)
    assert len(data) >= len(plain) + 2000
    with pillow_header(data) as image:
        image.load()
        assert image.size == (300, 20)


# --- 3. JPEG markers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("marker", [0xE3, 0xFE])
def test_jpeg_many_markers_has_that_many_segments(marker: int) -> None:
    data = attacks.jpeg_many_markers(1000, marker)
    assert sum(segment.marker == marker and len(segment.data) == 4 for segment in jpeg_segments(data)) == 1000
    with pillow_header(data) as image:
        assert image.size == (64, 64)
        assert len(image.applist) >= 1000  # type: ignore[attr-defined]
        image.load()


def test_jpeg_many_markers_default_fills_the_byte_limit() -> None:
    data = attacks.jpeg_many_markers()
    assert MAX_IMAGE_BYTES - 1_000_000 < len(data) <= MAX_IMAGE_BYTES
    assert data[2:6] == b"\xff\xe3\x00\x02"
    with pytest.raises(AssertionError):
        attacks.jpeg_many_markers(1, 0xC0)


def test_jpeg_fill_bytes_decode() -> None:
    data = attacks.jpeg_fill_bytes(5000)
    assert data[2:5002] == b"\xff" * 5000
    with pillow_header(data) as image:
        image.load()
        assert image.size == (64, 64)


def test_jpeg_exif_segments_are_concatenated_by_pillow() -> None:
    data = attacks.jpeg_exif_segments(500, chunk=10)
    exif_segments = [s for s in jpeg_segments(data) if s.marker == 0xE1 and s.data[4:10] == b"Exif\x00\x00"]
    assert len(exif_segments) == 501
    with pillow_header(data) as image:
        assert len(image.info["exif"]) == 6 + 14 + 500 * 10  # every segment appended to the first
        assert image.getexif() is not None
        image.load()


# --- 4. PNG chunks ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("after_idat", [False, True])
def test_png_many_chunks_has_that_many_chunks_with_good_crcs(after_idat: bool) -> None:
    data = attacks.png_many_chunks(1000, after_idat=after_idat)
    kinds = png_chunk_types(data)
    assert kinds.count(b"prVt") == 1000
    assert kinds[0] == b"IHDR"
    assert kinds[-1] == b"IEND"
    assert (kinds.index(b"prVt") > kinds.index(b"IDAT")) is after_idat
    with pillow_header(data) as image:  # Pillow checks every CRC
        image.load()
        assert len(image.private_chunks) == 1000  # type: ignore[attr-defined]


def test_png_many_chunks_default_and_public_kind() -> None:
    data = attacks.png_many_chunks()
    assert len(data) <= MAX_IMAGE_BYTES
    assert (len(data) - len(attacks.png_many_chunks(0))) // 12 == 1_700_000
    public = attacks.png_many_chunks(10, kind=b"vPAg")
    with pillow_header(public) as image:
        image.load()
        assert image.private_chunks == []  # type: ignore[attr-defined]
    with pytest.raises(AssertionError):
        attacks.png_many_chunks(1, kind=b"IDAT")  # critical chunks are not skipped by decoders


def test_png_iccp_chunks_each_inflate_to_a_mebibyte() -> None:
    data = attacks.png_iccp_chunks(5)
    assert png_chunk_types(data).count(b"iCCP") == 5
    with pillow_header(data) as image:
        assert len(image.info["icc_profile"]) == 1 << 20
        image.load()
    assert len(attacks.png_iccp_chunks()) <= MAX_IMAGE_BYTES


# --- 5. other formats ----------------------------------------------------------------------------------------


def test_tiff_many_strips_gives_one_tile_per_strip() -> None:
    data = attacks.tiff_many_strips(5, 1000)
    with pillow_header(data) as image:
        assert image.size == (5, 1000)
        assert len(image.tile) == 1000
        image.load()
        assert image.getextrema() == (128, 128)


def test_tiff_many_tags_has_that_many_tags() -> None:
    data = attacks.tiff_many_tags(100)
    with pillow_header(data) as image:
        assert len(image.tag_v2) >= 109  # type: ignore[attr-defined]
        image.load()
        assert image.size == (64, 64)
    assert claimed_size(attacks.tiff_many_tags()) == (64, 64)


@pytest.mark.parametrize("transparent", [False, True])
def test_gif_huge_screen_has_tiny_frames(transparent: bool) -> None:
    data = attacks.gif_huge_screen(300, 200, frames=50, transparent=transparent)
    with pillow_header(data) as image:
        assert image.size == (300, 200)
        assert image.n_frames == 50  # type: ignore[attr-defined]
        image.seek(0)
        image.load()
        assert ("transparency" in image.info) is transparent


def test_gif_comment_blocks_and_extensions_decode() -> None:
    with pillow_header(attacks.gif_comment_blocks(1000)) as image:
        image.load()
        assert image.info["comment"] == b"ab" * 1000
    with pillow_header(attacks.gif_many_extensions(1000)) as image:
        image.load()
        assert image.size == (64, 64)


def test_webp_huge_canvas_is_a_tiny_animation() -> None:
    data = attacks.webp_huge_canvas(100, 80, frames=3)
    with pillow_header(data) as image:
        assert image.size == (100, 80)
        assert image.n_frames == 3  # type: ignore[attr-defined]
        image.load()
    default = attacks.webp_huge_canvas()
    assert len(default) < 200
    assert claimed_size(default) == (16383, 3000)


def test_png_zeros_is_a_genuine_png() -> None:
    with pillow_header(attacks.png_zeros(300, 200)) as image:
        assert (image.mode, image.size) == ("RGBA", (300, 200))
        image.load()


# --- the measuring harness -------------------------------------------------------------------------------------

_FAKE = "tests.hostile.test_attacks_payloads"


@pytest.mark.slow
def test_measure_reports_outcomes_and_kills_at_the_cap() -> None:
    decoded = attacks.measure_bytes("ok", b"fine", cap_s=20, decoder=_FAKE)
    assert decoded.outcome == "decoded 3x2 (FAKE) as 3x2"
    assert decoded.size == 4
    assert 0 <= decoded.cpu_s < 5
    assert decoded.peak_rss_mb >= decoded.baseline_rss_mb > 10
    refused = attacks.measure_bytes("refused", b"raise", cap_s=20, decoder=_FAKE)
    assert refused.outcome == "ValueError: refused"
    killed = attacks.measure_bytes("slow", b"sleep", cap_s=0.5, decoder=_FAKE)
    assert killed.outcome == "killed at cap (0.5 s)"
    assert 0.4 < killed.wall_s < 10
    table = attacks.format_table([decoded, killed])
    assert "| `slow` | 5 |" in table


def test_write_command_writes_every_payload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = (attacks.Payload("a", "one", lambda: b"x"), attacks.Payload("b", "two", lambda: b"yy", legit=True))
    monkeypatch.setattr(attacks, "PAYLOADS", small)
    assert attacks.main(["write", str(tmp_path)]) == 0
    assert (tmp_path / "a.bin").read_bytes() == b"x"
    assert (tmp_path / "b.bin").read_bytes() == b"yy"
    assert attacks.main(["list"]) == 0


# --- socket helpers, against tiny in-process servers -----------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _answer(status: int, body: bytes = b'{"code": "x"}', close: bool = True) -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body


def _serve(handler: Handler, check: Callable[[int], Awaitable[None]]) -> None:
    """Run ``check(port)`` against an asyncio server whose connections ``handler`` serves (then closes)."""

    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(closing, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            await check(port)

    asyncio.run(main())


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def test_huge_header_stops_when_the_server_refuses() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(16_384)
        writer.write(_answer(431))
        await writer.drain()
        writer.close()

    async def check(port: int) -> None:
        result = await attacks.huge_header("127.0.0.1", port, total_bytes=10_000_000, chunk=4096, max_wait_s=5)
        assert result.status == 431
        assert result.ended in ("closed", "reset")
        assert result.sent < 10_000_000
        assert result.json() == {"code": "x"}

    _serve(handler, check)


def test_slow_headers_reports_how_long_the_server_waited() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.3)
        writer.close()

    async def check(port: int) -> None:
        result = await attacks.slow_headers("127.0.0.1", port, interval=0.05, max_seconds=5)
        assert result.status is None
        assert result.ended in ("closed", "reset")
        assert 0.2 < result.seconds < 3
        patient = await attacks.slow_headers("127.0.0.1", port, interval=0.05, max_seconds=0.1)
        assert patient.ended == "timeout"

    _serve(handler, check)


def test_idle_connections_counts_those_still_open() -> None:
    arrivals: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arrivals.append(len(arrivals))
        if len(arrivals) % 2:  # close every other one at once
            writer.close()
            return
        await reader.read()

    async def check(port: int) -> None:
        async with attacks.idle_connections("127.0.0.1", port, 20, batch=7) as idle:
            assert idle.opened == 20
            assert idle.refused == 0
            for _ in range(100):  # until the server's closes have arrived
                if await idle.still_open() == 10:
                    break
                await asyncio.sleep(0.02)
            assert await idle.still_open() == 10

    _serve(handler, check)


def test_stalled_body_waits_for_the_server_to_give_up() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        await asyncio.sleep(0.2)
        writer.write(_answer(504, close=False))
        await writer.drain()
        await reader.read()

    async def check(port: int) -> None:
        result = await attacks.stalled_body("127.0.0.1", port, declared=1_000_000, sent=1000, max_wait_s=5)
        assert result.status == 504
        assert result.ended == "open"
        assert 0.15 < result.seconds < 3
        assert result.sent > 1000

    _serve(handler, check)


def test_epilogue_flood_and_long_boundary_send_valid_multipart() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await _read_head(reader)
        boundary = head.split(b"boundary=")[1].split(b"\r\n")[0]
        body = await reader.readuntil(b"--" + boundary + b"--\r\n")
        seen.append(body)
        writer.write(_answer(200))
        await writer.drain()
        writer.close()

    async def check(port: int) -> None:
        flood = await attacks.epilogue_flood("127.0.0.1", port, b"IMAGE", after_close_bytes=20_000_000, max_wait_s=5)
        assert flood.status == 200
        assert flood.sent_before_answer is not None
        assert flood.sent_before_answer < 20_000_000  # it stopped sending once answered
        long = await attacks.long_boundary("127.0.0.1", port, b"IMAGE", length=300, max_wait_s=5)
        assert long.status == 200
        assert b"\r\n\r\nIMAGE\r\n--" + b"b" * 300 + b"--\r\n" in seen[-1]

    _serve(handler, check)


@pytest.mark.parametrize("drain", [True, False])
def test_early_413_read_tells_whether_the_client_saw_the_answer(drain: bool) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        await reader.readexactly(100_000)
        writer.write(_answer(413))
        await writer.drain()
        if drain:  # a polite server reads (and discards) the rest before closing
            while await reader.read(65_536):
                pass
        writer.close()

    async def check(port: int) -> None:
        result = await attacks.early_413_read("127.0.0.1", port, body_bytes=30_000_000, max_wait_s=10)
        if drain:
            assert result.status == 413
            assert result.json() == {"code": "x"}
            assert result.sent > 30_000_000
        else:  # closing with unread data resets the connection: the answer may be lost, never invented
            assert result.status in (413, None)
            assert result.sent < 30_000_000
            assert "sending failed" in result.detail
            if result.status is None:
                assert result.ended in ("closed", "reset")

    _serve(handler, check)
