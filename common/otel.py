"""Tracing with OpenTelemetry, as both services set it up; imported only when tracing is configured.

- ``new_provider``: a ``TracerProvider`` of our own (OpenTelemetry's global one can be set once per process; the
  services and tests pass theirs around), sampling parent-based at a ratio, exporting through a
  ``BatchSpanProcessor`` with a bounded queue (spans are dropped when it is full: a request never waits for an
  export) to Cloud Trace (``gcp``; its exporter is imported only then) or to stdout (``console``).
- ``PROPAGATOR``: W3C ``traceparent`` and Cloud Run's ``X-Cloud-Trace-Context`` (Cloud Run sends both), each
  behind a guard against hostile headers (``_Guarded``).
- ``current_span_ids``: for ``common.tracing``'s log fields.
"""

from __future__ import annotations

import sys
from typing import Final, Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.cloud_trace_propagator import CloudTraceFormatPropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "MAX_TRACE_HEADER_CHARS",
    "PROPAGATOR",
    "SPAN_QUEUE_SIZE",
    "TraceExporter",
    "current_span_ids",
    "new_exporter",
    "new_provider",
]

TraceExporter = Literal["none", "gcp", "console"]

# BatchSpanProcessor's default queue is 2048 spans (OTEL_BSP_MAX_QUEUE_SIZE), exported every 5 s in batches of
# 512. A /predict request of one image makes 6 spans (the request, receive, decode, queue wait, inference,
# respond): 2048 spans are ~340 requests, about two seconds at the service's ~160 images/s, less than one slow
# export. 8192 spans (a few MB) ride out an export of several seconds; beyond, spans are dropped, never waited for.
SPAN_QUEUE_SIZE: Final = 8192
# traceparent is 55 characters, X-Cloud-Trace-Context at most 32 + 1 + 20 + len(";o=1") = 57: a longer value is
# neither. tracestate (W3C: at most 32 members of at most 256 characters) has a bound of its own.
MAX_TRACE_HEADER_CHARS: Final = 128
MAX_TRACESTATE_CHARS: Final = 32 * 257


class _Guarded(TextMapPropagator):
    """A propagator whose ``extract`` reads only headers of a sane length, and never raises.

    What the library lacks (opentelemetry-propagator-gcp 1.15.0): CloudTraceFormatPropagator matches
    ``;o=(\\d+)`` and calls ``int()`` on it, so an ``X-Cloud-Trace-Context`` ending in 5,000 digits raises
    ValueError (Python's 4,300-digit limit) out of the ASGI middleware, a plain 500
    (tests/monitoring/test_tracing.py, ``test_hostile_trace_headers``).
    """

    def __init__(self, inner: TextMapPropagator) -> None:
        self.inner = inner

    def extract(
        self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = default_getter
    ) -> Context:
        for name in self.inner.fields:
            values = getter.get(carrier, name) or ()
            limit = MAX_TRACESTATE_CHARS if name == "tracestate" else MAX_TRACE_HEADER_CHARS
            if sum(len(value) for value in values) > limit:
                return context if context is not None else Context()
        try:
            return self.inner.extract(carrier, context, getter)
        except Exception:  # a header that made a propagator fail is ignored, as a malformed one is
            return context if context is not None else Context()

    def inject(
        self, carrier: CarrierT, context: Context | None = None, setter: Setter[CarrierT] = default_setter
    ) -> None:
        self.inner.inject(carrier, context, setter)

    @property
    def fields(self) -> set[str]:
        return set(self.inner.fields)


# W3C last: when both headers came, ``traceparent`` (what the frontend and Cloud Run's front end send) wins.
PROPAGATOR: Final = CompositePropagator(
    [_Guarded(CloudTraceFormatPropagator()), _Guarded(TraceContextTextMapPropagator())]
)


def _json_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + "\n"


def new_exporter(kind: TraceExporter, project: str | None = None) -> SpanExporter:
    if kind == "gcp":
        # Imported only when configured: the Cloud Trace client (gRPC) is the heaviest import of all.
        from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter

        return CloudTraceSpanExporter(project_id=project)  # type: ignore[no-untyped-call] # None: google.auth.default()'s project
    if kind == "console":
        return ConsoleSpanExporter(out=sys.stdout, formatter=_json_line)  # one JSON line per span
    raise ValueError(f"TRACE_EXPORTER={kind} exports nothing")


def new_provider(
    service_name: str,
    exporter: TraceExporter | SpanExporter,
    sample_ratio: float,
    project: str | None = None,
    max_queue_size: int = SPAN_QUEUE_SIZE,
) -> TracerProvider:
    """Our own provider: ``sample_ratio`` of the traces that start here (a request's caller decides for the rest),
    exported in batches from a queue of ``max_queue_size`` spans."""
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
        resource=Resource.create({"service.name": service_name}),
    )
    span_exporter = new_exporter(exporter, project) if isinstance(exporter, str) else exporter
    provider.add_span_processor(BatchSpanProcessor(span_exporter, max_queue_size=max_queue_size))
    return provider


def current_span_ids() -> tuple[int, int, bool] | None:
    """(trace id, span id, sampled) of the current span, None outside one."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return context.trace_id, context.span_id, context.trace_flags.sampled
