"""Talking to the backend over HTTP: status, model, and one ``POST /predict`` per image.

``Backend`` remembers where the backend is (see ``frontend.discovery``) and locates it again when that
address stops answering, so a redeployed backend with a new URL is found without restarting the frontend.
Every failure becomes a ``BackendError`` carrying a headline for people and the backend's own ``detail``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import requests
from requests.adapters import HTTPAdapter

from frontend.auth import AuthError, IdentityTokens
from frontend.config import FrontendSettings
from frontend.discovery import BackendLocation, BackendLocator, DiscoveryError

logger = logging.getLogger(__name__)

ErrorKind = Literal[
    "not_configured",  # the backend could not be located (discovery failed)
    "auth",  # an identity token was required and could not be minted
    "unreachable",  # nothing answers at the backend's address
    "not_ready",  # 503: loading, shutting down, or overloaded
    "timeout",  # no answer within BACKEND_TIMEOUT_S, or the backend's own 504
    "unauthorized",  # 401/403: a private backend refused the request
    "rejected",  # 4xx: this image (or request) is wrong; other images are unaffected
    "server_error",  # 5xx or an answer that is not the documented JSON
]
REDISCOVER_MIN_INTERVAL_S = 2.0  # a backend that is down does not make every request look it up again
FAILED_LOOKUP_REUSE_S = 5.0  # a failed lookup is reported again, not redone, for this long


class BackendError(Exception):
    """A request to the backend failed. ``title`` is the headline, ``detail`` the backend's explanation."""

    def __init__(
        self,
        kind: ErrorKind,
        title: str,
        detail: str = "",
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(f"{title} {detail}".strip())
        self.kind = kind
        self.title = title
        self.detail = detail
        self.status = status
        self.code = code
        self.retry_after = retry_after

    @property
    def affects_one_image(self) -> bool:
        """True when the problem is this image; otherwise the backend itself is the problem."""
        return self.kind == "rejected"


@dataclass(frozen=True)
class ImageInput:
    filename: str
    data: bytes
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    probability: float


@dataclass(frozen=True)
class ImageResult:
    filename: str
    format: str
    width: int
    height: int
    predictions: tuple[Prediction, ...]
    model: str
    backend_ms: float  # the backend's own elapsed_ms
    round_trip_ms: float  # measured here: network, queueing and the backend together


@dataclass(frozen=True)
class ModelInfo:
    name: str
    weights: str
    runtime: str
    num_classes: int
    input_size: tuple[int, ...]
    max_image_bytes: int | None


@dataclass(frozen=True)
class BackendStatus:
    location: BackendLocation | None
    state: str  # "ready", the backend's own state ("loading", ...), or an ErrorKind
    detail: str
    model: ModelInfo | None = None

    @property
    def ready(self) -> bool:
        return self.state == "ready"


class Backend:
    """The backend as the page sees it: located lazily, re-located when its address stops answering."""

    def __init__(
        self,
        settings: FrontendSettings,
        *,
        locator: BackendLocator | None = None,
        tokens: IdentityTokens | None = None,
        session: requests.Session | None = None,
        rediscover_min_interval_s: float = REDISCOVER_MIN_INTERVAL_S,
        failed_lookup_reuse_s: float = FAILED_LOOKUP_REUSE_S,
    ) -> None:
        self.settings = settings
        self.locator = locator or BackendLocator(settings)
        self.tokens = tokens or IdentityTokens(settings.backend_auth)
        self.session = session or _new_session(settings.predict_concurrency)
        self._rediscover_min_interval_s = rediscover_min_interval_s
        self._failed_lookup_reuse_s = failed_lookup_reuse_s
        self._failed_lookup: tuple[float, BackendError] | None = None
        self._lock = threading.Lock()
        self._location: BackendLocation | None = None
        self._relocated_at = float("-inf")
        self._model: tuple[str, ModelInfo] | None = None  # (url, info): the model only changes with a redeploy

    # --- where the backend is

    def location(self) -> BackendLocation:
        """The backend's address, looked up on first use (and again, every few seconds, while that fails)."""
        with self._lock:
            if self._location is not None:
                return self._location
            if self._failed_lookup is not None:
                failed_at, error = self._failed_lookup
                if time.monotonic() - failed_at < self._failed_lookup_reuse_s:
                    # Page reruns must not each wait for (or spend API quota on) the same failed lookup.
                    raise BackendError(error.kind, error.title, error.detail)
            return self._locate_locked()

    def relocate(self, stale: BackendLocation) -> BackendLocation:
        """``stale`` stopped answering: look the backend up again, unless another request just did."""
        with self._lock:
            if self._location is not None and self._location != stale:
                return self._location  # another thread already found the new address
            now = time.monotonic()
            if now - self._relocated_at < self._rediscover_min_interval_s and self._location is not None:
                return self._location  # looked up moments ago: a backend that is down does not flood the API
            self._relocated_at = now
            location = self._locate_locked()
            if location != stale:
                logger.warning("the backend moved", extra={"old_url": stale.url, "new_url": location.url})
            return location

    def _locate_locked(self) -> BackendLocation:
        try:
            location = self.locator.locate()
        except DiscoveryError as exc:
            logger.warning("could not locate the backend", extra={"code": exc.code, "reason": exc.message})
            error = BackendError("not_configured", "The backend could not be found.", exc.message)
            self._failed_lookup = (time.monotonic(), error)
            raise error from exc
        self._failed_lookup = None
        self._location = location
        return location

    # --- requests

    def _request(self, method: str, path: str, timeout: float, **kwargs: Any) -> requests.Response:
        """Send a request; if the address stopped answering and a fresh lookup gives another, retry there."""
        location = self.location()
        try:
            return self._send(location, method, path, timeout, **kwargs)
        except requests.ConnectionError as exc:
            if location.source == "BACKEND_URL":
                raise _unreachable(location, exc) from exc
            try:
                fresh = self.relocate(location)
            except BackendError:
                raise _unreachable(location, exc) from exc
            if fresh == location:
                raise _unreachable(location, exc) from exc
            try:
                return self._send(fresh, method, path, timeout, **kwargs)
            except requests.ConnectionError as again:
                raise _unreachable(fresh, again) from again

    def _send(
        self, location: BackendLocation, method: str, path: str, timeout: float, **kwargs: Any
    ) -> requests.Response:
        try:
            headers = self.tokens.headers(location.url, self.settings.backend_audience)
        except AuthError as exc:
            raise BackendError("auth", "No identity token for the private backend.", str(exc)) from exc
        connect_timeout = min(timeout, 5.0)
        try:
            return self.session.request(
                method, location.url + path, headers=headers, timeout=(connect_timeout, timeout), **kwargs
            )
        except requests.ConnectTimeout:
            raise  # nothing accepted the connection: a ConnectionError, handled as unreachable
        except requests.Timeout as exc:
            hint = (
                "send fewer or smaller images, or raise BACKEND_TIMEOUT_S"
                if path == "/predict"
                else "or raise STATUS_TIMEOUT_S"
            )
            raise BackendError(
                "timeout",
                f"The backend did not answer within {timeout:g} s.",
                f"It may be overloaded or starting up. Retry, {hint}.",
            ) from exc
        except requests.ConnectionError:
            raise  # handled by _request: unreachable, or moved
        except requests.RequestException as exc:  # a broken answer: bad chunking, decoding, redirects, ...
            raise BackendError(
                "server_error", "The backend's answer could not be read.", f"{type(exc).__name__}: {exc}"[:300]
            ) from exc

    # --- status

    def status(self) -> BackendStatus:
        """Where the backend is, whether ``/ready`` says ready, and (once ready) the model from ``/model``."""
        try:
            location = self.location()
            response = self._request("GET", "/ready", self.settings.status_timeout_s)
        except BackendError as exc:
            return BackendStatus(self._location, exc.kind, f"{exc.title} {exc.detail}".strip())
        location = self._location or location
        body = _json(response)
        if response.status_code in (401, 403):
            error = _error_from_response(response, location)
            return BackendStatus(location, error.kind, f"{error.title} {error.detail}".strip())
        state = str(body.get("status") or ("ready" if response.ok else f"HTTP {response.status_code}"))
        if response.status_code != 200 or state != "ready":
            return BackendStatus(location, state, str(body.get("detail") or ""))
        return BackendStatus(location, "ready", "", self._model_info(location))

    def _model_info(self, location: BackendLocation) -> ModelInfo | None:
        if self._model is not None and self._model[0] == location.url:
            return self._model[1]
        try:
            response = self._request("GET", "/model", self.settings.status_timeout_s)
        except BackendError:
            return None
        body = _json(response)
        if response.status_code != 200 or "name" not in body:
            return None
        info = ModelInfo(
            name=str(body["name"]),
            weights=str(body.get("weights", "")),
            runtime=str(body.get("runtime", "")),
            num_classes=int(body.get("num_classes", 0)),
            input_size=tuple(int(n) for n in body.get("input_size", ())),
            max_image_bytes=int(body["max_image_bytes"]) if "max_image_bytes" in body else None,
        )
        self._model = (location.url, info)
        return info

    # --- predictions

    def predict(self, image: ImageInput, top_k: int) -> ImageResult:
        """Classify one image; raise BackendError (``rejected`` when the image itself is the problem)."""
        started = time.perf_counter()
        response = self._request(
            "POST",
            "/predict",
            self.settings.backend_timeout_s,
            params={"top_k": top_k},
            files={"file": (image.filename, image.data, image.content_type)},
        )
        round_trip_ms = (time.perf_counter() - started) * 1000
        location = self._location
        if response.status_code != 200:
            error = _error_from_response(response, location)
            logger.warning(
                "prediction failed",
                extra={"image": image.filename, "status": response.status_code, "code": error.code},
            )
            raise error
        try:
            result = _parse_prediction(_json(response), round_trip_ms)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise BackendError(
                "server_error", "The backend's answer was not the expected JSON.", response.text[:200]
            ) from exc
        logger.info(
            "classified an image",
            extra={
                "image": image.filename,
                "label": result.predictions[0].label if result.predictions else None,
                "backend_ms": round(result.backend_ms, 1),
                "round_trip_ms": round(round_trip_ms, 1),
            },
        )
        return result

    def predict_many(self, images: Sequence[ImageInput], top_k: int) -> list[ImageResult | BackendError]:
        """One request per image, a few at a time (the backend batches concurrent requests together).

        Each image gets its own result or error, in order, so one bad file does not hide the others.
        """

        def one(image: ImageInput) -> ImageResult | BackendError:
            try:
                return self.predict(image, top_k)
            except BackendError as exc:
                return exc

        if len(images) <= 1:
            return [one(image) for image in images]
        with ThreadPoolExecutor(max_workers=min(self.settings.predict_concurrency, len(images))) as pool:
            return list(pool.map(one, images))


def _new_session(pool_size: int) -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(pool_size, 2))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "image-classifier-frontend"
    return session


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _unreachable(location: BackendLocation, exc: requests.ConnectionError) -> BackendError:
    logger.warning("the backend is unreachable", extra={"url": location.url, "reason": str(exc)[:300]})
    return BackendError(
        "unreachable",
        f"The backend at {location.url} is not answering.",
        "It may be starting, redeploying or down. Retry in a moment; if it persists, check that the backend "
        "runs and that its address is right.",
    )


def _error_from_response(response: requests.Response, location: BackendLocation | None) -> BackendError:
    body = _json(response)
    status = response.status_code
    detail = str(body.get("detail") or "") or _plain_text(response)
    code = str(body["code"]) if "code" in body else None
    retry_after = response.headers.get("Retry-After")
    where = location.url if location else "the backend"
    if status in {503, 429}:
        busy = code == "overloaded" or status == 429
        title = "The backend is busy." if busy else "The backend is not ready yet."
        hint = f" Retry in {retry_after} s." if retry_after else " Retry in a few seconds."
        return BackendError("not_ready", title + hint, detail, status=status, code=code, retry_after=retry_after)
    if status == 504:
        return BackendError("timeout", "The backend took too long.", detail, status=status, code=code)
    if status in (401, 403):
        return BackendError(
            "unauthorized",
            f"The backend at {where} refused the request ({status}).",
            (detail + " " if body else "")
            + "If it is a private Cloud Run service, give the frontend's service account roles/run.invoker on "
            "it. The frontend sends an identity token to https URLs (BACKEND_AUTH=auto); set "
            "BACKEND_AUTH=id_token to always send one, and BACKEND_AUDIENCE if the backend expects another "
            "audience.",
            status=status,
            code=code,
        )
    if 400 <= status < 500:
        return BackendError("rejected", "This image could not be classified.", detail, status=status, code=code)
    return BackendError("server_error", f"The backend failed ({status}).", detail, status=status, code=code)


def _plain_text(response: requests.Response) -> str:
    if "html" in response.headers.get("Content-Type", ""):
        return f"HTTP {response.status_code} {response.reason}"
    return response.text.strip()[:300] or f"HTTP {response.status_code} {response.reason}"


def _parse_prediction(body: Mapping[str, Any], round_trip_ms: float) -> ImageResult:
    first = body["results"][0]
    predictions = tuple(
        Prediction(int(p["index"]), str(p["label"]), float(p["probability"])) for p in first["predictions"]
    )
    return ImageResult(
        filename=str(first.get("filename") or ""),
        format=str(first.get("format") or ""),
        width=int(first["width"]),
        height=int(first["height"]),
        predictions=predictions,
        model=str(body.get("model", "")),
        backend_ms=float(body["elapsed_ms"]),
        round_trip_ms=round_trip_ms,
    )
