"""Traces (backend.tracing, frontend.tracing, common.otel) and the trace fields of log lines (common.tracing):
spans exported to an in-memory exporter, in order and with the right parents, across the two services."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from opentelemetry.propagators.cloud_trace_propagator import CloudTraceFormatPropagator
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from backend.app import create_app
from backend.classifier import Classifier
from backend.config import Settings
from common.logs import CloudLoggingFormatter
from common.tracing import SPAN_ID_FIELD, TRACE_FIELD, TRACE_SAMPLED_FIELD, set_log_project
from frontend.backend_client import Backend, ImageInput
from frontend.config import FrontendSettings
from tests.helpers import CAT, COFFEE, free_port, jpeg_bytes, wait_for
from tests.helpers.fakes import BackendBehaviour, fake_backend, running

PROJECT = "test-project"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN_ID = "b7ad6b7169203331"
STAGES = ["receive", "decode", "queue wait", "inference", "respond"]


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(spans: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return provider


@pytest.fixture
def make_client(model_cache: Path, classifier: Classifier) -> Iterator[Callable[..., TestClient]]:
    with contextlib.ExitStack() as stack:

        def make(tracer_provider: TracerProvider | None = None, **overrides: Any) -> TestClient:
            settings = Settings(_env_file=None, model_cache_dir=model_cache, **overrides)
            app = create_app(settings, lambda _: classifier, tracer_provider=tracer_provider)
            client = stack.enter_context(TestClient(app, raise_server_exceptions=False))
            deadline = time.monotonic() + 60
            while client.get("/ready").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            return client

        yield make
    set_log_project(None)


class JsonLines(logging.Handler):
    """The log lines both services write (common.logs' formatter), parsed."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(CloudLoggingFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def log_lines() -> Iterator[JsonLines]:
    handler = JsonLines()
    logger = logging.getLogger("backend")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def post_image(client: TestClient, image: Path = CAT, headers: dict[str, Any] | None = None) -> Any:
    return client.post("/predict", files={"file": (image.name, jpeg_bytes(image), "image/jpeg")}, headers=headers)


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return sorted(
        (s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id),
        key=lambda s: s.start_time or 0,
    )


def server_spans(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.kind == SpanKind.SERVER]


def assert_stages_in_order(spans: list[ReadableSpan], request: ReadableSpan) -> dict[str, ReadableSpan]:
    """The request's five stages are its children, one after another, within it."""
    stages = {s.name: s for s in children(spans, request)}
    assert sorted(stages) == sorted(STAGES), [s.name for s in children(spans, request)]
    ordered = [stages[name] for name in STAGES]
    assert request.start_time is not None
    assert request.end_time is not None
    assert request.start_time <= ordered[0].start_time  # type: ignore[operator]
    for before, after in itertools.pairwise(ordered):
        assert before.end_time is not None
        assert after.start_time is not None
        assert before.end_time <= after.start_time, (before.name, after.name)
    assert ordered[-1].end_time <= request.end_time  # type: ignore[operator]
    for stage in ordered:
        assert stage.context.trace_id == request.context.trace_id
    return stages


def test_a_request_has_its_stages_in_order_with_the_request_as_parent(
    make_client: Callable[..., TestClient], provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    client = make_client(provider)
    spans.clear()  # the /ready polls are not traced (probes), but clear anyway
    assert post_image(client).status_code == 200
    finished = list(spans.get_finished_spans())
    (request,) = server_spans(finished)
    assert request.name == "POST /predict"
    assert request.parent is None  # no caller's context: a trace of its own
    stages = assert_stages_in_order(finished, request)
    assert stages["inference"].attributes is not None
    assert stages["inference"].attributes["batch.size"] == 1
    assert stages["decode"].attributes is not None
    assert stages["decode"].attributes["image.bytes"] == len(jpeg_bytes(CAT))


def test_a_shared_forward_pass_is_in_each_request_with_its_batch_size(
    make_client: Callable[..., TestClient], provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    # The first image waits (up to 10 s) for a second one: the two requests share one forward pass.
    client = make_client(provider, max_batch_size=2, max_batch_delay_ms=10_000)
    spans.clear()
    answers: list[int] = []
    threads = [
        threading.Thread(target=lambda image=image: answers.append(post_image(client, image).status_code))
        for image in (CAT, COFFEE)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200, 200]
    finished = list(spans.get_finished_spans())
    requests = server_spans(finished)
    assert len(requests) == 2
    passes = []
    for request in requests:
        stages = assert_stages_in_order(finished, request)
        assert stages["inference"].attributes is not None
        assert stages["inference"].attributes["batch.size"] == 2
        passes.append(stages["inference"])
    first, second = passes
    assert first.parent != second.parent  # each request has its own inference span...
    # ... for the same pass (times converted from perf_counter separately: within a few microseconds)
    assert abs(first.start_time - second.start_time) < 50_000  # type: ignore[operator]
    assert abs(first.end_time - second.end_time) < 50_000  # type: ignore[operator]


def test_a_request_joins_the_callers_trace_from_traceparent_or_x_cloud_trace_context(
    make_client: Callable[..., TestClient], provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    client = make_client(provider)
    spans.clear()
    assert post_image(client, headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"}).status_code == 200
    # Cloud Run's own header alone (its span id in decimal)
    assert post_image(client, headers={"X-Cloud-Trace-Context": f"{TRACE_ID}/12345;o=1"}).status_code == 200
    first, second = sorted(server_spans(list(spans.get_finished_spans())), key=lambda s: s.start_time or 0)
    for request, parent_id in ((first, int(PARENT_SPAN_ID, 16)), (second, 12345)):
        assert request.context.trace_id == int(TRACE_ID, 16)
        assert request.parent is not None
        assert request.parent.span_id == parent_id
        assert request.parent.is_remote
        assert request.context.trace_flags.sampled


HOSTILE_HEADERS: list[dict[str, Any]] = [
    {"traceparent": "00-" + "a" * 10_000},
    {"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01", "tracestate": "k=" + "v" * 12_000},
    {"traceparent": "ff-zz-zz-zz"},
    {"traceparent": f"00-{'0' * 32}-{PARENT_SPAN_ID}-01"},
    {"tracestate": ",".join(f"k{i}=v" for i in range(1000))},
    {"X-Cloud-Trace-Context": f"{TRACE_ID}/1;o=" + "9" * 5_000},  # int() of 5,000 digits raises ValueError
    {"X-Cloud-Trace-Context": f"{TRACE_ID}/99999999999999999999;o=1"},  # a span id over 64 bits
    {"X-Cloud-Trace-Context": f"{TRACE_ID}/0;o=1"},
    {"X-Cloud-Trace-Context": "/" * 10_000},
    {"X-Cloud-Trace-Context": "\u00e9\u00ff".encode("latin-1") * 20},  # not ASCII
]


def test_the_gcp_propagator_alone_raises_on_a_header_of_many_digits() -> None:
    """Why common.otel guards the propagators (if the library stops raising, the guard's comment is stale)."""
    with pytest.raises(ValueError, match="digits"):
        CloudTraceFormatPropagator().extract({"x-cloud-trace-context": f"{TRACE_ID}/1;o=" + "9" * 5_000})


@pytest.mark.parametrize("headers", HOSTILE_HEADERS, ids=lambda h: next(iter(h)) + str(len(str(h))))
def test_hostile_trace_headers_are_ignored_never_a_500(
    make_client: Callable[..., TestClient],
    provider: TracerProvider,
    spans: InMemorySpanExporter,
    headers: dict[str, Any],
    log_lines: JsonLines,
) -> None:
    client = make_client(provider, google_cloud_project=PROJECT)
    spans.clear()
    response = post_image(client, headers=headers)
    assert response.status_code == 200, response.text
    (request,) = server_spans(list(spans.get_finished_spans()))
    assert request.context.is_valid
    if "a" * 100 in str(headers) or "9" * 100 in str(headers) or "/" * 100 in str(headers):
        assert request.parent is None  # too long to be one: not parsed at all
    access = [line for line in log_lines.lines if line["logger"] == "backend.access"]
    assert access[-1][TRACE_FIELD] == f"projects/{PROJECT}/traces/{request.context.trace_id:032x}"


def test_hostile_cloud_trace_headers_with_tracing_off(
    make_client: Callable[..., TestClient], log_lines: JsonLines
) -> None:
    client = make_client(google_cloud_project=PROJECT)
    for headers in HOSTILE_HEADERS:
        assert post_image(client, headers=headers).status_code == 200
    access = [line for line in log_lines.lines if line["logger"] == "backend.access" and "POST" in line["message"]]
    assert len(access) == len(HOSTILE_HEADERS)
    traced = [line.get(TRACE_FIELD) for line in access]
    # Only the well-formed trace ids are kept (the 64-bit overflow of the span id is not ours to check).
    assert traced.count(f"projects/{PROJECT}/traces/{TRACE_ID}") == 3, traced
    assert sum(t is not None for t in traced) == 3


def test_log_lines_in_a_request_carry_its_trace_and_span(
    make_client: Callable[..., TestClient],
    provider: TracerProvider,
    spans: InMemorySpanExporter,
    log_lines: JsonLines,
) -> None:
    client = make_client(provider, google_cloud_project=PROJECT)
    log_lines.lines.clear()
    assert post_image(client, headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"}).status_code == 200
    (request,) = server_spans(list(spans.get_finished_spans()))
    (access,) = [line for line in log_lines.lines if line["logger"] == "backend.access"]
    assert access["httpRequest"]["status"] == 200
    assert access[TRACE_FIELD] == f"projects/{PROJECT}/traces/{TRACE_ID}"
    assert access[SPAN_ID_FIELD] == f"{request.context.span_id:016x}"
    assert access[TRACE_SAMPLED_FIELD] is True
    # Outside a request: no trace
    logging.getLogger("backend.test").warning("outside")
    assert TRACE_FIELD not in log_lines.lines[-1]


def test_without_a_project_id_log_lines_carry_no_trace(
    make_client: Callable[..., TestClient],
    provider: TracerProvider,
    log_lines: JsonLines,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cloud Logging wants projects/PROJECT_ID/traces/TRACE_ID: without a project, no field at all."""
    for name in ("GOOGLE_CLOUD_PROJECT", "K_SERVICE", "CLOUD_RUN_JOB"):
        monkeypatch.delenv(name, raising=False)
    client = make_client(provider)
    assert post_image(client, headers={"X-Cloud-Trace-Context": f"{TRACE_ID}/1;o=1"}).status_code == 200
    (access,) = [line for line in log_lines.lines if line["logger"] == "backend.access" and "POST" in line["message"]]
    assert not [key for key in access if key.startswith("logging.googleapis.com/")]


def test_tracing_off_installs_nothing_and_logs_keep_cloud_runs_trace(
    make_client: Callable[..., TestClient], log_lines: JsonLines
) -> None:
    client = make_client(google_cloud_project=PROJECT)
    app: Any = client.app
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)
    layer: Any = app.middleware_stack
    names = []
    while layer is not None:
        names.append(type(layer).__name__)
        layer = getattr(layer, "app", None)
    assert "OpenTelemetryMiddleware" not in names
    assert "ObservabilityMiddleware" in names
    assert app.state.service.tracing is None
    log_lines.lines.clear()
    assert post_image(client, headers={"X-Cloud-Trace-Context": f"{TRACE_ID}/12345;o=1"}).status_code == 200
    (access,) = [line for line in log_lines.lines if line["logger"] == "backend.access"]
    assert access[TRACE_FIELD] == f"projects/{PROJECT}/traces/{TRACE_ID}"
    assert access[TRACE_SAMPLED_FIELD] is True
    assert SPAN_ID_FIELD not in access  # Cloud Run's span, not ours: not claimed


def test_tracing_off_imports_no_sdk() -> None:
    """With TRACE_EXPORTER unset, neither service imports OpenTelemetry's SDK or the instrumentation."""
    import subprocess
    import sys

    code = (
        "import sys; from backend.app import create_app; from backend.config import Settings; "
        "from frontend.backend_client import Backend; from frontend.config import FrontendSettings; "
        "create_app(Settings(_env_file=None)); Backend(FrontendSettings(backend_url='http://127.0.0.1:1')); "
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.instrumentation'))))"
    )
    env = {"PATH": "/usr/bin:/bin", "TRACE_EXPORTER": "none"}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "[]", out.stdout


@contextlib.contextmanager
def real_server(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn over HTTP on a free port, in this process (so its spans land in our exporter)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(f"http://127.0.0.1:{port}/ready", timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_one_trace_across_the_frontend_and_the_backend(
    classifier: Classifier, model_cache: Path, provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    app = create_app(Settings(_env_file=None, model_cache_dir=model_cache), lambda _: classifier, provider)
    with real_server(app) as url:
        settings = FrontendSettings(backend_url=url, backend_auth="none", predict_concurrency=2)
        backend = Backend(settings, tracer_provider=provider)
        with backend.page_run():
            assert backend.status().ready
            images = [ImageInput(p.name, jpeg_bytes(p), "image/jpeg") for p in (CAT, COFFEE)]
            outcomes = backend.predict_many(images, 3)  # on a thread pool
        assert all(not isinstance(o, Exception) for o in outcomes), outcomes
    finished = list(spans.get_finished_spans())
    (page,) = [s for s in finished if s.name == "page run"]
    assert page.parent is None
    calls = children(finished, page)
    assert [c.name for c in calls].count("POST /predict") == 2
    assert all(c.kind == SpanKind.CLIENT and c.context.trace_id == page.context.trace_id for c in calls)
    predicted = 0
    for call in calls:
        if call.name == "GET /ready":  # a probe: the backend does not trace it
            assert children(finished, call) == []
            continue
        (served,) = children(finished, call)  # the backend's span, child of the frontend's call
        assert served.kind == SpanKind.SERVER
        assert served.parent is not None
        assert served.parent.is_remote
        assert served.context.trace_id == page.context.trace_id
        assert call.attributes is not None
        assert call.attributes["http.response.status_code"] == 200
        if call.name == "POST /predict":
            assert_stages_in_order(finished, served)
            assert (call.start_time or 0) <= (served.start_time or -1)
            assert (served.end_time or 0) <= (call.end_time or -1)
            predicted += 1
    assert predicted == 2


def test_the_frontend_sends_trace_headers_only_with_tracing(provider: TracerProvider) -> None:
    with running(fake_backend(BackendBehaviour())) as server:
        for tracer_provider in (None, provider):
            backend = Backend(
                FrontendSettings(backend_url=server.url, backend_auth="none"), tracer_provider=tracer_provider
            )
            with backend.page_run():
                assert backend.status().ready
                backend.predict_many([ImageInput(p.name, jpeg_bytes(p), "image/jpeg") for p in (CAT, COFFEE)], 3)
        sent = [{name.lower() for name in request.headers} for request in server.requests]
    assert len(sent) == 8  # /ready, /model, two /predict: without, then with tracing
    assert not [names for names in sent[:4] if names & {"traceparent", "tracestate", "x-cloud-trace-context"}]
    assert all({"traceparent", "x-cloud-trace-context"} <= names for names in sent[4:])


def test_trace_exporter_console_writes_sampled_spans_as_json_lines(
    make_client: Callable[..., TestClient], capsys: pytest.CaptureFixture[str]
) -> None:
    """The settings' own provider: TRACE_EXPORTER=console, parent-based TRACE_SAMPLE_RATIO=0 (only what a
    caller sampled is kept), spans exported in batches and flushed when the app stops."""
    client = make_client(trace_exporter="console", trace_sample_ratio=0.0)
    capsys.readouterr()
    assert post_image(client).status_code == 200  # starts here: ratio 0, not sampled
    assert post_image(client, headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"}).status_code == 200
    client.__exit__(None, None, None)  # the lifespan's end shuts the provider down: its queue is exported
    spans = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"name"')]
    assert sorted(span["name"] for span in spans) == sorted(["POST /predict", *STAGES])
    assert {span["context"]["trace_id"] for span in spans} == {f"0x{TRACE_ID}"}


def test_the_frontend_traces_from_its_settings() -> None:
    assert Backend(FrontendSettings(backend_url="http://127.0.0.1:1")).tracing is None
    traced = Backend(FrontendSettings(backend_url="http://127.0.0.1:1", trace_exporter="console"))
    assert traced.tracing is not None
    traced.tracing.close()
