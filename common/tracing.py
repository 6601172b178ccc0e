"""The trace fields of log lines, for both services; the tracing itself (OpenTelemetry's SDK) is
``common.otel``, imported only when tracing is configured (importing OpenTelemetry costs ~0.1 s).

``trace_log_fields`` gives ``logging.googleapis.com/trace``, ``spanId`` and ``trace_sampled`` for a line logged
inside a request (``common.logs`` adds them to every line), so the Logs Explorer groups it under its request:
from the current span when tracing is on (``use_spans``), else from the ``X-Cloud-Trace-Context`` header Cloud
Run sent (``remember_cloud_trace``), as Google's ``run/logging-manual`` sample does. Cloud Logging wants the
trace as ``projects/PROJECT_ID/traces/TRACE_ID`` ("Link log entries with traces": the field "must be set to a
string with the following format"), so without a project id no trace field is written.

``log_project``: that project id, from settings or ``GOOGLE_CLOUD_PROJECT``, else (on Cloud Run only) the
metadata server's, asked once, at the first need, in a background thread with a short timeout: a log line
never waits for it (lines logged before the answer carry no trace).
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from typing import Final

__all__ = [
    "SPAN_ID_FIELD",
    "TRACE_FIELD",
    "TRACE_SAMPLED_FIELD",
    "CloudTraceToken",
    "forget_cloud_trace",
    "log_project",
    "logs_traces",
    "remember_cloud_trace",
    "set_log_project",
    "trace_log_fields",
    "use_spans",
]

logger = logging.getLogger(__name__)

TRACE_FIELD: Final = "logging.googleapis.com/trace"
SPAN_ID_FIELD: Final = "logging.googleapis.com/spanId"
TRACE_SAMPLED_FIELD: Final = "logging.googleapis.com/trace_sampled"
METADATA_TIMEOUT_S: Final = 1.0


# --- the project id in log lines


class _Project:
    """The project id for log lines: given, else ``GOOGLE_CLOUD_PROJECT``, else the metadata server's (on Cloud
    Run), fetched once in the background. ``get`` never blocks: None until known."""

    def __init__(self) -> None:
        self.value: str | None = None
        self.fetching = False  # the metadata server is being asked
        self._asked = False
        self._lock = threading.Lock()

    def set(self, project: str | None) -> None:
        with self._lock:
            self.value = project or None
            self._asked = project is not None

    def get(self) -> str | None:
        if self.value is None and not self._asked:
            self._ask()
        return self.value

    def _ask(self) -> None:
        with self._lock:
            if self._asked:
                return
            self._asked = True
        if project := os.environ.get("GOOGLE_CLOUD_PROJECT", "").strip():
            self.value = project
            return
        if not (os.environ.get("K_SERVICE") or os.environ.get("CLOUD_RUN_JOB")):
            return  # not on Cloud Run: no metadata server to ask (and no Cloud Logging reading the field)
        self.fetching = True
        threading.Thread(target=self._fetch, name="log-project", daemon=True).start()

    def _fetch(self) -> None:
        try:
            self._ask_metadata_server()
        finally:
            self.fetching = False

    def _ask_metadata_server(self) -> None:
        host = os.environ.get("GCE_METADATA_HOST", "metadata.google.internal")
        request = urllib.request.Request(
            f"http://{host}/computeMetadata/v1/project/project-id", headers={"Metadata-Flavor": "Google"}
        )
        try:
            with urllib.request.urlopen(request, timeout=METADATA_TIMEOUT_S) as answer:  # noqa: S310 (http only)
                project = answer.read(256).decode("ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            logger.warning(
                "no project id from the metadata server: log lines carry no trace", extra={"reason": str(exc)[:200]}
            )
            return
        if project:
            self.value = project


_project = _Project()


def set_log_project(project: str | None) -> None:
    """The project id for log lines' trace field (the GOOGLE_CLOUD_PROJECT setting); None: look it up."""
    _project.set(project)


def log_project() -> str | None:
    """The project id, or None (not known, or still being asked for: the lookup starts at the first call)."""
    return _project.get()


def logs_traces() -> bool:
    """Whether log lines can carry a trace: a project id is known, or is being asked for (on Cloud Run)."""
    _project.get()
    return _project.value is not None or _project.fetching


# --- trace fields of log lines

CloudTraceToken = contextvars.Token[tuple[str, bool] | None]
# (trace id as 32 hex digits, sampled) from X-Cloud-Trace-Context, for requests traced by Cloud Run only.
_cloud_trace: contextvars.ContextVar[tuple[str, bool] | None] = contextvars.ContextVar("cloud_trace", default=None)
_HEX: Final = frozenset("0123456789abcdef")


class _Spans:
    """Where log lines find the current span's (trace id, span id, sampled): set by ``use_spans``."""

    current: Callable[[], tuple[int, int, bool] | None] | None = None


def use_spans(current_span: Callable[[], tuple[int, int, bool] | None]) -> None:
    """Tracing is on: log lines take their trace from ``current_span()`` (``common.otel.current_span_ids``)."""
    _Spans.current = current_span


def remember_cloud_trace(headers: Iterable[tuple[bytes, bytes]]) -> CloudTraceToken | None:
    """Keep the trace id of the request's ``X-Cloud-Trace-Context`` (``TRACE_ID/SPAN_ID;o=1``) for its log
    lines; None when there is none (or it is malformed). Undo with ``forget_cloud_trace``."""
    for name, value in headers:
        if name == b"x-cloud-trace-context":
            trace_id = value[:32].decode("latin-1").lower()
            if value[32:33] == b"/" and len(trace_id) == 32 and _HEX.issuperset(trace_id) and trace_id != "0" * 32:
                return _cloud_trace.set((trace_id, value.endswith(b";o=1")))
            return None
    return None


def forget_cloud_trace(token: CloudTraceToken | None) -> None:
    if token is not None:
        _cloud_trace.reset(token)


def trace_log_fields() -> Mapping[str, object]:
    """The trace fields for a line logged now: {} outside a traced request or without a project id."""
    current = _Spans.current
    span = current() if current is not None else None
    if span is not None:
        project = log_project()
        if project is None:
            return {}
        trace_id, span_id, sampled = span
        return {
            TRACE_FIELD: f"projects/{project}/traces/{trace_id:032x}",
            SPAN_ID_FIELD: f"{span_id:016x}",
            TRACE_SAMPLED_FIELD: sampled,
        }
    remembered = _cloud_trace.get()
    if remembered is None:
        return {}
    project = log_project()
    if project is None:
        return {}
    trace_id_hex, sampled = remembered
    return {TRACE_FIELD: f"projects/{project}/traces/{trace_id_hex}", TRACE_SAMPLED_FIELD: sampled}
