"""The decoder in-process: mutated files only ever raise ImageError; large images shrink before conversion."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from backend.classifier import Classifier, ImageError, ImageLimits
from backend.classifier._images import _to_uint8, decode_image
from tests.helpers import CAT_CLASSES
from tests.hostile.corpus import animation, cat, coffee, encode

MUTATIONS_PER_SEED = 400


def _seeds() -> dict[str, bytes]:
    small = cat().resize((48, 32))
    other = coffee().resize((48, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "hostile corpus"
    grey16 = Image.fromarray(np.asarray(small.convert("L"), dtype=np.uint16) * 257)
    return {
        "jpeg_exif": encode(small, "JPEG", quality=80, exif=exif.tobytes()),
        "jpeg_progressive": encode(small, "JPEG", quality=80, progressive=True),
        "png": encode(small, "PNG"),
        "png_palette_trns": encode(small.quantize(16), "PNG", transparency=0),
        "png_16bit": encode(grey16, "PNG"),
        "gif_animated": animation("GIF", small, other),
        "webp": encode(small, "WEBP"),
        "webp_animated": animation("WEBP", small, other),
        "tiff_exif": encode(small, "TIFF", exif=exif.tobytes()),
        "tiff_lzw": encode(small, "TIFF", compression="tiff_lzw"),
        "bmp": encode(small, "BMP"),
    }


def _mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 4, 8, 32))):
        pos = rng.randrange(len(out))
        op = rng.random()
        if op < 0.6:
            out[pos] = rng.randrange(256)
        elif op < 0.75:
            del out[pos : pos + rng.randrange(1, 64)]
        elif op < 0.9:
            out[pos:pos] = rng.randbytes(rng.randrange(1, 16))
        else:  # sizes, offsets and counts at their extremes
            out[pos : pos + 4] = rng.choice((b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"))
    return bytes(out)


# Pillow reports recoverable damage (corrupt EXIF, odd TIFF tags) as UserWarning; the server logs those.
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mutated_images_only_ever_raise_image_errors() -> None:
    rng = random.Random(1234)
    outcomes: Counter[str] = Counter()
    unexpected: list[str] = []
    limits = ImageLimits(max_pixels=50_000_000)
    for name, data in _seeds().items():
        for _ in range(MUTATIONS_PER_SEED):
            mutated = _mutate(data, rng)
            try:
                decoded = decode_image(mutated, limits, min_short_side=256)
            except ImageError as exc:
                outcomes[type(exc).__name__] += 1
            except Exception as exc:
                unexpected.append(f"{name}: {type(exc).__name__}: {exc}")
            else:
                outcomes["decoded"] += 1
                assert decoded.image.mode == "RGB"
                assert decoded.width >= 1
                assert decoded.height >= 1
    print(f"\n{sum(outcomes.values()) + len(unexpected)} mutated files: {dict(outcomes)}")
    assert not unexpected, "\n".join(unexpected[:20])
    assert outcomes["decoded"] > 100  # the mutations also left many files decodable, so decoding was exercised
    assert outcomes["InvalidImage"] > 100


def _cat_at(size: tuple[int, int]) -> Image.Image:
    return cat().resize(size, Image.Resampling.BICUBIC)


def _probabilities(classifier: Classifier, pixels: np.ndarray) -> np.ndarray:
    return np.asarray(classifier.probabilities(pixels[None])[0])


@pytest.mark.slow  # large-image shrinking
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "I;16"])
def test_large_images_are_shrunk_before_conversion_with_the_same_prediction(
    onnx_classifier: Classifier, mode: str
) -> None:
    photo = _cat_at((4032, 3024))
    if mode == "RGBA":
        image = photo.convert("RGBA")
    elif mode == "P":
        image = photo.quantize(256)
    elif mode == "I;16":
        image = Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
    else:
        image = photo
    data = encode(image, "PNG")
    decoded = decode_image(data, ImageLimits(), min_short_side=256)
    assert (decoded.width, decoded.height) == (4032, 3024)
    assert decoded.image.size == (807, 605)  # averaged down 5x: still twice the 256 the model resizes to
    p = onnx_classifier.info.preprocessing
    fast = _probabilities(onnx_classifier, p(decoded.image))
    exact = _probabilities(onnx_classifier, p(decode_image(data, ImageLimits()).image))  # no shrinking
    assert decode_image(data, ImageLimits()).image.size == (4032, 3024)
    assert fast.argmax() == exact.argmax()
    assert onnx_classifier.top_k(fast, 1)[0].label in CAT_CLASSES
    print(f"\n{mode}: max probability difference shrunk vs full size {np.abs(fast - exact).max():.4f}")
    assert np.abs(fast - exact).max() < 0.05


@pytest.mark.slow  # large-image shrinking
def test_exif_orientation_is_applied_after_shrinking(onnx_classifier: Classifier) -> None:
    stored = _cat_at((4032, 3024)).transpose(Image.Transpose.ROTATE_90)  # 3024x4032 on its side
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "PNG", exif=exif.tobytes())
    decoded = decode_image(data, ImageLimits(), min_short_side=256)
    assert (decoded.width, decoded.height) == (4032, 3024)
    assert decoded.image.width > decoded.image.height  # upright, as displayed
    pixels = onnx_classifier.info.preprocessing(decoded.image)
    assert onnx_classifier.top_k(_probabilities(onnx_classifier, pixels), 1)[0].label in CAT_CLASSES


def _reference_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """The conversion as first written (whole-image float64), to check the blockwise one against."""
    values = pixels.astype(np.float64)
    if pixels.dtype.kind == "u" and pixels.dtype.itemsize == 2:
        values /= 257.0
    else:
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 255:
            if low >= 0 and high <= 65535:
                values /= 257.0
            else:
                values = (values - low) * (255.0 / (high - low or 1.0))
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "pixels",
    [
        np.arange(65536, dtype=np.uint16).reshape(256, 256),
        np.random.default_rng(1).integers(0, 65536, (1300, 70)).astype(np.uint16),
        np.random.default_rng(2).integers(0, 256, (600, 40)).astype(np.int32),
        np.random.default_rng(3).integers(0, 60000, (700, 30)).astype(np.int32),
        np.random.default_rng(4).integers(-5000, 90000, (1100, 20)).astype(np.int32),
        np.random.default_rng(5).normal(0.0, 1.0, (513, 9)).astype(np.float32),
        np.full((520, 3), 7.0, dtype=np.float32),
    ],
    ids=["u16-ramp", "u16-random", "i32-8bit", "i32-16bit", "i32-wide", "float", "constant"],
)
def test_grey_levels_convert_exactly_as_before(pixels: np.ndarray) -> None:
    np.testing.assert_array_equal(_to_uint8(pixels), _reference_to_uint8(pixels))


def test_transparent_pixels_still_become_white_after_shrinking() -> None:
    image = Image.new("RGBA", (2048, 2048), (10, 200, 30, 0))
    image.paste((200, 10, 30, 255), (1024, 0, 2048, 2048))
    decoded = decode_image(encode(image, "PNG"), ImageLimits(), min_short_side=256)
    assert decoded.image.size == (512, 512)
    assert decoded.image.getpixel((10, 10)) == (255, 255, 255)
    assert decoded.image.getpixel((500, 10)) == (200, 10, 30)
