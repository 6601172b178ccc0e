"""Small HTTP servers on 127.0.0.1 standing in for what the frontend talks to.

``FakeServer`` runs a handler function in a ``ThreadingHTTPServer`` thread, can be stopped and started
again on the same port, and records every request. ``fake_backend`` answers like the real backend in the
states that are hard to produce with it (loading, slow, private); ``fake_cloud_run_api`` answers like
the Cloud Run Admin API v2 (REST) for ``GET /v2/projects/{p}/locations/{r}/services/{name}``.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.helpers import free_port


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-encoded unless bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    chunks: Iterable[bytes] | None = None  # sent instead of body, chunked (Transfer-Encoding), maybe endless
    chunk_delay_s: float = 0.0  # before each chunk


Handler = Callable[[Request], Reply]


class FakeServer:
    """An HTTP server answering with ``handler``; stoppable and restartable on the same port."""

    def __init__(self, handler: Handler, port: int | None = None) -> None:
        self.handler = handler
        self.port = port or free_port()
        self.requests: list[Request] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_running(self) -> bool:
        return self._server is not None

    def paths(self, method: str | None = None) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests if method is None or r.method == method]

    def start(self) -> FakeServer:
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with fake._lock:
                    fake._connections.add(self.connection)

            def finish(self) -> None:
                with fake._lock:
                    fake._connections.discard(self.connection)
                super().finish()

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(self.command, self.path, dict(self.headers.items()), self.rfile.read(length))
                with fake._lock:
                    fake.requests.append(request)
                reply = fake.handler(request)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                raw = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                content_type = "application/octet-stream" if isinstance(reply.body, bytes) else "application/json"
                with contextlib.suppress(OSError):  # the client gave up waiting, or stop() cut the connection
                    self.send_response(reply.status)
                    for name, value in {"Content-Type": content_type, **reply.headers}.items():
                        self.send_header(name, value)
                    if reply.chunks is None:
                        self.send_header("Content-Length", str(len(raw)))
                        self.end_headers()
                        self.wfile.write(raw)
                        return
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for chunk in reply.chunks:
                        if reply.chunk_delay_s:
                            time.sleep(reply.chunk_delay_s)
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")

            do_GET = do_POST = _serve  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output quiet

        server = _QuietServer(("127.0.0.1", self.port), _Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop like a killed process: no new connections, and open keep-alive connections are cut."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-answer (as the frontend does with answers too large) is no news."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def running(server: FakeServer) -> Iterator[FakeServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- the backend


def multipart_files(request: Request) -> list[tuple[str, bytes]]:
    """(filename, content) of each ``file`` part of a multipart/form-data request."""
    head = f"Content-Type: {request.headers.get('Content-Type', '')}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.body)
    files = []
    for part in message.iter_parts() if isinstance(message, Message) and message.is_multipart() else []:
        payload = part.get_payload(decode=True)
        files.append((part.get_filename() or "", payload if isinstance(payload, bytes) else b""))
    return files


MODEL_INFO = {
    "name": "efficientnet_lite0",
    "weights": "fake weights",
    "source": "tests",
    "runtime": "onnx",
    "num_classes": 1000,
    "input_size": [224, 224, 3],
    "max_image_bytes": 20 * 1024 * 1024,
}


FAKE_VERSION = "0123456789abcdef"  # a /predict answer's model_version (a content hash of the model's export)


def prediction(filename: str, top_k: int = 3, label: str = "tabby") -> dict[str, Any]:
    """A /predict answer in the backend's documented shape."""
    labels = [label, "tiger cat", "Egyptian cat", "lynx", "tiger"][:top_k]
    probabilities = [0.62, 0.2, 0.1, 0.05, 0.03][:top_k]
    return {
        "model": "efficientnet_lite0",
        "model_version": FAKE_VERSION,
        "top_k": top_k,
        "results": [
            {
                "filename": filename,
                "format": "JPEG",
                "width": 451,
                "height": 300,
                "predictions": [
                    {"index": 281 + i, "label": name, "probability": p}
                    for i, (name, p) in enumerate(zip(labels, probabilities, strict=True))
                ],
            }
        ],
        "elapsed_ms": 12.5,
    }


@dataclass
class BackendBehaviour:
    """What the fake backend does; tests change the fields while it runs."""

    ready: bool = True
    ready_delay_s: float = 0.0
    predict_delay_s: float = 0.0
    predict_status: int = 200
    predict_error: dict[str, Any] | bytes = field(default_factory=dict)  # the body of a non-200 answer
    predict_headers: dict[str, str] = field(default_factory=dict)
    predict_body: Any = None  # replaces the documented 200 answer (to send a malformed one)
    reject: set[str] = field(default_factory=set)  # filenames answered with 415, as the backend does
    reject_detail: str | None = None  # the 415's detail instead of the backend's usual sentence
    barrier: threading.Barrier | None = None  # /predict requests wait here for each other
    labels: dict[str, str] = field(default_factory=dict)  # filename -> the top class answered for it
    model_info: dict[str, Any] = field(default_factory=lambda: dict(MODEL_INFO))  # the /model answer
    replies: dict[str, Reply] = field(default_factory=dict)  # path -> this answer, whatever was asked
    # Every path but /health and /ready answered this way, as the backend's token check (AUTH_AUDIENCE) does
    refusal: Reply | None = None


def fake_backend(behaviour: BackendBehaviour, port: int | None = None) -> FakeServer:
    def handle(request: Request) -> Reply:
        path = request.path.split("?", 1)[0]
        if path in behaviour.replies:
            return behaviour.replies[path]
        if behaviour.refusal is not None and path not in {"/health", "/ready"}:
            return behaviour.refusal
        if path == "/ready":
            if behaviour.ready:
                return Reply(200, {"status": "ready"}, delay_s=behaviour.ready_delay_s)
            return Reply(503, {"status": "loading", "detail": None}, {"Retry-After": "5"})
        if path == "/model":
            return (
                Reply(200, behaviour.model_info) if behaviour.ready else Reply(503, {"detail": "loading", "code": "x"})
            )
        if path == "/predict" and request.method == "POST":
            files = multipart_files(request)
            name = files[0][0] if files else ""
            if behaviour.barrier is not None:
                try:
                    behaviour.barrier.wait()
                except threading.BrokenBarrierError:
                    return Reply(500, {"detail": "the other requests never came", "code": "test"})
            if name in behaviour.reject:
                detail = behaviour.reject_detail or (
                    f"{name}: not an image (or an unsupported format). Send a JPEG, PNG, WebP, GIF, BMP or TIFF."
                )
                return Reply(415, {"detail": detail, "code": "unsupported_image", "filename": name, "index": 0})
            if behaviour.predict_status != 200:
                return Reply(
                    behaviour.predict_status,
                    behaviour.predict_error,
                    behaviour.predict_headers,
                    delay_s=behaviour.predict_delay_s,
                )
            match = re.search(r"top_k=(\d+)", request.path)
            top_k = int(match.group(1)) if match else 3
            body = behaviour.predict_body or prediction(name, top_k, behaviour.labels.get(name, "tabby"))
            return Reply(200, body, delay_s=behaviour.predict_delay_s)
        return Reply(404, {"detail": "Not Found"})

    return FakeServer(handle, port)


# --- the Cloud Run Admin API


SERVICE_PATH = re.compile(r"^/v2/projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)/services/(?P<name>[^/?]+)")


def service_record(project: str, region: str, name: str, uri: str) -> dict[str, Any]:
    """A Service as ``GET https://run.googleapis.com/v2/{name}`` returns it (the fields a deployed one has)."""
    full = f"projects/{project}/locations/{region}/services/{name}"
    revision = f"{full}/revisions/{name}-00003-kav"
    return {
        "name": full,
        "uid": "5c8a1f3e-8b1d-4f7a-9d62-0c1f3f7b9e21",
        "generation": "3",
        "createTime": "2026-11-20T09:12:44.520961Z",
        "updateTime": "2026-11-23T08:01:02.118230Z",
        "creator": "deployer@example.com",
        "lastModifier": "deployer@example.com",
        "ingress": "INGRESS_TRAFFIC_ALL",
        "launchStage": "GA",
        "template": {
            "scaling": {"maxInstanceCount": 3},
            "timeout": "300s",
            "serviceAccount": f"backend@{project}.iam.gserviceaccount.com",
            "containers": [
                {
                    "image": f"{region}-docker.pkg.dev/{project}/classifier/backend:latest",
                    "ports": [{"name": "http1", "containerPort": 8080}],
                    "resources": {"limits": {"cpu": "2", "memory": "2Gi"}, "cpuIdle": True, "startupCpuBoost": True},
                    "startupProbe": {"timeoutSeconds": 240, "periodSeconds": 240, "failureThreshold": 1},
                }
            ],
            "maxInstanceRequestConcurrency": 80,
        },
        "traffic": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}],
        "observedGeneration": "3",
        "terminalCondition": {
            "type": "Ready",
            "state": "CONDITION_SUCCEEDED",
            "lastTransitionTime": "2026-11-23T08:01:40.664912Z",
        },
        "conditions": [
            {"type": "RoutesReady", "state": "CONDITION_SUCCEEDED", "lastTransitionTime": "2026-11-23T08:01:40Z"},
            {"type": "ConfigurationsReady", "state": "CONDITION_SUCCEEDED"},
        ],
        "latestReadyRevision": revision,
        "latestCreatedRevision": revision,
        "trafficStatuses": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}],
        "uri": uri,
        "urls": [uri],
        "etag": '"CNqA8qoGEKj6+DA/cHJvamVjdHMvZXhhbXBsZS9sb2NhdGlvbnMvZXVyb3BlLXdlc3QxL3NlcnZpY2VzL2NsYXNzaWZpZXI"',
    }


def failed_service_record(project: str, region: str, name: str, message: str) -> dict[str, Any]:
    """A Service whose first revision never became ready: no ``uri`` yet, a failed terminal condition."""
    record = service_record(project, region, name, "")
    for key in ("uri", "urls", "latestReadyRevision", "trafficStatuses"):
        del record[key]
    record["terminalCondition"] = {"type": "Ready", "state": "CONDITION_FAILED", "message": message}
    return record


def google_error(code: int, status: str, message: str) -> dict[str, Any]:
    """The error body Google APIs return over REST."""
    return {"error": {"code": code, "message": message, "status": status}}


@dataclass
class CloudRunState:
    """The services the fake API knows (``services[name] = uri``); ``denied`` answers 403 to every lookup.

    With ``access_tokens`` set, a lookup must carry ``Authorization: Bearer`` one of them (401 otherwise),
    as Google's API wants an OAuth access token: tests/cloudrun shares the set its metadata server fills.
    """

    services: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # name -> why its revision is not ready
    denied: bool = False
    access_tokens: set[str] | None = None


def fake_cloud_run_api(state: CloudRunState) -> FakeServer:
    def handle(request: Request) -> Reply:
        match = SERVICE_PATH.match(request.path)
        if request.method != "GET" or match is None:
            return Reply(404, google_error(404, "NOT_FOUND", f"Method not found: {request.path}"))
        project, region, name = match["project"], match["region"], match["name"]
        if state.access_tokens is not None:
            authorization = {k.lower(): v for k, v in request.headers.items()}.get("authorization", "")
            if authorization.removeprefix("Bearer ") not in state.access_tokens:
                return Reply(
                    401,
                    google_error(
                        401,
                        "UNAUTHENTICATED",
                        "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
                        "cookie or other valid authentication credential.",
                    ),
                )
        if state.denied:
            return Reply(
                403,
                google_error(
                    403,
                    "PERMISSION_DENIED",
                    f"Permission 'run.services.get' denied on resource "
                    f"'namespaces/{project}/services/{name}' (or resource may not exist).",
                ),
            )
        if name in state.failed:
            return Reply(200, failed_service_record(project, region, name, state.failed[name]))
        uri = state.services.get(name)
        if uri is None:
            return Reply(
                404,
                google_error(
                    404,
                    "NOT_FOUND",
                    f"Resource '{name}' of kind 'SERVICE' in region '{region}' in project '{project}' does not exist.",
                ),
            )
        return Reply(200, service_record(project, region, name, uri))

    return FakeServer(handle)
