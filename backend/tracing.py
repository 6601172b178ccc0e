"""Traces of the backend's requests (docs/monitoring.md, "Traces").

OpenTelemetry's FastAPI instrumentation makes each request's span, joined to the caller's trace
(``traceparent``, or Cloud Run's ``X-Cloud-Trace-Context``: ``common.otel.PROPAGATOR``); inside it, a span for
each stage of the work:

- ``receive``: reading the body (``backend.uploads.read_uploads``);
- ``decode``: one per image, in the decoder processes;
- ``queue wait`` and ``inference``: one of each per image, from the times the batcher recorded
  (``backend.batching.ImageTimes``: when the image was queued, when its forward pass started and ended on its
  inference thread). A forward pass shared by several requests appears in each of them, with ``batch.size``;
- ``respond``: the answer, written to JSON.

Off by default (``TRACE_EXPORTER=none``): ``install`` then does nothing at all (no middleware, not even an
OpenTelemetry import), ``ModelService.tracing`` is None and the routes and the service take their untraced
path. Tests pass a ``TracerProvider`` of their own to ``create_app`` (OpenTelemetry's global provider can be
set only once per process; this module never sets it).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Final, TypeVar

from backend.batching import ImageTimes
from backend.classifier import Buffer
from backend.config import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

__all__ = ["PROBE_PATHS", "RequestTracing", "install", "stage"]

# Probes are not traced: Cloud Run and load balancers call them every few seconds.
PROBE_PATHS: Final = ("/health", "/ready", "/metrics", "/ping", "/v2/health/live", "/v2/health/ready")

T = TypeVar("T")
_NO_SPAN: Final = contextlib.nullcontext()


class RequestTracing:
    """The spans of the work inside a request (its own span is the FastAPI instrumentation's)."""

    def __init__(self, provider: TracerProvider, owned: bool) -> None:
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("backend")
        self._owned = owned  # made from the settings (shut down here), or the caller's (flushed only)

    def span(self, name: str) -> contextlib.AbstractContextManager[object]:
        return self.tracer.start_as_current_span(name)

    def decoding(
        self, prepare: Callable[[Buffer, Hashable], Awaitable[T]]
    ) -> Callable[[Buffer, Hashable], Awaitable[T]]:
        """``prepare`` (``DecoderPool.prepare``), each call in a ``decode`` span of the request's."""

        async def traced(data: Buffer, owner: Hashable) -> T:
            with self.tracer.start_as_current_span("decode", attributes={"image.bytes": len(data)}):
                return await prepare(data, owner)

        return traced

    def record_batcher(self, times: Sequence[ImageTimes]) -> None:
        """A ``queue wait`` and an ``inference`` span per image, children of the current span (the request's),
        at the times the batcher recorded."""
        # perf_counter seconds to the epoch nanoseconds spans are in, from one reading of both clocks now.
        now_ns, now = time.time_ns(), time.perf_counter()

        def epoch_ns(moment: float) -> int:
            return now_ns - round((now - moment) * 1e9)

        for index, image in enumerate(times):
            attributes = {"image.index": index, "batch.size": image.batch_size}
            queued = self.tracer.start_span("queue wait", start_time=epoch_ns(image.arrived), attributes=attributes)
            queued.end(end_time=epoch_ns(image.started))
            ran = self.tracer.start_span("inference", start_time=epoch_ns(image.started), attributes=attributes)
            ran.end(end_time=epoch_ns(image.finished))

    def close(self) -> None:
        """Export what is still queued (ours: and stop the export thread)."""
        if self._owned:
            self.provider.shutdown()
        else:
            self.provider.force_flush()


def stage(tracing: RequestTracing | None, name: str) -> contextlib.AbstractContextManager[object]:
    """A span named ``name`` around a stage of the request when tracing is on; nothing (a shared no-op) when off."""
    return _NO_SPAN if tracing is None else tracing.span(name)


def install(app: FastAPI, settings: Settings, provider: TracerProvider | None = None) -> RequestTracing | None:
    """Trace ``app``'s requests with ``provider`` (else one made from TRACE_EXPORTER and TRACE_SAMPLE_RATIO);
    None, and nothing done, when neither is set."""
    if provider is None and settings.trace_exporter == "none":
        return None
    # Imported only now: OpenTelemetry's SDK and FastAPI instrumentation take ~0.5 s to import.
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.propagate import set_global_textmap

    from common.otel import PROPAGATOR, current_span_ids, new_provider
    from common.tracing import use_spans

    owned = provider is None
    if provider is None:
        provider = new_provider(
            "classifier-backend",
            settings.trace_exporter,
            settings.trace_sample_ratio,
            project=settings.google_cloud_project,
        )
    # The ASGI middleware reads the caller's trace with the global propagator (it takes no other): ours, which
    # reads both of Cloud Run's headers and ignores hostile ones.
    set_global_textmap(PROPAGATOR)
    use_spans(current_span_ids)
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=",".join(f"{path}$" for path in PROBE_PATHS),
        # Not a span per ASGI message (each body chunk): receive and respond are ours, one per request.
        exclude_spans=["receive", "send"],
    )
    return RequestTracing(provider, owned)
