"""Load test for the image classifier's two services (locust).

Four user classes, each of which can run alone (name it on the command line):

- ``BackendUser`` posts real photos to ``POST /predict`` (multipart with one or several files, and raw
  bodies), checks every answer's content (status, JSON shape, sizes, and that the top-1 class is
  plausible for the photo), and polls ``GET /ready``. Its host is locust's ``--host``.
- ``V2BinaryUser`` is a Triton/KServe client: it posts the photos to ``/v2/models/{name}/infer`` in
  tritonclient's binary wire format (``bench/wire.py``), asks for the top classes as JSON (Triton's
  classification extension) and checks them, and polls ``GET /v2/health/ready``. Same host.
- ``TorchServeUser`` is a TorchServe client: the photo as the raw body of ``POST``/``PUT
  /predictions/{name}``, the top 5 as ``{label: probability}`` checked, and ``GET /ping``. Same host.
- ``FrontendUser`` loads the Streamlit page ``/`` and its health endpoint ``/_stcore/health``. Its host is
  ``--frontend-host`` (env ``FRONTEND_HOST``), so one run can load both services.

Photos: by default made at start-up from scikit-image's sample photos (a cat and a cup of espresso) at
320x240, 640x480, 1920x1080 and 4032x3024 (12 megapixels, a phone photo), so the top-1 class of each is
known and checked. ``--images-dir DIR`` (env ``LOCUST_IMAGES_DIR``) sends your own JPEG/PNG/WebP files
instead; their answers are checked for shape only.

Private Cloud Run services: ``LOCUST_AUTH_TOKEN`` (backend) and ``FRONTEND_AUTH_TOKEN`` (frontend) are
sent as ``Authorization: Bearer ...``; fill them from ``gcloud auth print-identity-token``.

    locust -f locustfile.py --headless -u 16 -r 4 -t 1m --host http://127.0.0.1:8000 BackendUser

See docs/loadtest.md.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gevent.lock import BoundedSemaphore  # type: ignore[import-untyped]  # gevent (locust's) has no stubs
from locust import HttpUser, between, events, task
from locust.clients import ResponseContextManager
from locust.env import Environment
from locust.exception import StopUser

# The benchmark's photo maker (real photos from scikit-image, a dev dependency, like locust itself) and the
# protocols' wire formats. Imported here, not where they are used: locust puts this file's folder on
# sys.path only while it imports the file.
from bench import photos as photo_maker
from bench import wire

logger = logging.getLogger("locustfile")

# The sample photos and the top-1 classes this model may give them (ImageNet labels).
SAMPLE_PHOTOS: dict[str, frozenset[str]] = {
    "chelsea": frozenset({"tabby", "tiger cat", "Egyptian cat"}),  # a tabby cat
    "coffee": frozenset({"espresso"}),  # a cup of espresso
}
SIZES: tuple[tuple[int, int], ...] = ((320, 240), (640, 480), (1920, 1080), (4032, 3024))
IMAGE_SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
MULTI_FILES = 3
V2_CLASSES = 3  # the classification output's k, as tritonclient's InferRequestedOutput(class_count=3) asks
TORCHSERVE_TOP_K = 5  # what TorchServe's image_classifier handler answers


@dataclass(frozen=True)
class Photo:
    filename: str
    data: bytes
    content_type: str
    width: int | None  # as the server must report it; None when unknown (EXIF rotation of user files)
    height: int | None
    expected_top1: frozenset[str] | None  # None: the content is not checked


@dataclass
class Settings:
    photos: list[Photo]
    frontend_host: str
    auth_token: str
    frontend_auth_token: str


SETTINGS = Settings(photos=[], frontend_host="", auth_token="", frontend_auth_token="")


def sample_photos() -> list[Photo]:
    return [
        Photo(
            f"{name}-{width}x{height}.jpg",
            photo_maker.photo(name, (width, height)).jpeg,
            "image/jpeg",
            width,
            height,
            expected,
        )
        for name, expected in SAMPLE_PHOTOS.items()
        for width, height in SIZES
    ]


def folder_photos(folder: Path) -> list[Photo]:
    photos = [
        Photo(path.name, path.read_bytes(), IMAGE_SUFFIXES[path.suffix.lower()], None, None, None)
        for path in sorted(folder.iterdir())
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not photos:
        raise SystemExit(f"--images-dir {folder}: no {', '.join(sorted(IMAGE_SUFFIXES))} files")
    return photos


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]  # locust's hooks are untyped
def _add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--images-dir",
        default="",
        env_var="LOCUST_IMAGES_DIR",
        help="folder of images to send (default: sample photos made at start-up, with checked labels)",
    )
    parser.add_argument(
        "--frontend-host",
        default="http://127.0.0.1:8501",
        env_var="FRONTEND_HOST",
        help="base URL of the Streamlit frontend, for FrontendUser",
    )
    parser.add_argument(
        "--auth-token",
        default="",
        env_var="LOCUST_AUTH_TOKEN",
        is_secret=True,
        help="bearer token for a private backend (gcloud auth print-identity-token)",
    )
    parser.add_argument(
        "--frontend-auth-token",
        default="",
        env_var="FRONTEND_AUTH_TOKEN",
        is_secret=True,
        help="bearer token for a private frontend",
    )


@events.init.add_listener  # type: ignore[untyped-decorator]
def _load(environment: Environment, **_kwargs: Any) -> None:
    options = environment.parsed_options
    if options is None:  # locust used as a library: defaults
        SETTINGS.photos = sample_photos()
        SETTINGS.frontend_host = "http://127.0.0.1:8501"
        return
    SETTINGS.photos = folder_photos(Path(options.images_dir)) if options.images_dir else sample_photos()
    SETTINGS.frontend_host = options.frontend_host.rstrip("/")
    SETTINGS.auth_token = options.auth_token
    SETTINGS.frontend_auth_token = options.frontend_auth_token
    FrontendUser.host = SETTINGS.frontend_host
    logger.info(
        "%d photos to send, %.1f MB in all", len(SETTINGS.photos), sum(len(p.data) for p in SETTINGS.photos) / 1e6
    )


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _problems(payload: Any, photos: list[Photo], top_k: int) -> Iterator[str]:
    if not isinstance(payload, dict):
        yield f"the answer is not a JSON object: {str(payload)[:200]}"
        return
    for key, kind in (("model", str), ("top_k", int), ("results", list), ("elapsed_ms", (int, float))):
        if not isinstance(payload.get(key), kind):
            yield f"{key!r} is missing or not {kind}"
            return
    if payload["top_k"] != top_k:
        yield f"top_k is {payload['top_k']}, asked for {top_k}"
    if len(payload["results"]) != len(photos):
        yield f"{len(payload['results'])} results for {len(photos)} images"
        return
    for photo, result in zip(photos, payload["results"], strict=True):
        yield from _result_problems(photo, result, top_k)


def _result_problems(photo: Photo, result: Any, top_k: int) -> Iterator[str]:
    name = photo.filename
    if not isinstance(result, dict):
        yield f"{name}: the result is not an object: {str(result)[:200]}"
        return
    size = (result.get("width"), result.get("height"))
    if photo.width is not None and size != (photo.width, photo.height):
        yield f"{name}: the answer says {size[0]}x{size[1]}, the photo is {photo.width}x{photo.height}"
    predictions = result.get("predictions")
    if (
        not isinstance(predictions, list)
        or len(predictions) != top_k
        or not all(isinstance(p, dict) for p in predictions)
    ):
        yield f"{name}: expected {top_k} predictions, got {str(predictions)[:200]}"
        return
    ranking = _ranking_problem(name, [p.get("probability") for p in predictions])
    if ranking:
        yield ranking
    top1 = _top1_problem(photo, predictions[0].get("label"))
    if top1:
        yield top1


def problem_with_prediction(payload: Any, photos: list[Photo], top_k: int) -> str | None:
    """What is wrong with a ``/predict`` answer for ``photos`` (the first problem found), or None."""
    return next(_problems(payload, photos, top_k), None)


def _ranking_problem(name: str, scores: list[Any]) -> str | None:
    if not all(isinstance(p, float) and math.isfinite(p) and 0.0 <= p <= 1.0 for p in scores):
        return f"{name}: probabilities are not in [0, 1]: {scores}"
    if scores != sorted(scores, reverse=True):
        return f"{name}: predictions are not ranked by probability: {scores}"
    return None


def _top1_problem(photo: Photo, top1: Any) -> str | None:
    if photo.expected_top1 is not None and top1 not in photo.expected_top1:
        return f"{photo.filename}: top-1 is {top1!r}, expected one of {sorted(photo.expected_top1)}"
    return None


def _classification_row(photo: Photo, strings: list[Any]) -> Iterator[str]:
    """One image's ``"score:index:label"`` strings (Triton's classification extension), most probable first."""
    scores: list[Any] = []
    labels: list[str] = []
    for text in strings:
        score, _, rest = str(text).partition(":")
        index, _, label = rest.partition(":")
        try:
            scores.append(float(score))
            int(index)
        except ValueError:
            yield f"{photo.filename}: {text!r} is not 'score:index:label'"
            return
        labels.append(label)
    for problem in (_ranking_problem(photo.filename, scores), _top1_problem(photo, labels[0])):
        if problem:
            yield problem


def _v2_problems(payload: Any, photos: list[Photo], k: int) -> Iterator[str]:
    if not isinstance(payload, dict):
        yield f"the answer is not a JSON object: {str(payload)[:200]}"
        return
    outputs = payload.get("outputs")
    if not isinstance(outputs, list) or len(outputs) != 1 or not isinstance(outputs[0], dict):
        yield f"expected one output, got {str(outputs)[:200]}"
        return
    output = outputs[0]
    expected = {"name": wire.V2_OUTPUT, "datatype": "BYTES", "shape": [len(photos), k]}
    found = {key: output.get(key) for key in expected}
    if found != expected:
        yield f"the output is {found}, expected {expected}"
        return
    data = output.get("data")
    if not isinstance(data, list) or len(data) != len(photos) * k:
        yield f"expected {len(photos) * k} classification strings in 'data', got {str(data)[:200]}"
        return
    for i, photo in enumerate(photos):
        yield from _classification_row(photo, data[i * k : (i + 1) * k])


def problem_with_v2_answer(payload: Any, photos: list[Photo], k: int) -> str | None:
    """What is wrong with a v2 infer answer (classification output of ``k``, as JSON) for ``photos``, or None."""
    return next(_v2_problems(payload, photos, k), None)


def problem_with_torchserve_answer(payload: Any, photo: Photo) -> str | None:
    """What is wrong with a TorchServe ``/predictions`` answer for one ``photo`` (``{label: probability}``)."""
    if not isinstance(payload, dict) or len(payload) != TORCHSERVE_TOP_K:
        return f"expected the top {TORCHSERVE_TOP_K} as {{label: probability}}, got {str(payload)[:200]}"
    return _ranking_problem(photo.filename, list(payload.values())) or _top1_problem(photo, next(iter(payload)))


def _verdict(response: Any, problem: str | None) -> None:
    """Record the request as failed with ``problem``, or as a success (locust's catch_response)."""
    if problem:
        response.failure(problem)
    else:
        response.success()


def _prediction_problem(response: ResponseContextManager, photos: list[Photo], top_k: int) -> str | None:
    payload, problem = _json_problem(response)
    return problem or problem_with_prediction(payload, photos, top_k)


def _json_problem(response: ResponseContextManager) -> tuple[Any, str | None]:
    """The answer's JSON, or why there is none worth checking."""
    if response.status_code != 200:
        return None, f"HTTP {response.status_code}: {response.text[:300]}"
    try:
        return response.json(), None
    except (ValueError, json.JSONDecodeError):
        return None, f"not JSON: {response.text[:300]}"


def _status_problem(response: ResponseContextManager, must_contain: str = "") -> str | None:
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    if must_contain not in response.text:
        return f"the answer does not contain {must_contain!r}: {response.text[:300]}"
    return None


class BackendUser(HttpUser):
    """An API client: curl users and scripts posting photos, plus a health checker."""

    wait_time = between(0.05, 0.5)

    @task(6)
    def predict_multipart(self) -> None:
        photo = random.choice(SETTINGS.photos)
        with self.client.post(
            "/predict",
            files={"file": (photo.filename, photo.data, photo.content_type)},
            headers=_auth(SETTINGS.auth_token),
            name="/predict multipart",
            catch_response=True,
        ) as response:
            _verdict(response, _prediction_problem(response, [photo], 5))

    @task(3)
    def predict_raw(self) -> None:
        photo = random.choice(SETTINGS.photos)
        with self.client.post(
            "/predict?top_k=3",
            data=photo.data,
            headers={"Content-Type": photo.content_type, **_auth(SETTINGS.auth_token)},
            name="/predict raw",
            catch_response=True,
        ) as response:
            _verdict(response, _prediction_problem(response, [photo], 3))

    @task(1)
    def predict_several(self) -> None:
        photos = random.sample(SETTINGS.photos, min(MULTI_FILES, len(SETTINGS.photos)))
        with self.client.post(
            "/predict?top_k=1",
            files=[("file", (p.filename, p.data, p.content_type)) for p in photos],
            headers=_auth(SETTINGS.auth_token),
            name=f"/predict multipart x{len(photos)}",
            catch_response=True,
        ) as response:
            _verdict(response, _prediction_problem(response, photos, 1))

    @task(1)
    def ready(self) -> None:
        with self.client.get(
            "/ready", headers=_auth(SETTINGS.auth_token), name="/ready", catch_response=True
        ) as response:
            _verdict(response, _status_problem(response))


def _metadata(user: HttpUser, path: str, name: str) -> dict[str, Any]:
    """A metadata answer read once at start; a failed request stops the user (nothing else could work)."""
    with user.client.get(path, headers=_auth(SETTINGS.auth_token), name=name, catch_response=True) as response:
        payload, problem = _json_problem(response)
        if problem is None and not isinstance(payload, dict):
            problem = f"the answer is not a JSON object: {str(payload)[:200]}"
        _verdict(response, problem)
    if problem:
        raise StopUser
    metadata: dict[str, Any] = payload
    return metadata


class V2BinaryUser(HttpUser):
    """A Triton or KServe client (Open Inference Protocol v2): binary tensor data, as tritonclient sends it."""

    wait_time = between(0.05, 0.5)
    model = ""  # read from /model and checked against /v2/models/{name} by the first user to start
    _reading = BoundedSemaphore()  # the users started at the same time wait for the first one's reading

    def on_start(self) -> None:
        with self._reading:
            if not V2BinaryUser.model:
                self._read_model()

    def _read_model(self) -> None:
        name = _metadata(self, "/model", "/model").get("name")
        metadata = _metadata(self, f"/v2/models/{name}", "/v2/models/[name]")
        inputs = {i.get("name"): i.get("datatype") for i in metadata.get("inputs", []) if isinstance(i, dict)}
        if inputs.get(wire.V2_IMAGE_INPUT) != "BYTES":
            logger.error("/v2/models/%s has no BYTES input %s: %s", name, wire.V2_IMAGE_INPUT, metadata)
            raise StopUser
        V2BinaryUser.model = str(name)

    def _infer(self, photos: list[Photo], request_name: str) -> None:
        request = wire.v2_binary_request([p.data for p in photos], V2_CLASSES, binary_output=False)
        with self.client.post(
            f"/v2/models/{self.model}/infer",
            data=request.body,  # no Content-Type, as tritonclient sends it
            headers={**request.headers, **_auth(SETTINGS.auth_token)},
            name=request_name,
            catch_response=True,
        ) as response:
            payload, problem = _json_problem(response)
            if problem is None and wire.INFERENCE_HEADER in response.headers:
                problem = f"a binary answer ({wire.INFERENCE_HEADER}), but the output asked for JSON"
            _verdict(response, problem or problem_with_v2_answer(payload, photos, V2_CLASSES))

    @task(3)
    def infer_one(self) -> None:
        self._infer([random.choice(SETTINGS.photos)], "/v2/models/[name]/infer binary")

    @task(1)
    def infer_several(self) -> None:
        photos = random.sample(SETTINGS.photos, min(MULTI_FILES, len(SETTINGS.photos)))
        self._infer(photos, f"/v2/models/[name]/infer binary x{len(photos)}")

    @task(1)
    def ready(self) -> None:
        with self.client.get(
            "/v2/health/ready", headers=_auth(SETTINGS.auth_token), name="/v2/health/ready", catch_response=True
        ) as response:
            payload, problem = _json_problem(response)
            if problem is None and payload != {"ready": True}:
                problem = f"expected {{'ready': true}}, got {str(payload)[:200]}"
            _verdict(response, problem)


class TorchServeUser(HttpUser):
    """A TorchServe client: the photo as the raw body (``curl -T kitten.jpg``), and ``/ping``."""

    wait_time = between(0.05, 0.5)
    model = ""  # read from TorchServe's GET /models by the first user to start
    _reading = BoundedSemaphore()

    def on_start(self) -> None:
        with self._reading:
            if not TorchServeUser.model:
                self._read_model()

    def _read_model(self) -> None:
        models = _metadata(self, "/models", "/models").get("models")
        if not isinstance(models, list) or not models or not isinstance(models[0], dict):
            logger.error("GET /models lists no model: %s", models)
            raise StopUser
        TorchServeUser.model = str(models[0].get("modelName"))

    def _predict(self, method: str) -> None:
        photo = random.choice(SETTINGS.photos)
        with self.client.request(
            method,
            f"/predictions/{self.model}",
            data=photo.data,
            headers=_auth(SETTINGS.auth_token),
            name=f"/predictions/[name] raw {method}",
            catch_response=True,
        ) as response:
            payload, problem = _json_problem(response)
            _verdict(response, problem or problem_with_torchserve_answer(payload, photo))

    @task(3)
    def predict_post(self) -> None:
        self._predict("POST")

    @task(1)
    def predict_put(self) -> None:  # TorchServe's README: curl -T kitten.jpg
        self._predict("PUT")

    @task(1)
    def ping(self) -> None:
        with self.client.get(
            "/ping", headers=_auth(SETTINGS.auth_token), name="/ping", catch_response=True
        ) as response:
            _verdict(response, _status_problem(response, '"Healthy"'))


class FrontendUser(HttpUser):
    """A browser opening the Streamlit page (the page itself; the app's websocket is not driven)."""

    wait_time = between(0.5, 2.0)
    host = "http://127.0.0.1:8501"  # replaced by --frontend-host; absolute URLs keep --host for the backend

    def on_start(self) -> None:
        self.page()  # a visitor opens the page first, then reloads it now and then while Streamlit polls health

    @task(1)
    def page(self) -> None:
        with self.client.get(
            f"{SETTINGS.frontend_host}/",
            headers=_auth(SETTINGS.frontend_auth_token),
            name="frontend /",
            catch_response=True,
        ) as response:
            _verdict(response, _status_problem(response, 'id="root"'))  # Streamlit's page, not an error page

    @task(3)
    def health(self) -> None:
        with self.client.get(
            f"{SETTINGS.frontend_host}/_stcore/health",
            headers=_auth(SETTINGS.frontend_auth_token),
            name="frontend /_stcore/health",
            catch_response=True,
        ) as response:
            _verdict(response, _status_problem(response, "ok"))
