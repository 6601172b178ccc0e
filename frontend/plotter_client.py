"""The optional plotting service (``plotter/``, R plumber + ggplot2): a PNG chart of the page's results.

It is found and called with the backend's machinery: a second ``LocationCache`` over a ``BackendLocator``
that looks up PLOTTER_URL or the Cloud Run service PLOTTER_SERVICE, identity tokens from
``frontend.auth`` (BACKEND_AUTH's mode, the plotter's URL as audience), and ``frontend._transport``'s one
deadline per request and size cap. Nothing here imports Streamlit.

The plotter is never required, so it has strict budgets: a page run waits at most PLOTTER_TIMEOUT_S
(default 2 s) for its chart, whatever the lookup, token or request does. A chart that comes later is kept
for the next page run; after a failure the plotter is not asked again for ``FAILURE_BACKOFF_S``, so a
plotter that is down or slow costs a page run nothing. What comes back is checked to be a PNG of the
size asked for (its signature, then Pillow's ``verify``: chunk CRCs and structure, no pixels decoded)
before the page shows it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Literal

import requests
from PIL import Image, UnidentifiedImageError

from frontend._transport import Answer, AnswerTooLarge, TooSlow, UnreadableAnswer, new_session, send
from frontend.auth import AuthError, IdentityTokenAuth, IdentityTokens
from frontend.backend_client import Classification
from frontend.config import FrontendSettings
from frontend.discovery import BackendLocation, BackendLocator, DiscoveryError, LocationCache, MetadataUnreachable

__all__ = [
    "CHART_KINDS",
    "FAILURE_BACKOFF_S",
    "MAX_CHART_BYTES",
    "MAX_RESULTS",
    "PNG_SIGNATURE",
    "SIZE_RANGE",
    "Chart",
    "ChartKind",
    "Plotter",
    "PlotterError",
    "chart_size",
    "check_png",
    "plot_request",
    "plotter_configured",
]

logger = logging.getLogger(__name__)

ChartKind = Literal["auto", "bars", "compare"]
CHART_KINDS: tuple[ChartKind, ...] = ("auto", "bars", "compare")
MAX_RESULTS = 16  # images per chart: the plotter refuses more (plotter/plumber.R's MAX_RESULTS)
SIZE_RANGE = (200, 2000)  # pixels, each side, as the plotter accepts them
# A 2000 x 2000 chart is about 100 kB; anything near this is not a chart. _transport reads no more than its
# own MAX_ANSWER_BYTES (1 MiB) either.
MAX_CHART_BYTES = 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FAILURE_BACKOFF_S = 30.0  # after a failure (or a page run that waited in vain), the plotter is not asked
CACHE_SIZE = 32  # charts kept, by request


class PlotterError(Exception):
    """No chart this page run; the message is one short sentence for a caption."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class Chart:
    png: bytes
    width: int
    height: int
    kind: ChartKind


def plotter_configured(settings: FrontendSettings) -> bool:
    """The plotter is used only when PLOTTER_URL or PLOTTER_SERVICE says where it is."""
    return bool(settings.plotter_url or settings.plotter_service)


def plot_request(results: Sequence[Classification]) -> dict[str, Any]:
    """The body of ``POST /plot``: the backend's /predict answer (PredictResponse) for these results, the first
    MAX_RESULTS of them."""
    kept = list(results)[:MAX_RESULTS]
    first = kept[0] if kept else None
    return {
        "model": first.model if first else "",
        "model_version": first.model_version if first else "",
        "top_k": max((len(r.predictions) for r in kept), default=0),
        "results": [
            {
                "filename": r.filename,
                "format": r.format,
                "width": r.width,
                "height": r.height,
                "predictions": [
                    {"index": p.index, "label": p.label, "probability": p.probability} for p in r.predictions
                ],
            }
            for r in kept
        ],
        "elapsed_ms": max((r.backend_ms for r in kept), default=0.0),
    }


def chart_size(kind: ChartKind, images: int) -> tuple[int, int]:
    """Width and height in pixels for a chart of ``images`` results: bars get a row of panels per ~3 images
    (ggplot2's facet_wrap lays n panels out ceil(sqrt(n)) across), compare a column per image."""
    n = max(1, min(images, MAX_RESULTS))
    low, high = SIZE_RANGE
    if kind == "compare" or (kind == "auto" and n > 1):
        return max(low, min(high, 160 + 80 * n)) if n > 8 else 800, 450
    across = math.ceil(math.sqrt(n))
    rows = math.ceil(n / across)
    return 800, max(400, min(high, 220 * rows))


def check_png(data: bytes, width: int, height: int) -> None:
    """PlotterError unless ``data`` is one whole PNG of ``width`` x ``height`` pixels, at most MAX_CHART_BYTES."""
    if len(data) > MAX_CHART_BYTES:
        raise PlotterError("bad_answer", "The plotter's chart was too large.")
    if not data.startswith(PNG_SIGNATURE):
        raise PlotterError("bad_answer", "The plotter's answer was not a PNG image.")
    try:
        # formats=["PNG"]: no other decoder is tried; the size comes from the header, before any pixel.
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            if image.size != (width, height):
                raise PlotterError(
                    "bad_answer", f"The plotter's chart was {image.size[0]}x{image.size[1]}, not {width}x{height}."
                )
            image.verify()
    except PlotterError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise PlotterError("bad_answer", f"The plotter's chart was not a valid PNG ({type(exc).__name__}).") from exc


def _lookup_settings(settings: FrontendSettings) -> FrontendSettings:
    """The settings a BackendLocator reads, pointed at the plotter: its URL or service, and a lookup no longer
    than the page waits for a chart."""
    return settings.model_copy(
        update={
            "backend_url": settings.plotter_url,
            "backend_service": settings.plotter_service or "",
            "discovery_timeout_s": min(settings.discovery_timeout_s, settings.plotter_timeout_s),
        }
    )


class Plotter:
    """The plotting service as the page sees it: ``chart()`` within the page's budget, or PlotterError."""

    def __init__(
        self,
        settings: FrontendSettings,
        *,
        locator: BackendLocator | None = None,
        tokens: IdentityTokens | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.timeout_s = settings.plotter_timeout_s  # each request's deadline (lookup and token aside)
        self.wait_s = settings.plotter_timeout_s  # what a page run waits, whatever the lookup, token and request take
        self.locations = LocationCache(locator or BackendLocator(_lookup_settings(settings)))
        self.tokens = tokens or IdentityTokens(settings.backend_auth)
        self.auth = IdentityTokenAuth(self.tokens, None, settings.plotter_url)
        self.session = new_session(2)
        self.session.auth = self.auth
        self._clock = clock
        # Two requests at most: a page run needs one; a plotter that hangs cannot hold more threads than this.
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="plotter")
        self._lock = threading.Lock()
        self._charts: OrderedDict[tuple[str, str, int, int], Chart] = OrderedDict()
        self._pending: dict[tuple[str, str, int, int], Future[Chart]] = {}
        self._failure: tuple[float, PlotterError] | None = None  # (until, the error said meanwhile)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.session.close()

    def chart(
        self, results: Sequence[Classification], kind: ChartKind = "auto", width: int = 800, height: int = 400
    ) -> Chart:
        """The chart of ``results``: remembered, or asked for and waited for at most PLOTTER_TIMEOUT_S."""
        if kind not in CHART_KINDS:
            raise ValueError(f"kind must be one of {CHART_KINDS}")
        low, high = SIZE_RANGE
        if not (low <= width <= high and low <= height <= high):
            raise ValueError(f"width and height must be from {low} to {high} pixels")
        if not results:
            raise ValueError("no results to chart")
        body = json.dumps(plot_request(results), allow_nan=False).encode()
        key = (hashlib.sha256(body).hexdigest(), kind, width, height)
        with self._lock:
            chart = self._charts.get(key)
            if chart is not None:
                return chart
            if self._failure is not None:
                until, error = self._failure
                if self._clock() < until:
                    raise error
                self._failure = None
            future = self._pending.get(key)
            if future is None:
                future = self._pending[key] = self._pool.submit(self._fetch, key, body)
        try:
            return future.result(timeout=self.wait_s)
        except FutureTimeout:
            error = PlotterError("slow", f"The chart did not come within {self.wait_s:g} s.")
            self._failed(error)
            raise error from None

    # --- in the pool's threads

    def _fetch(self, key: tuple[str, str, int, int], body: bytes) -> Chart:
        _, kind, width, height = key
        try:
            chart = self._request(body, kind, width, height)
        except PlotterError as exc:
            self._failed(exc)
            raise
        except Exception as exc:  # whatever broke, the page gets no chart, and a line in the log
            logger.exception("the chart request failed")
            error = PlotterError("failed", f"The chart could not be drawn ({type(exc).__name__}).")
            self._failed(error)
            raise error from exc
        finally:
            with self._lock:
                self._pending.pop(key, None)
        with self._lock:
            self._charts[key] = chart
            while len(self._charts) > CACHE_SIZE:
                self._charts.popitem(last=False)
        return chart

    def _request(self, body: bytes, kind: str, width: int, height: int) -> Chart:
        try:
            location = self.locations.current()
        except DiscoveryError as exc:
            raise PlotterError("not_found", "The plotter could not be found.") from exc
        started = time.perf_counter()
        try:
            answer = self._post(location, body, kind, width, height)
        except requests.ConnectionError as exc:
            try:  # redeployed under a new URL? Look once more (LocationCache limits how often).
                moved = self.locations.relocate(location)
            except DiscoveryError:
                moved = location
            if moved == location:
                raise PlotterError("unreachable", "The plotter is not answering.") from exc
            try:
                answer = self._post(moved, body, kind, width, height)
            except requests.ConnectionError as again:
                raise PlotterError("unreachable", "The plotter is not answering.") from again
        if answer.status_code != 200:
            detail = str(answer.json().get("detail") or answer.text[:200])
            logger.warning("the plotter refused a chart", extra={"status": answer.status_code, "detail": detail[:300]})
            raise PlotterError("refused", f"The plotter answered {answer.status_code}.")
        content_type = answer.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "image/png":
            raise PlotterError("bad_answer", "The plotter's answer was not a PNG image.")
        check_png(answer.body, width, height)
        chart_kind: ChartKind = "bars" if kind == "bars" else "compare" if kind == "compare" else "auto"
        logger.info(
            "drew a chart",
            extra={"kind": kind, "bytes": len(answer.body), "ms": round((time.perf_counter() - started) * 1000, 1)},
        )
        return Chart(answer.body, width, height, chart_kind)

    def _post(self, location: BackendLocation, body: bytes, kind: str, width: int, height: int) -> Answer:
        request = requests.Request(
            "POST",
            f"{location.url}/plot",
            params={"chart": kind, "width": width, "height": height},
            data=body,
            headers={"Content-Type": "application/json", "Accept": "image/png", "Accept-Encoding": "identity"},
        )
        try:
            prepared = self.session.prepare_request(request)  # adds the identity token (IdentityTokenAuth)
        except (AuthError, MetadataUnreachable) as exc:
            raise PlotterError("auth", "No identity token for the plotter could be had.") from exc
        try:
            return send(self.session, prepared, self.timeout_s)
        except TooSlow as exc:
            raise PlotterError("slow", f"The plotter did not answer within {self.timeout_s:g} s.") from exc
        except AnswerTooLarge as exc:
            raise PlotterError("bad_answer", "The plotter's chart was too large.") from exc
        except UnreadableAnswer as exc:
            raise PlotterError("bad_answer", "The plotter's answer could not be read.") from exc

    def _failed(self, error: PlotterError) -> None:
        logger.warning("no chart from the plotter", extra={"kind": error.kind, "reason": error.message})
        with self._lock:
            self._failure = (self._clock() + FAILURE_BACKOFF_S, error)
