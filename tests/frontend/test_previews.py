"""Upload previews: small and upright for real photos; nothing, and quickly, for hostile files.

The hostile files are made in code (``hostile_files``). Previews run in real worker processes here,
as on the page; ``make_preview`` is also called directly where a test needs to look inside it.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator

import pytest
from PIL import Image, JpegImagePlugin

from frontend.previews import MAX_PREVIEW_PIXELS, PREVIEW_TIMEOUT_S, NoPreview, Previewer, make_preview
from tests.frontend import hostile_files
from tests.helpers import CAT, jpeg_bytes

QUICK_S = 1.0  # a generous bound for "at once"


@pytest.fixture(scope="module")
def previewer() -> Iterator[Previewer]:
    previewer = Previewer()
    assert previewer.preview(jpeg_bytes(CAT, (64, 43))) is not None  # the first worker is up
    yield previewer
    previewer.close()


def opened(data: bytes | None) -> Image.Image:
    assert data is not None
    return Image.open(io.BytesIO(data))


def timed(call: Callable[[], bytes | None]) -> tuple[bytes | None, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


# --- real photos


def test_preview_is_small_and_readable(previewer: Previewer) -> None:
    with opened(previewer.preview(CAT.read_bytes())) as image:  # a 451x300 PNG without alpha -> JPEG
        assert image.format == "JPEG"
        assert image.size == (451, 300)

    with opened(previewer.preview(jpeg_bytes(CAT, (2000, 1330)))) as image:
        assert max(image.size) == 640


def test_preview_keeps_transparency(previewer: Previewer) -> None:
    out = io.BytesIO()
    Image.new("RGBA", (32, 32), (255, 0, 0, 128)).save(out, "PNG")

    with opened(previewer.preview(out.getvalue())) as image:
        assert (image.format, image.mode) == ("PNG", "RGBA")


def test_preview_follows_exif_orientation(previewer: Previewer) -> None:
    """A phone photo stored sideways with an EXIF rotation is shown upright."""
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    Image.new("RGB", (60, 40), "white").save(out, "JPEG", exif=exif)

    with opened(previewer.preview(out.getvalue())) as image:
        assert image.size == (40, 60)


@pytest.mark.parametrize("data", [b"", b"not an image at all", jpeg_bytes(CAT)[:2000]])
def test_preview_of_unreadable_bytes_is_none(previewer: Previewer, data: bytes) -> None:
    assert previewer.preview(data) is None


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("PNG", lambda: hostile_files.png(8000, 5000)),
        ("PNG", lambda: hostile_files.png(8000, 5000, alpha=True)),  # the most memory: 360 MB at its peak
        ("JPEG", lambda: hostile_files.jpeg(8000, 5000)),
        ("TIFF", lambda: hostile_files.tiff(8000, 5000)),
        ("WEBP", lambda: hostile_files.webp(5000, 4000)),  # 20 MP: Pillow's WebP reader takes 16 bytes a pixel
    ],
)
def test_the_largest_allowed_images_are_previewed_in_time(
    previewer: Previewer, name: str, make: Callable[[], bytes]
) -> None:
    data = make()
    with Image.open(io.BytesIO(data)) as original:
        assert original.format == name
        assert original.size[0] * original.size[1] <= MAX_PREVIEW_PIXELS

    shown, seconds = timed(lambda: previewer.preview(data))

    with opened(shown) as image:
        assert max(image.size) == 640
    assert seconds < PREVIEW_TIMEOUT_S


def test_large_jpegs_are_decoded_at_a_reduced_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    """Draft mode: an 8000 x 5000 JPEG is decoded at 1/4 scale (2000 x 1250: the smallest scale still
    at least 640 x 640), not at 40 megapixels."""
    decoded: list[tuple[int, int]] = []
    load = JpegImagePlugin.JpegImageFile.load

    def spy(image: JpegImagePlugin.JpegImageFile) -> object:
        decoded.append(image.size)
        return load(image)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy)

    make_preview(hostile_files.jpeg(8000, 5000))

    assert decoded
    assert max(decoded) == (2000, 1250)


# --- hostile files: no preview, at once


HOSTILE: dict[str, Callable[[], bytes]] = {
    "a PNG whose header claims 60000 x 60000": lambda: hostile_files.png_claiming(60000, 60000),
    "a real PNG of 40 MP and one row": lambda: hostile_files.png(8000, 5001),
    "a GIF claiming 65535 x 65535": lambda: hostile_files.gif_claiming(65535, 65535),
    "a GIF claiming 8000 x 5001": lambda: hostile_files.gif_claiming(8000, 5001),
    "an RLE8 BMP (pure-Python decoding)": lambda: hostile_files.bmp_rle8(20000, 2000),
    "an EPS file (Ghostscript)": hostile_files.eps,
    "a 40 MP WebP (650 MB to decode: over the worker's memory)": lambda: hostile_files.webp(16383, 2441),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_files_get_no_preview_at_once(previewer: Previewer, name: str) -> None:
    data = HOSTILE[name]()

    shown, seconds = timed(lambda: previewer.preview(data))

    assert shown is None
    assert seconds < QUICK_S


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: hostile_files.png_claiming(8000, 5001), "is over 40,000,000 pixels"),
        # Pillow's own bomb check comes first, unless something in this process turned it off (the backend does).
        (
            lambda: hostile_files.png_claiming(60000, 60000),
            "60000 x 60000 is over 40,000,000 pixels|decompression bomb",
        ),
        (lambda: hostile_files.bmp_rle8(64, 64), "an RLE-compressed BMP"),
        (hostile_files.eps, "not a JPEG, PNG, WebP, GIF, BMP or TIFF"),
    ],
)
def test_why_there_is_no_preview(make: Callable[[], bytes], reason: str) -> None:
    with pytest.raises(NoPreview, match=reason):
        make_preview(make())


@pytest.mark.slow  # waits out a timeout
def test_a_preview_that_takes_too_long_is_stopped() -> None:
    """A 40 MP progressive JPEG with 1000 scans (140 kB) takes seconds to decode at any scale: the worker
    is killed at the time limit, the next image gets a fresh one, and the same file is not tried again."""
    slow = hostile_files.progressive_jpeg(8000, 5000, scans=1000)
    previewer = Previewer(workers=1, timeout_s=0.5)
    try:
        assert previewer.preview(jpeg_bytes(CAT, (64, 43))) is not None
        (worker,) = previewer._idle

        shown, seconds = timed(lambda: previewer.preview(slow))

        assert shown is None
        assert seconds < QUICK_S
        assert worker.process.poll() is not None  # killed
        assert previewer.preview(jpeg_bytes(CAT, (80, 53))) is not None  # a new worker
        again, seconds = timed(lambda: previewer.preview(slow))
        assert again is None
        assert seconds < 0.05  # remembered, not decoded again
    finally:
        previewer.close()


def test_previews_are_made_side_by_side() -> None:
    previewer = Previewer(workers=2)
    try:
        futures = previewer.submit([jpeg_bytes(CAT, (64 + i, 43)) for i in range(4)] + [b"junk"])
        results = [future.result(timeout=60) for future in futures]
    finally:
        previewer.close()

    assert [result is not None for result in results] == [True, True, True, True, False]
