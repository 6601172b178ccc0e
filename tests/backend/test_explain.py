"""POST /explain and backend.saliency: where the heat lies on real photos, the heat map's geometry,
admission control (an explanation counts as its many images), and errors as /predict answers them."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import matplotlib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from backend.classifier import Classifier, Preprocessing
from backend.config import Settings
from backend.saliency import (
    MAX_GRID,
    TURBO,
    colourize,
    crop_box,
    fill_colour,
    heatmap_png,
    heatmap_size,
    occlusion,
)
from bench.explain import Kind, table
from tests.backend.conftest import assert_error
from tests.helpers import CAT, COFFEE, ROOT, SKIMAGE_DATA, jpeg_bytes
from tests.hostile.corpus import Case, build_corpus

SAMPLES = ROOT / "frontend" / "samples"  # scikit-image's photos as JPEG, at their original sizes

# --- the geometry, without a model


@pytest.mark.parametrize("size", [(451, 300), (300, 451), (640, 427), (512, 512), (4000, 3000), (900, 40)])
def test_the_crop_box_is_where_preprocessing_takes_its_crop(size: tuple[int, int]) -> None:
    """The box, cut from the original and scaled to the crop's size, is the crop Preprocessing makes."""
    preprocessing = Preprocessing()
    width, height = size
    rng = np.random.default_rng(7)
    # Smooth content, so that resampling filters agree to within a few levels.
    coarse = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
    box = crop_box(preprocessing, width, height)
    assert 0 <= box.left < box.right <= width
    assert 0 <= box.top < box.bottom <= height
    assert box.right - box.left == pytest.approx(box.bottom - box.top, rel=0.02)  # a square on the model's scale
    cut = image.resize((224, 224), Image.Resampling.BILINEAR, box=(box.left, box.top, box.right, box.bottom))
    difference = np.abs(np.asarray(cut, dtype=np.int16) - preprocessing(image).astype(np.int16))
    assert difference.mean() < 1.0


def test_the_colour_map_is_matplotlibs_turbo() -> None:
    turbo = matplotlib.colormaps["turbo"]
    for s in np.linspace(0, 1, len(TURBO)):  # the samples: matplotlib's colours, rounded
        expected = np.array(turbo(s)[:3]) * 255
        assert np.abs(colourize(np.array([s]))[0, :3].astype(float) - expected).max() <= 1, s
    for s in np.linspace(0, 1, 101):  # between them, a straight line: within 16 levels of the curve
        expected = np.array(turbo(s)[:3]) * 255
        assert np.abs(colourize(np.array([s]))[0, :3].astype(float) - expected).max() < 16, s
    alpha = colourize(np.array([0.0, 1.0]))[:, 3]
    assert alpha[0] < alpha[1]  # the strongest cells are the most opaque


@pytest.mark.parametrize("size", [(451, 300), (300, 451), (512, 512), (2000, 30), (100, 80)])
def test_the_heat_map_has_the_originals_aspect_and_is_transparent_outside_the_crop(size: tuple[int, int]) -> None:
    width, height = size
    box = crop_box(Preprocessing(), width, height)
    scores = np.zeros((7, 7))
    scores[0, 0] = 1.0  # the hottest cell: the crop's top left corner
    png, w, h = heatmap_png(scores, box, width, height)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    assert image.mode == "RGBA"
    assert image.size == (w, h) == heatmap_size(width, height)
    assert max(w, h) <= 256
    assert w / h == pytest.approx(width / height, rel=0.05, abs=1 / min(w, h))
    alpha = np.asarray(image)[..., 3]
    shown = np.argwhere(alpha > 0)
    (top, left), (bottom, right) = shown.min(axis=0), shown.max(axis=0) + 1
    scale = w / width
    assert abs(left - box.left * scale) <= 1
    assert abs(right - box.right * scale) <= 1
    assert abs(top - box.top * h / height) <= 1
    assert abs(bottom - box.bottom * h / height) <= 1
    rgba = np.asarray(image)
    if right - left >= 8 and bottom - top >= 8:
        corner, far = rgba[top + 1, left + 1], rgba[bottom - 2, right - 2]
        assert corner[0] > far[0]  # red where the score is high (turbo's top end), blue-ish at 0
        assert corner[3] > far[3]


def test_occlusion_finds_the_cell_a_model_depends_on_and_runs_in_chunks() -> None:
    """A "model" whose class probability is the brightness of one region: masking that region costs the most."""
    pixels = np.full((224, 224, 3), 255, dtype=np.uint8)
    chunks: list[int] = []

    async def infer(images: Sequence[np.ndarray]) -> list[np.ndarray]:
        chunks.append(len(images))
        return [np.array([0.0, image[135:155, 40:60].mean() / 255]) for image in images]

    saliency = asyncio.run(occlusion(pixels, 1, 1.0, grid=7, fill=fill_colour(Preprocessing()), infer=infer, chunk=16))
    assert chunks == [16, 16, 16, 1]
    assert saliency.drops.shape == (7, 7)
    assert tuple(int(i) for i in np.unravel_index(saliency.scores.argmax(), (7, 7))) == (
        4,
        1,
    )  # cell rows 128-160, cols 32-64
    assert saliency.scores.max() == 1.0
    assert saliency.scores.min() == 0.0
    assert (saliency.drops[saliency.scores == 0] <= 0).all()  # cells that cost nothing


# --- real photos, the real model

# Boxes drawn by hand on the original photos (frontend/samples, scikit-image's): each photo was shown with a
# grid line every 50 pixels and the object's edges read off it, generously by a few pixels. (left, top,
# right, bottom) in the original's pixels.
BOXES = {
    # the cup with its espresso and handle (not the saucer): "espresso"
    "coffee.jpg": (165, 10, 415, 310),
    # the helmet in the bottom right corner: the model's top class for this photo is "football helmet"
    "astronaut.jpg": (270, 335, 512, 512),
    # the rocket itself, nose to launch mount, without the towers: "missile"
    "rocket.jpg": (295, 120, 345, 410),
}
# For "missile" the model also draws on the launch towers and the pad's lights (the heat map shows them), so on
# the rocket photo only the hottest cell is on the object; on the others the object is hotter throughout.
HOTTER_THROUGHOUT = {"coffee.jpg", "astronaut.jpg"}


def explain(client: TestClient, data: bytes, query: str = "", **headers: str) -> dict[str, Any]:
    response = client.post(f"/explain{query}", files={"file": ("photo.jpg", data, "image/jpeg")}, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def heat_in(body: dict[str, Any], box: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(scores, whether each cell's centre lies in ``box``), the cells placed by the answer's crop box."""
    scores = np.array(body["scores"])
    grid = body["grid"]
    crop = body["crop_box"]
    centres = (np.arange(grid) + 0.5) / grid
    xs = crop["left"] + centres * (crop["right"] - crop["left"])
    ys = crop["top"] + centres * (crop["bottom"] - crop["top"])
    inside = ((ys[:, None] >= box[1]) & (ys[:, None] <= box[3])) & ((xs[None, :] >= box[0]) & (xs[None, :] <= box[2]))
    return scores, inside


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BOXES))
@pytest.mark.parametrize("grid", [7, 10])
def test_the_hottest_cell_is_on_the_object(client: TestClient, name: str, grid: int) -> None:
    body = explain(client, (SAMPLES / name).read_bytes(), f"?grid={grid}")
    scores, inside = heat_in(body, BOXES[name])
    peak = np.unravel_index(scores.argmax(), scores.shape)
    assert inside[peak], (body["explained"], np.round(scores, 2))
    if name in HOTTER_THROUGHOUT:  # the object's cells are hotter than the rest of the crop's, on average
        assert scores[inside].mean() > 1.5 * scores[~inside].mean(), np.round(scores, 2)


@pytest.mark.slow
def test_most_of_the_heat_is_on_the_cup(client: TestClient) -> None:
    body = explain(client, (SAMPLES / "coffee.jpg").read_bytes())
    assert body["explained"]["label"] == "espresso"
    scores, inside = heat_in(body, BOXES["coffee.jpg"])
    assert scores[inside].sum() > 0.5 * scores.sum()


@pytest.mark.slow
@pytest.mark.parametrize("corner", ["top_left", "bottom_right"])
def test_the_heat_follows_the_cat_around_a_picture(client: TestClient, corner: str) -> None:
    """The cat photo, shrunk, pasted into a corner of a gravel photo: its box is known by construction."""
    cat = Image.open(CAT).convert("RGB")
    cat = cat.resize((cat.width * 55 // 100, cat.height * 55 // 100))
    picture = Image.open(SKIMAGE_DATA / "gravel.png").convert("RGB").resize((600, 450))
    x, y = (60, 45) if corner == "top_left" else (600 - 60 - cat.width, 450 - 45 - cat.height)
    picture.paste(cat, (x, y))
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=90)
    body = explain(client, out.getvalue())
    assert body["explained"]["label"] in {"tabby", "tiger cat", "Egyptian cat"}
    scores, inside = heat_in(body, (x, y, x + cat.width, y + cat.height))
    assert inside[np.unravel_index(scores.argmax(), scores.shape)], np.round(scores, 2)


def test_the_answer_places_its_heat_map_on_the_original(client: TestClient) -> None:
    data = (SAMPLES / "rocket.jpg").read_bytes()  # 640 x 427
    body = explain(client, data, "?grid=4")
    assert (body["width"], body["height"]) == (640, 427)
    assert body["grid"] == 4
    assert body["images"] == 17
    assert np.array(body["scores"]).shape == np.array(body["drops"]).shape == (4, 4)
    assert 0 <= min(map(min, body["scores"])) <= max(map(max, body["scores"])) <= 1
    assert body["explained"] == body["predictions"][0]
    box = body["crop_box"]
    expected = crop_box(Preprocessing(), 640, 427)
    assert box == {"left": expected.left, "top": expected.top, "right": expected.right, "bottom": expected.bottom}
    heat = Image.open(io.BytesIO(base64.b64decode(body["heatmap"]["data"])))
    assert heat.size == (body["heatmap"]["width"], body["heatmap"]["height"]) == (256, 171)
    assert [tuple(c) for c in body["colormap"]] == list(TURBO)
    png = client.post("/explain?grid=4", content=data, headers={"Accept": "image/png"})
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (256, 171)


def test_exif_orientation_is_applied_to_the_geometry(client: TestClient) -> None:
    """A photo stored sideways with an EXIF orientation: the answer's sizes and box are those of the upright image."""
    upright = Image.open(COFFEE).convert("RGB")  # 600 x 400
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to show": stored turned the other way
    out = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(out, "JPEG", quality=90, exif=exif.tobytes())
    body = explain(client, out.getvalue(), "?grid=4")
    assert (body["width"], body["height"]) == (600, 400)
    assert body["crop_box"]["right"] - body["crop_box"]["left"] == pytest.approx(350)
    assert (body["heatmap"]["width"], body["heatmap"]["height"]) == (256, 171)


def test_a_chosen_class_is_explained(client: TestClient) -> None:
    body = explain(client, jpeg_bytes(CAT), "?grid=4&class_index=504")  # "coffee mug"
    assert body["explained"]["index"] == 504
    assert body["explained"]["label"] == "coffee mug"
    assert body["explained"]["probability"] < 0.05


@pytest.mark.parametrize(
    "query", ["?grid=3", "?grid=15", "?grid=7.0", "?grid=+7", "?grid=seven", "?class_index=-1", "?class_index=1e3"]
)
def test_bad_parameters_are_422(client: TestClient, query: str) -> None:
    assert_error(client.post(f"/explain{query}", content=jpeg_bytes(CAT)), 422, "invalid_request")


def test_a_class_the_model_does_not_have_is_422(client: TestClient) -> None:
    body = assert_error(client.post("/explain?class_index=1000", content=jpeg_bytes(CAT)), 422, "invalid_class")
    assert "0 to 999" in body["detail"]


def test_more_than_one_image_is_413(client: TestClient) -> None:
    files = [("file", ("a.jpg", jpeg_bytes(CAT), "image/jpeg")), ("file", ("b.jpg", jpeg_bytes(CAT), "image/jpeg"))]
    assert_error(client.post("/explain", files=files), 413, "too_many_files")


def test_an_empty_body_is_400(client: TestClient) -> None:
    assert_error(client.post("/explain", content=b""), 400, "no_image")


# --- hostile images: the same answers as /predict


def _single_image(case: Case) -> bool:
    """Cases of at most one image part (/explain takes one; with several it answers 413 too_many_files)."""
    return case.body.count(b'name="file"') <= 1 and case.route == "/predict" and not case.query


@pytest.mark.slow
def test_hostile_uploads_get_the_answers_predict_gives(client: TestClient) -> None:
    differ = []
    cases = [case for case in build_corpus() if _single_image(case)]
    assert len(cases) > 40
    for case in cases:
        predicted = client.post("/predict", content=case.body, headers=case.headers)
        explained = client.post("/explain?grid=4", content=case.body, headers=case.headers)
        if predicted.status_code == 200:
            ok = explained.status_code == 200
        else:
            ok = (explained.status_code, explained.json().get("code")) == (
                predicted.status_code,
                predicted.json().get("code"),
            )
        if not ok:
            differ.append(f"{case.name}: /predict {predicted.status_code}, /explain {explained.text[:200]}")
    assert not differ, "\n".join(differ)


# --- admission control


class GatedRuntime:
    """The real runtime, whose forward passes wait for ``gate`` once ``free`` passes have gone through."""

    def __init__(self, runtime: Any, gate: threading.Event) -> None:
        self.runtime = runtime
        self.name = runtime.name
        self.parallel_calls = runtime.parallel_calls
        self.gate = gate
        self.free = 0
        self.lock = threading.Lock()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        with self.lock:
            free = self.free > 0
            self.free -= free
        if not free:
            assert self.gate.wait(60)
        result: np.ndarray = self.runtime(images)
        return result


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.slow
def test_explanations_are_refused_when_full_while_one_image_requests_are_still_served(
    make_client: Callable[..., TestClient], classifier: Classifier
) -> None:
    gate = threading.Event()
    gate.set()
    gated = Classifier(classifier.info, GatedRuntime(classifier.runtime, gate), classifier.version)

    def factory(_: Settings) -> Classifier:
        return gated

    client = make_client(factory, max_queue_size=24, max_files=16)
    service = client.app.state.service  # type: ignore[attr-defined]
    runtime = gated.runtime
    assert isinstance(runtime, GatedRuntime)
    runtime.free = 1  # the explanation's own image, unmasked: its masked crops then wait at the gate
    gate.clear()
    cat, coffee = jpeg_bytes(CAT), jpeg_bytes(COFFEE)
    finished: dict[str, float] = {}

    def timed(name: str, call: Callable[[], Any]) -> Any:
        response = call()
        finished[name] = time.monotonic()
        return response

    with ThreadPoolExecutor(4) as pool:
        running = pool.submit(timed, "explanation", lambda: client.post("/explain", content=coffee))
        wait_until(lambda: service.admitted >= 16)  # its first 16 masked crops wait for the model
        # Another explanation needs 16 places as well: 16 + 16 is over the 20 that multi-image work may hold.
        refused = client.post("/explain", content=cat)
        assert_error(refused, 503, "overloaded")
        assert refused.headers["Retry-After"] == "1"
        # A one-image /predict is still admitted (the last quarter of the capacity is kept for those).
        predicted = [pool.submit(timed, f"predict{i}", lambda: client.post("/predict", content=cat)) for i in range(2)]
        # Both are decoded and queued behind the explanation's first chunk (a few of which the model holds).
        queued = 16 - service.batcher.workers + 2
        wait_until(lambda: service.admitted == 18 and service.batcher.queue_depth == queued)
        gate.set()
        assert all(p.result().status_code == 200 for p in predicted)
        assert running.result().status_code == 200
    # The predictions queued behind the explanation's first chunk, not behind all of its 50 images.
    assert max(finished["predict0"], finished["predict1"]) < finished["explanation"]
    assert service.admitted == 0


@pytest.mark.slow
def test_every_chunk_of_an_explanation_is_admitted_on_its_own(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(max_files=4, max_queue_size=8)
    service = client.app.state.service  # type: ignore[attr-defined]
    seen: list[int] = []
    original = service.classify_pixels

    async def counting(pixels: Sequence[np.ndarray]) -> list[np.ndarray]:
        seen.append(len(pixels))
        assert service.admitted == 0  # one chunk at a time
        result: list[np.ndarray] = await original(pixels)
        return result

    monkeypatch.setattr(service, "classify_pixels", counting)
    explain(client, jpeg_bytes(CAT), "?grid=5")
    assert seen == [4] * 6 + [1]
    assert max(seen) <= 4


def test_the_explanation_is_within_the_request_timeout(make_client: Callable[..., TestClient]) -> None:
    client = make_client(request_timeout_s=0.05)
    response = client.post(f"/explain?grid={MAX_GRID}", content=jpeg_bytes(CAT))
    assert_error(response, 504, "timeout")


def test_the_crop_box_of_a_landscape_photo() -> None:
    # 451 x 300 becomes 384 x 256, cropped at (80, 16) to (304, 240); scaled back by 300 / 256.
    box = crop_box(Preprocessing(), 451, 300)
    expected = (80 * 451 / 384, 16 * 300 / 256, 304 * 451 / 384, 240 * 300 / 256)
    assert (box.left, box.top, box.right, box.bottom) == pytest.approx(expected)


# --- the cost measurement (python -m bench.explain)


def test_the_benchmark_table_compares_each_explanation_with_predict() -> None:
    predict = Kind("predict", "/predict", 2, latencies_ms=[10.0, 30.0], cpu_s=0.04, count=2)
    grid7 = Kind("explain grid=7", "/explain?grid=7", 1, latencies_ms=[400.0], cpu_s=0.6, count=1)
    rows = table([predict, grid7]).splitlines()
    assert rows[2] == "| `/predict` | 1 | 2 | 20 ms | 30 ms | 20 ms | 1.0x |"
    assert rows[3] == "| `/explain?grid=7` | 50 | 1 | 400 ms | 400 ms | 600 ms | 30.0x |"
