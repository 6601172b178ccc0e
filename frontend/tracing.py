"""Traces of the frontend's calls to the backend (docs/monitoring.md, "Traces"), so one trace shows both services.

With tracing configured (``TRACE_EXPORTER``, or a provider passed in by tests), each page run is a span
(``page run``), and each request to the backend a client span within it, whose context goes to the backend in
``traceparent`` (and Cloud Run's ``X-Cloud-Trace-Context``): the backend's request span is its child. Without,
``Backend.tracing`` is None: no span, no trace header of the frontend's own, and OpenTelemetry's SDK is never
imported. Nothing here imports Streamlit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Final, TypeVar
from urllib.parse import urlsplit

from frontend.config import FrontendSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

__all__ = ["FrontendTracing", "page_run", "tracing_for"]

T = TypeVar("T")
_NO_SPAN: Final = contextlib.nullcontext()


class FrontendTracing:
    def __init__(self, provider: TracerProvider, owned: bool) -> None:
        from opentelemetry import context, trace

        from common.otel import PROPAGATOR

        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("frontend")
        self._owned = owned
        self._context = context
        self._trace = trace
        self._propagator = PROPAGATOR

    def page_run(self) -> contextlib.AbstractContextManager[object]:
        return self.tracer.start_as_current_span("page run")

    @contextlib.contextmanager
    def client_span(self, method: str, url: str, headers: MutableMapping[str, str]) -> Iterator[Span]:
        """A client span for one request to ``url``; its context is written into ``headers``."""
        parts = urlsplit(url)
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "url.full": parts._replace(query="").geturl(),
            "server.address": parts.hostname or "",
        }
        if parts.port:
            attributes["server.port"] = parts.port
        with self.tracer.start_as_current_span(
            f"{method} {parts.path or '/'}", kind=self._trace.SpanKind.CLIENT, attributes=attributes
        ) as span:
            self._propagator.inject(headers)
            yield span

    def answered(self, span: Span, status: int) -> None:
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(self._trace.StatusCode.ERROR)

    def in_current_context(self, work: Callable[[T], object]) -> Callable[[T], object]:
        """``work``, to run on another thread (a pool's) within this thread's current trace context."""
        parent = self._context.get_current()

        def run(item: T) -> object:
            token = self._context.attach(parent)
            try:
                return work(item)
            finally:
                self._context.detach(token)

        return run

    def close(self) -> None:
        if self._owned:
            self.provider.shutdown()
        else:
            self.provider.force_flush()


def tracing_for(settings: FrontendSettings, provider: TracerProvider | None = None) -> FrontendTracing | None:
    """Tracing with ``provider`` (else one made from TRACE_EXPORTER and TRACE_SAMPLE_RATIO); None when neither."""
    if provider is None and settings.trace_exporter == "none":
        return None
    from common.otel import current_span_ids, new_provider
    from common.tracing import set_log_project, use_spans

    owned = provider is None
    if provider is None:
        provider = new_provider(
            "classifier-frontend", settings.trace_exporter, settings.trace_sample_ratio, project=settings.project
        )
    set_log_project(settings.project)
    use_spans(current_span_ids)
    return FrontendTracing(provider, owned)


def page_run(tracing: FrontendTracing | None) -> contextlib.AbstractContextManager[object]:
    """A span over one page run when tracing is on; nothing (a shared no-op) when off."""
    return _NO_SPAN if tracing is None else tracing.page_run()
