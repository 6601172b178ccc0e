"""TorchServe's inference API, called with the ``curl`` lines of TorchServe's own documentation (host changed).

TorchServe's image_classifier answers ``{label: probability}`` for the top 5 classes (its README:
``curl http://127.0.0.1:8080/predictions/densenet161 -T kitten_small.jpg`` → ``{"tiger_cat": 0.4693...,
"tabby": 0.4633..., "Egyptian_cat": 0.0645..., "lynx": 0.0012..., "plastic_bag": 0.0002...}``);
here the same shape, with this model's labels and the probabilities ``/predict`` gives.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import CAT, CAT_CLASSES, COFFEE, COFFEE_CLASSES, jpeg_bytes, need_executable

pytestmark = pytest.mark.slow  # a real server

MODEL = "efficientnet_lite0"


def curl(*args: str) -> tuple[int, Any]:
    """Run curl; the status and the JSON body."""
    run = subprocess.run(
        [need_executable("curl"), "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True, check=True
    )
    body, status = run.stdout.rsplit("\n", 1)
    return int(status), json.loads(body)


def top5(base: str, image: bytes) -> dict[str, float]:
    predictions = httpx.post(f"{base}/predict?top_k=5", content=image, timeout=60).json()["results"][0]["predictions"]
    return {p["label"]: p["probability"] for p in predictions}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("photos")
    (folder / "kitten.jpg").write_bytes(jpeg_bytes(CAT))
    (folder / "coffee.jpg").write_bytes(jpeg_bytes(COFFEE))
    return folder / "kitten.jpg", folder / "coffee.jpg"


def test_ping_and_the_model_listing_have_torchserves_shapes(live_backend: str) -> None:
    assert curl(f"{live_backend}/ping") == (200, {"status": "Healthy"})
    status, listing = curl(f"{live_backend}/models")
    assert status == 200
    assert [m["modelName"] for m in listing["models"]] == [MODEL]
    for path in (f"/models/{MODEL}", f"/models/{MODEL}/1.0"):
        status, (described,) = curl(f"{live_backend}{path}")
        assert status == 200
        assert described["modelName"] == MODEL
        assert described["modelVersion"] == "1.0"
        assert described["workers"]
        assert {w["status"] for w in described["workers"]} == {"READY"}
        assert described["batchSize"] >= 1


@pytest.mark.parametrize(
    "how",
    [
        ["-T"],  # TorchServe's README: a PUT of the raw file
        ["-X", "POST", "--data-binary"],  # a raw POST body, no Content-Type worth the name
        ["-F"],  # multipart, field "data"
    ],
    ids=["put-raw", "post-raw", "multipart-data"],
)
def test_predictions_answer_the_top_5_as_label_probability(
    live_backend: str, photos: tuple[Path, Path], how: list[str]
) -> None:
    kitten, coffee = photos
    for photo, classes in ((kitten, CAT_CLASSES), (coffee, COFFEE_CLASSES)):
        argument = f"data=@{photo}" if how == ["-F"] else (f"@{photo}" if "--data-binary" in how else str(photo))
        status, answer = curl(f"{live_backend}/predictions/{MODEL}", *how, argument)
        assert status == 200
        assert isinstance(answer, dict)
        assert len(answer) == 5
        assert next(iter(answer)) in classes  # most probable first, as the handler orders them
        assert list(answer.values()) == sorted(answer.values(), reverse=True)
        expected = top5(live_backend, photo.read_bytes())
        assert list(answer) == list(expected)
        assert answer == pytest.approx(expected, abs=1e-9)


def test_several_data_parts_answer_a_list_in_order(live_backend: str, photos: tuple[Path, Path]) -> None:
    kitten, coffee = photos
    status, answer = curl(f"{live_backend}/predictions/{MODEL}/1.0", "-F", f"data=@{kitten}", "-F", f"data=@{coffee}")
    assert status == 200
    assert isinstance(answer, list)
    assert [next(iter(a)) in c for a, c in zip(answer, (CAT_CLASSES, COFFEE_CLASSES), strict=True)] == [True, True]


@pytest.mark.parametrize(
    ("path", "args", "status", "kind"),
    [
        (f"/predictions/{MODEL}", ["--data-binary", "not an image", "-H", "Content-Type: image/jpeg"], 415, None),
        ("/predictions/resnet-18", ["--data-binary", "x"], 404, "ModelNotFoundException"),
        (f"/predictions/{MODEL}/9.9", ["--data-binary", "x"], 404, "ModelNotFoundException"),
        (f"/predictions/{MODEL}", ["-X", "POST"], 400, "BadRequestException"),
        (f"/predictions/{MODEL}", ["-F", "image=@/dev/null"], 400, "BadRequestException"),
        ("/models/resnet-18", [], 404, "ModelNotFoundException"),
    ],
)
def test_errors_have_torchserves_shape(
    live_backend: str, path: str, args: list[str], status: int, kind: str | None
) -> None:
    got, body = curl(f"{live_backend}{path}", *args)
    assert got == status
    assert set(body) == {"code", "type", "message"}
    assert body["code"] == status
    assert body["message"]
    if kind is not None:
        assert body["type"] == kind
