"""Decoding: every common mode classified correctly, limits enforced from the header, errors explained."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from backend.classifier import (
    Classifier,
    ImageLimits,
    ImageTooLarge,
    InvalidImage,
    UnsupportedImage,
)
from backend.classifier._images import decode_image
from tests.backend.conftest import png_claiming
from tests.helpers import CAT, CAT_CLASSES, COFFEE, jpeg_bytes


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def _cat() -> Image.Image:
    return Image.open(CAT).convert("RGB")


def _top1(classifier: Classifier, data: bytes) -> str:
    return classifier.classify([data], top_k=1)[0][0].label


def _with_transparent_border(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    alpha = Image.new("L", rgba.size, 0)
    alpha.paste(255, (40, 30, rgba.width - 40, rgba.height - 30))
    rgba.putalpha(alpha)
    return rgba


def _cmyk_jpeg() -> bytes:
    return _encode(_cat().convert("CMYK"), "JPEG", quality=92)


def _i16_png() -> bytes:
    grey = np.asarray(_cat().convert("L"), dtype=np.uint16) * 257  # full 16-bit range
    return _encode(Image.fromarray(grey), "PNG")


def _palette_with_transparency() -> bytes:
    return _encode(_with_transparent_border(_cat()).convert("P"), "PNG")


def _animated(fmt: str) -> bytes:
    first = _cat()
    second = Image.new("RGB", first.size, (0, 0, 255))
    return _encode(first, fmt, save_all=True, append_images=[second], duration=100, loop=0)


def _exif_rotated() -> bytes:
    # Stored lying on its side; EXIF orientation 6 says "rotate 90 degrees clockwise to display".
    stored = _cat().transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(stored, "JPEG", quality=92, exif=exif.tobytes())


CASES = {
    "L": lambda: _encode(_cat().convert("L"), "PNG"),
    "LA": lambda: _encode(_with_transparent_border(_cat()).convert("LA"), "PNG"),
    "P": lambda: _encode(_cat().convert("P"), "PNG"),
    "P+transparency": _palette_with_transparency,
    "RGBA": lambda: _encode(_with_transparent_border(_cat()), "PNG"),
    "CMYK": _cmyk_jpeg,
    "I;16": _i16_png,
    "animated GIF": lambda: _animated("GIF"),
    "animated WebP": lambda: _animated("WEBP"),
    "TIFF": lambda: _encode(_cat(), "TIFF"),
    "BMP": lambda: _encode(_cat(), "BMP"),
    "EXIF-rotated JPEG": _exif_rotated,
}


@pytest.mark.parametrize("case", list(CASES))
def test_modes_and_formats_are_classified_not_rejected(onnx_classifier: Classifier, case: str) -> None:
    assert _top1(onnx_classifier, CASES[case]()) in CAT_CLASSES


def test_modes_really_are_what_the_cases_claim() -> None:
    modes = {case: Image.open(io.BytesIO(make())).mode for case, make in CASES.items()}
    assert modes["I;16"].startswith("I;16")
    assert modes["CMYK"] == "CMYK"
    assert modes["P+transparency"] == "P"
    assert modes["LA"] == "LA"
    assert getattr(Image.open(io.BytesIO(CASES["animated GIF"]())), "n_frames", 1) == 2


def test_exif_rotation_is_applied_and_reported() -> None:
    decoded = decode_image(_exif_rotated(), ImageLimits())
    upright = _cat()
    assert decoded.image.size == upright.size
    assert (decoded.width, decoded.height) == upright.size
    diff = np.abs(np.asarray(decoded.image, dtype=np.int16) - np.asarray(upright, dtype=np.int16))
    assert diff.mean() < 6  # JPEG noise only: the picture is the right way up


def _noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Random pixels: any wrong turn or flip changes them (a symmetric picture could hide one)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def _with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(image, "PNG", exif=exif.tobytes())  # lossless, so pixels compare exactly


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied_as_pillow_defines_it(orientation: int) -> None:
    data = _with_orientation(_noise((6, 4)), orientation)
    reference = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    decoded = decode_image(data, ImageLimits())
    np.testing.assert_array_equal(np.asarray(decoded.image), np.asarray(reference))
    assert (decoded.width, decoded.height) == reference.size == ((4, 6) if orientation >= 5 else (6, 4))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied_to_a_shrunk_image_too(orientation: int) -> None:
    data = _with_orientation(_noise((1200, 800), seed=orientation), orientation)
    decoded = decode_image(data, ImageLimits(), min_short_side=100)  # averaged down 4x before turning
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    np.testing.assert_array_equal(np.asarray(decoded.image), np.asarray(upright.reduce(4)))
    assert (decoded.width, decoded.height) == upright.size


def test_transparent_areas_become_white() -> None:
    decoded = decode_image(CASES["RGBA"](), ImageLimits())
    assert decoded.image.getpixel((0, 0)) == (255, 255, 255)


def test_large_jpeg_is_decoded_at_reduced_scale_with_the_same_prediction(onnx_classifier: Classifier) -> None:
    phone_photo = jpeg_bytes(CAT, size=(4032, 3024), quality=92)  # 12 megapixels
    decoded = decode_image(phone_photo, ImageLimits(), min_short_side=256)
    assert decoded.image.size == (504, 378)  # libjpeg's 1/8 scale, still above the 256 the model needs
    assert (decoded.width, decoded.height) == (4032, 3024)
    full = Image.open(io.BytesIO(phone_photo)).convert("RGB")
    p = onnx_classifier.info.preprocessing
    fast = onnx_classifier.probabilities(onnx_classifier.prepare(phone_photo, ImageLimits()).pixels[None])[0]
    exact = onnx_classifier.probabilities(p(full)[None])[0]
    assert fast.argmax() == exact.argmax()
    assert onnx_classifier.top_k(fast, 1)[0].label in CAT_CLASSES
    assert np.abs(fast - exact).max() < 0.05


def test_byte_limit() -> None:
    data = jpeg_bytes(COFFEE)
    with pytest.raises(ImageTooLarge, match="limit"):
        decode_image(data, ImageLimits(max_bytes=len(data) - 1))


def test_pixel_limit_is_checked_from_the_header_before_decoding() -> None:
    # The header claims 20000 x 20000 (400 megapixels); the pixel data stops after four rows. Decoding
    # would fail as truncated, so ImageTooLarge shows that the limit came first, from the header alone.
    claim = png_claiming(20000, 20000)
    with pytest.raises(ImageTooLarge, match="megapixels"):
        decode_image(claim, ImageLimits(max_pixels=50_000_000))
    with pytest.raises(InvalidImage, match="truncated"):  # what a decode would have found
        decode_image(claim, ImageLimits(max_pixels=400_000_000))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", InvalidImage),
        (b"hello, this is a text file that someone named cat.jpg\n" * 20, UnsupportedImage),
        (b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>", UnsupportedImage),
        (jpeg_bytes(CAT)[:5000], InvalidImage),  # truncated JPEG
        (_encode(Image.new("RGB", (64, 64)), "PCX"), UnsupportedImage),  # real image, format we don't take
    ],
    ids=["empty", "text", "svg", "truncated-jpeg", "pcx"],
)
def test_bad_input_raises_an_error_that_says_what_to_do(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        decode_image(data, ImageLimits())
    assert len(str(caught.value)) > 20
