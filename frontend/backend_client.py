"""Talking to the backend over HTTP: status, model, and one ``POST /predict`` per image.

``Backend`` asks ``frontend.discovery`` where the backend is (and to look again when that address stops
answering), sends each request through a session whose ``frontend.auth.IdentityTokenAuth`` adds the identity
token, within one deadline and up to a size cap (``frontend._transport``). Every failure becomes a
``BackendError`` carrying a headline for people and the backend's own ``detail``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import math
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import requests
import urllib3.exceptions

from frontend._transport import (
    MAX_ANSWER_BYTES,
    Answer,
    AnswerTooLarge,
    TooSlow,
    UnreadableAnswer,
    megabytes,
    new_session,
    send,
)
from frontend.auth import AuthError, IdentityTokenAuth, IdentityTokens, refusal_advice
from frontend.config import AuthMode, FrontendSettings
from frontend.discovery import (
    FAILED_LOOKUP_REUSE_S,
    REDISCOVER_MIN_INTERVAL_S,
    BackendLocation,
    BackendLocator,
    DiscoveryError,
    LocationCache,
    MetadataUnreachable,
)
from frontend.tracing import page_run, tracing_for

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

__all__ = [
    "MAX_ANSWER_BYTES",
    "REFUSALS",
    "STARTING_GRACE_S",
    "Backend",
    "BackendError",
    "BackendStatus",
    "ClassProbability",
    "Classification",
    "ErrorKind",
    "Explanation",
    "ImageInput",
    "ServedModel",
    "megabytes",
]

logger = logging.getLogger(__name__)

ErrorKind = Literal[
    "not_configured",  # the backend could not be located (discovery failed)
    "metadata",  # on Cloud Run, the metadata server (identity, project, region) could not be reached
    "auth",  # an identity token was required and could not be minted
    "starting",  # the backend is starting: loading its model, or (a cold start) not answering in time yet
    "unreachable",  # nothing answers at the backend's address
    "not_ready",  # 503: shutting down, failed, or overloaded
    "timeout",  # no answer within BACKEND_TIMEOUT_S, or the backend's own 504
    "unauthorized",  # 401/403: a private backend refused the request
    "rejected",  # 4xx: this image (or request) is wrong; other images are unaffected
    "server_error",  # 5xx or an answer that is not the documented JSON
]
# The heat map of an explanation: an RGBA PNG of at most 256 x 256 pixels (a few tens of kB).
MAX_HEATMAP_BYTES = 512 * 1024
# A backend that has not answered this frontend yet and refuses connections is taken to be starting for
# this long after the first try (``make run`` starts both at once; a container takes a moment to listen).
STARTING_GRACE_S = 60.0
# Problems that no retry fixes: the status says so instead of "Ready" even when /ready (open) answers.
REFUSALS: frozenset[str] = frozenset({"unauthorized", "auth", "metadata"})


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
class ClassProbability:
    index: int
    label: str
    probability: float


@dataclass(frozen=True)
class Classification:
    filename: str
    format: str
    width: int
    height: int
    predictions: tuple[ClassProbability, ...]
    model: str
    backend_ms: float  # the backend's own elapsed_ms
    round_trip_ms: float  # measured here: network, queueing and the backend together
    model_version: str = ""  # the content hash of the model that answered ("" from a backend that does not say)


@dataclass(frozen=True)
class Explanation:
    """Where in an image the model sees a class (``POST /explain``): a heat map laid out like the image."""

    label: str  # the class explained (the image's top class)
    probability: float
    grid: int  # cells per side of the occlusion grid
    heatmap_png: bytes  # RGBA, the original's aspect, transparent outside the model's crop
    colormap: tuple[tuple[int, int, int], ...]  # the heat map's colours from least to most influence
    backend_ms: float
    round_trip_ms: float


@dataclass(frozen=True)
class ServedModel:
    name: str
    weights: str
    runtime: str
    num_classes: int
    input_size: tuple[int, ...]
    max_image_bytes: int | None


@dataclass(frozen=True)
class BackendStatus:
    location: BackendLocation | None
    state: str  # "ready", an ErrorKind, or the backend's own state ("failed", "stopping", ...)
    detail: str  # the problem in one line ("" when ready)
    model: ServedModel | None = None
    problem: BackendError | None = None  # what is wrong, as the page shows it (None when ready)

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def starting(self) -> bool:
        return self.state == "starting"

    @classmethod
    def of(cls, location: BackendLocation | None, problem: BackendError) -> BackendStatus:
        return cls(location, problem.kind, f"{problem.title} {problem.detail}".strip(), problem=problem)


class Backend:
    """The backend as the page sees it: located lazily, re-located when its address stops answering."""

    def __init__(
        self,
        settings: FrontendSettings,
        *,
        locator: BackendLocator | None = None,
        tokens: IdentityTokens | None = None,
        rediscover_min_interval_s: float = REDISCOVER_MIN_INTERVAL_S,
        failed_lookup_reuse_s: float = FAILED_LOOKUP_REUSE_S,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.settings = settings
        # None unless TRACE_EXPORTER (or tracer_provider) says: then no span, no trace header (frontend.tracing).
        self.tracing = tracing_for(settings, tracer_provider)
        self.locations = LocationCache(
            locator or BackendLocator(settings),
            rediscover_min_interval_s=rediscover_min_interval_s,
            failed_lookup_reuse_s=failed_lookup_reuse_s,
        )
        self.tokens = tokens or IdentityTokens(settings.backend_auth)
        self.auth = IdentityTokenAuth(self.tokens, settings.backend_audience, settings.backend_url)
        self.session = new_session(settings.predict_concurrency)
        self.session.auth = self.auth
        self._model: tuple[str, ServedModel] | None = None  # (url, model): the model only changes with a redeploy
        self._answered = False  # has the backend ever answered this frontend (any HTTP answer)?
        self._first_try: float | None = None  # when this frontend first tried to reach it

    # --- where the backend is

    def location(self) -> BackendLocation:
        """The backend's address (``LocationCache.current``); BackendError when it cannot be found."""
        try:
            return self.locations.current()
        except DiscoveryError as exc:
            raise _not_found(exc) from exc

    # --- requests

    def _request(self, method: str, path: str, timeout: float, **kwargs: Any) -> Answer:
        """Send a request; if the address stopped answering and a fresh lookup gives another, retry there."""
        location = self.location()
        if self._first_try is None:
            self._first_try = time.monotonic()
        try:
            return self._send(location, method, path, timeout, **kwargs)
        except requests.ConnectionError as exc:
            if location.source == "BACKEND_URL":
                raise self._unreachable(location, exc) from exc
            try:
                fresh = self.locations.relocate(location)
            except DiscoveryError:
                raise self._unreachable(location, exc) from exc
            if fresh == location:
                raise self._unreachable(location, exc) from exc
            try:
                return self._send(fresh, method, path, timeout, **kwargs)
            except requests.ConnectionError as again:
                raise self._unreachable(fresh, again) from again

    def _unreachable(self, location: BackendLocation, exc: requests.ConnectionError) -> BackendError:
        """No answer: "starting" if no connection could be made, the backend never answered this frontend yet
        and the frontend only began trying (STARTING_GRACE_S ago at most); otherwise "unreachable"."""
        logger.warning("the backend is unreachable", extra={"url": location.url, "reason": str(exc)[:300]})
        first_try = self._first_try if self._first_try is not None else time.monotonic()
        if _refused(exc) and not self._answered and time.monotonic() - first_try < STARTING_GRACE_S:
            return BackendError(
                "starting",
                "The backend is starting.",
                f"Nothing accepts connections at {location.url} yet. The page asks again each time it runs: "
                "click Retry in a moment. If this lasts, check that the backend runs and that its address is right.",
            )
        return _unreachable(location)

    def page_run(self) -> contextlib.AbstractContextManager[object]:
        """A span over one page run, parent of its requests' spans, when tracing is on; nothing when off."""
        return page_run(self.tracing)

    def _send(self, location: BackendLocation, method: str, path: str, timeout: float, **kwargs: Any) -> Answer:
        """One request, answered within ``timeout`` seconds in all (headers and body), at most
        ``MAX_ANSWER_BYTES`` long; raise BackendError otherwise (requests.ConnectionError: nothing answers)."""
        # Our answers are small: no compression (a compressed answer could unpack to gigabytes).
        headers = {"Accept-Encoding": "identity"}
        if self.tracing is None:
            return self._send_with(headers, location, method, path, timeout, **kwargs)
        with self.tracing.client_span(method, location.url + path, headers) as span:  # adds traceparent
            answer = self._send_with(headers, location, method, path, timeout, **kwargs)
            self.tracing.answered(span, answer.status_code)
            return answer

    def _send_with(
        self, headers: dict[str, str], location: BackendLocation, method: str, path: str, timeout: float, **kwargs: Any
    ) -> Answer:
        request = requests.Request(method, location.url + path, headers=headers, **kwargs)
        try:
            # The session's IdentityTokenAuth adds the token here, before the request's deadline starts.
            prepared = self.session.prepare_request(request)
        except AuthError as exc:
            raise BackendError("auth", "No identity token for the private backend.", str(exc)) from exc
        except MetadataUnreachable as exc:
            raise BackendError("metadata", exc.title, str(exc)) from exc
        try:
            answer = send(self.session, prepared, timeout)
        except TooSlow as exc:
            raise _too_slow(timeout, path) from exc
        except AnswerTooLarge as exc:
            raise _too_large(str(exc)) from exc
        except UnreadableAnswer as exc:
            raise BackendError("server_error", "The backend's answer could not be read.", str(exc)) from exc
        self._answered = True
        return answer

    # --- status

    def status(self) -> BackendStatus:
        """Where the backend is, whether it is ready (``/ready``, which needs no token), and whether it accepts
        the frontend's requests: ``/model`` needs one, so a refusal there is the status, not "Ready"."""
        timeout = self.settings.status_timeout_s
        try:
            location = self.location()
            response = self._request("GET", "/ready", timeout)
        except BackendError as exc:
            problem = exc
            if exc.kind == "timeout":  # a backend scaled to zero answers once it has started: a cold start
                problem = BackendError(
                    "starting",
                    "The backend is starting.",
                    f"It did not answer within {timeout:g} s (STATUS_TIMEOUT_S): a backend that has scaled to "
                    "zero takes a while to start. The page asks again each time it runs: click Retry in a "
                    "moment. To avoid the wait, keep one backend instance warm (--min-instances=1).",
                )
            return BackendStatus.of(self.locations.known, problem)
        location = self.locations.known or location
        if response.status_code in (401, 403):  # behind Cloud Run's IAM, /ready needs a token too
            return BackendStatus.of(location, self._error_from_response(response, location))
        body = response.json()
        state = _short(str(body.get("status") or ("ready" if response.ok else f"HTTP {response.status_code}")), 60)
        if response.status_code != 200 or state != "ready":
            if state == "loading":
                return BackendStatus.of(
                    location,
                    BackendError(
                        "starting",
                        "The backend is starting.",
                        "It is loading its model. The page asks again each time it runs: click Retry in a few seconds.",
                    ),
                )
            detail = _short(str(body.get("detail") or ""))
            problem = BackendError("not_ready", f"The backend is not ready ({state}).", detail)
            return BackendStatus(location, state, detail, problem=problem)
        try:
            model = self._served_model(location)
        except BackendError as exc:  # /ready is open, /model is not: the frontend's requests are refused
            return BackendStatus.of(location, exc)
        return BackendStatus(location, "ready", "", model)

    def _served_model(self, location: BackendLocation) -> ServedModel | None:
        """The backend's ``/model``, asked at every status check (it needs a token, as ``/predict`` does);
        raise BackendError if the frontend's requests are refused, None if it cannot be read otherwise."""
        cached = self._model[1] if self._model is not None and self._model[0] == location.url else None
        try:
            response = self._request("GET", "/model", self.settings.status_timeout_s)
        except BackendError as exc:
            if exc.kind in REFUSALS:
                raise
            return cached
        if response.status_code in (401, 403):
            raise self._error_from_response(response, location)
        body = response.json()
        if response.status_code != 200 or "name" not in body:
            return cached
        try:
            info = ServedModel(
                name=_short(str(body["name"]), 200),
                weights=_short(str(body.get("weights", "")), 200),
                runtime=_short(str(body.get("runtime", "")), 200),
                num_classes=int(body.get("num_classes", 0)),
                input_size=tuple(int(n) for n in list(body.get("input_size", ()))[:8]),
                max_image_bytes=int(body["max_image_bytes"]) if body.get("max_image_bytes") is not None else None,
            )
        except (TypeError, ValueError, OverflowError) as exc:
            logger.warning("the backend's /model answer was not the expected JSON", extra={"reason": str(exc)[:200]})
            return None
        if cached != info:
            self._model = (location.url, info)
            upload_limit = self.settings.max_upload_mb * 1024**2
            if info.max_image_bytes is not None and info.max_image_bytes < upload_limit:
                logger.warning(
                    "MAX_UPLOAD_MB is over the backend's per-image limit: larger files are refused without being sent",
                    extra={
                        "max_upload_mb": self.settings.max_upload_mb,
                        "backend_max_image_bytes": info.max_image_bytes,
                    },
                )
        return info

    def _error_from_response(self, response: Answer, location: BackendLocation | None) -> BackendError:
        """``_error_from_response``, with a refusal (401/403) explained from the token the frontend sent."""
        if response.status_code not in (401, 403) or location is None:
            return _error_from_response(response, location)
        audience = self.auth.audience_for(location.url)
        claims = self.tokens.claims(audience) if self.tokens.mode != "none" else {}
        email = claims.get("email")
        if not isinstance(email, str) or not email:
            email = self.locations.locator.service_account()
        return _error_from_response(
            response, location, audience=audience, claims=claims, email=email, mode=self.tokens.mode
        )

    # --- predictions

    def max_image_bytes(self) -> int | None:
        """The backend's per-image limit, as its ``/model`` said (None until it has said)."""
        model, location = self._model, self.locations.known
        if model is None or location is None or model[0] != location.url:
            return None
        return model[1].max_image_bytes

    def predict(self, image: ImageInput, top_k: int) -> Classification:
        """Classify one image; raise BackendError (``rejected`` when the image itself is the problem)."""
        limit = self.max_image_bytes()
        if limit is not None and len(image.data) > limit:
            # The backend would refuse it (413) after receiving all of it: say so without sending it.
            logger.warning("image over the backend's limit", extra={"image": image.filename, "bytes": len(image.data)})
            raise BackendError(
                "rejected",
                "This image is too large.",
                f"{image.filename} is {megabytes(len(image.data))}; the backend accepts images up to "
                f"{megabytes(limit)}.",
                code="too_large",
            )
        started = time.perf_counter()
        response = self._request(
            "POST",
            "/predict",
            self.settings.backend_timeout_s,
            params={"top_k": top_k},
            files={"file": (image.filename, image.data, image.content_type)},
        )
        round_trip_ms = (time.perf_counter() - started) * 1000
        location = self.locations.known
        if response.status_code != 200:
            error = self._error_from_response(response, location)
            logger.warning(
                "prediction failed",
                extra={"image": image.filename, "status": response.status_code, "code": error.code},
            )
            raise error
        try:
            result = _parse_prediction(response.json(), round_trip_ms, top_k)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError) as exc:
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

    def explain(self, image: ImageInput) -> Explanation:
        """Where the backend's model sees the image's top class (``POST /explain``, its default grid); raise
        BackendError as ``predict`` does. Costs the backend about 50 forward passes: asked only on request."""
        started = time.perf_counter()
        response = self._request(
            "POST",
            "/explain",
            self.settings.backend_timeout_s,
            files={"file": (image.filename, image.data, image.content_type)},
        )
        round_trip_ms = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            error = self._error_from_response(response, self.locations.known)
            logger.warning(
                "explanation failed",
                extra={"image": image.filename, "status": response.status_code, "code": error.code},
            )
            raise error
        try:
            explanation = _parse_explanation(response.json(), round_trip_ms)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError, binascii.Error) as exc:
            raise BackendError(
                "server_error", "The backend's answer was not the expected JSON.", response.text[:200]
            ) from exc
        logger.info(
            "explained an image",
            extra={"image": image.filename, "label": explanation.label, "round_trip_ms": round(round_trip_ms, 1)},
        )
        return explanation

    def predict_many(self, images: Sequence[ImageInput], top_k: int) -> list[Classification | BackendError]:
        """One request per image, a few at a time (the backend batches concurrent requests together).

        Each image gets its own result or error, in order, so one bad file does not hide the others.
        """

        def one(image: ImageInput) -> Classification | BackendError:
            try:
                return self.predict(image, top_k)
            except BackendError as exc:
                return exc

        if len(images) <= 1:
            return [one(image) for image in images]
        if self.tracing is not None:  # the pool's threads send within this thread's trace (the page run's)
            one = self.tracing.in_current_context(one)  # type: ignore[assignment]
        with ThreadPoolExecutor(max_workers=min(self.settings.predict_concurrency, len(images))) as pool:
            return list(pool.map(one, images))


def _refused(exc: requests.ConnectionError) -> bool:
    """True when no connection could be made (refused, or not accepted in time), rather than one that broke."""
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # requests wraps urllib3's MaxRetryError, which holds the cause
    return isinstance(exc, requests.ConnectTimeout) or isinstance(reason, urllib3.exceptions.NewConnectionError)


def _not_found(error: DiscoveryError) -> BackendError:
    if error.code == "metadata_unreachable":
        return BackendError("metadata", MetadataUnreachable.title, error.message)
    return BackendError("not_configured", "The backend could not be found.", error.message)


def _unreachable(location: BackendLocation) -> BackendError:
    return BackendError(
        "unreachable",
        f"The backend at {location.url} is not answering.",
        "It may be starting, redeploying or down. Retry in a moment; if it persists, check that the backend "
        "runs and that its address is right.",
    )


def _error_from_response(
    response: Answer,
    location: BackendLocation | None,
    *,
    audience: str | None = None,
    claims: Mapping[str, object] | None = None,
    email: str | None = None,
    mode: AuthMode = "auto",
) -> BackendError:
    """What an error answer means for people. For a refusal (401/403), ``audience`` is the one the frontend
    asked a token for, ``claims`` those of the token it sent (read, not verified), ``email`` its identity,
    ``mode`` its BACKEND_AUTH."""
    body = response.json()
    status = response.status_code
    detail = _short(str(body.get("detail") or "")) or _plain_text(response)
    code = _short(str(body["code"]), 60) if "code" in body else None
    # Seconds as a small number, shown in the headline; anything else (a date, junk) is "a few seconds".
    raw_retry_after = response.headers.get("Retry-After", "").strip()
    retry_after = raw_retry_after if raw_retry_after.isdecimal() and raw_retry_after.isascii() else None
    retry_after = retry_after if retry_after is None or len(retry_after) <= 5 else None
    where = location.url if location else "the backend"
    if status in {503, 429}:
        busy = code == "overloaded" or status == 429
        hint = f" Retry in {retry_after} s." if retry_after else " Retry in a few seconds."
        if code == "model_loading":  # a cold start: neutral, not an error
            return BackendError(
                "starting", "The backend is starting." + hint, detail, status=status, code=code, retry_after=retry_after
            )
        title = "The backend is busy." if busy else "The backend is not ready yet."
        return BackendError("not_ready", title + hint, detail, status=status, code=code, retry_after=retry_after)
    if status == 504:
        return BackendError("timeout", "The backend took too long.", detail, status=status, code=code)
    if status in (401, 403):
        return BackendError(
            "unauthorized",
            f"The backend at {where} refused the request ({status}).",
            (detail + " " if body else "") + refusal_advice(code, audience, claims or {}, email, mode),
            status=status,
            code=code,
        )
    if 400 <= status < 500:
        return BackendError("rejected", "This image could not be classified.", detail, status=status, code=code)
    return BackendError("server_error", f"The backend failed ({status}).", detail, status=status, code=code)


def _plain_text(response: Answer) -> str:
    reason = _short(response.reason, 60)
    if "html" in response.headers.get("Content-Type", ""):
        return f"HTTP {response.status_code} {reason}"
    return response.text.strip()[:300] or f"HTTP {response.status_code} {reason}"


def _short(text: str, limit: int = 500) -> str:
    """At most ``limit`` characters of something the backend said (the page has room for a sentence or two)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _probability(value: Any) -> float:
    probability = float(value)
    if not math.isfinite(probability):
        raise ValueError(f"probability {probability}")
    return probability


def _parse_prediction(body: Mapping[str, Any], round_trip_ms: float, top_k: int) -> Classification:
    first = body["results"][0]
    predictions = tuple(
        ClassProbability(int(p["index"]), _short(str(p["label"]), 200), _probability(p["probability"]))
        for p in first["predictions"][:top_k]  # no more classes than asked for, however many came
    )
    return Classification(
        filename=_short(str(first.get("filename") or ""), 200),
        format=_short(str(first.get("format") or ""), 20),
        width=int(first["width"]),
        height=int(first["height"]),
        predictions=predictions,
        model=_short(str(body.get("model", "")), 200),
        backend_ms=float(body["elapsed_ms"]),
        round_trip_ms=round_trip_ms,
        model_version=_short(str(body.get("model_version") or ""), 64),
    )


def _parse_explanation(body: Mapping[str, Any], round_trip_ms: float) -> Explanation:
    """The /explain answer; its PNG is checked to be one (and small) here, decoded only where it is shown."""
    png = base64.b64decode(str(body["heatmap"]["data"]), validate=True)
    if not png.startswith(b"\x89PNG\r\n\x1a\n") or len(png) > MAX_HEATMAP_BYTES:
        raise ValueError("the heat map is not a PNG of the expected size")
    explained = body["explained"]
    colormap = tuple((int(r), int(g), int(b)) for r, g, b in list(body["colormap"])[:64])
    if len(colormap) < 2 or not all(0 <= v <= 255 for rgb in colormap for v in rgb):
        raise ValueError("the colour map is not a list of RGB colours")
    return Explanation(
        label=_short(str(explained["label"]), 200),
        probability=_probability(explained["probability"]),
        grid=int(body["grid"]),
        heatmap_png=png,
        colormap=colormap,
        backend_ms=float(body["elapsed_ms"]),
        round_trip_ms=round_trip_ms,
    )


# --- answers too slow or too large (see frontend._transport)


def _too_slow(timeout: float, path: str) -> BackendError:
    predict = path == "/predict"
    hint = "send fewer or smaller images, or raise BACKEND_TIMEOUT_S" if predict else "or raise STATUS_TIMEOUT_S"
    return BackendError(
        "timeout",
        f"The backend did not answer within {timeout:g} s.",
        f"It may be overloaded or starting up. Retry, {hint}.",
    )


def _too_large(size: str) -> BackendError:
    return BackendError(
        "server_error",
        "The backend's answer was too large.",
        f"It sent {size}; answers from the backend are a few kB and at most {megabytes(MAX_ANSWER_BYTES)} "
        "are read. Is BACKEND_URL the classifier backend?",
    )
