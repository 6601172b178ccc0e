"""Pure-ASGI middleware: what every request needs (metrics, an access log, security headers), and the token check."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, Final, NamedTuple

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.auth import AuthUnavailable, GoogleIdTokenVerifier, InvalidToken, bearer_token
from backend.errors import answer_for, error_response
from backend.metrics import Metrics
from backend.protocols import protocol_of
from common.tracing import forget_cloud_trace, remember_cloud_trace

logger = logging.getLogger("backend.access")
_NOSNIFF = (b"x-content-type-options", b"nosniff")
# Probes need no token (the protocols' own included: KServe's and TorchServe's health checks).
OPEN_PATHS: Final = frozenset({"/health", "/ready", "/v2/health/live", "/v2/health/ready", "/ping"})


class _RequestSeries(NamedTuple):
    """The metric series one kind of answer (route, method, status) counts into."""

    requests: Counter
    protocol_requests: Counter
    latency: Histogram


class ObservabilityMiddleware:
    def __init__(
        self, app: ASGIApp, metrics: Metrics, access_log: bool = True, cloud_trace_header: bool = False
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        # Log lines take their trace from X-Cloud-Trace-Context (tracing off, on Cloud Run): common.tracing.
        self.cloud_trace_header = cloud_trace_header
        # prometheus_client's labels() checks and looks up its labels under a lock on every call: half of this
        # middleware's cost per request (20 against 10 us, docs/profile.md). As bounded as prometheus_client's
        # own children: routes' templates (or "unmatched"), the methods httptools parses, statuses.
        self._series: dict[tuple[str, str, int], _RequestSeries] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        cloud_trace = remember_cloud_trace(scope["headers"]) if self.cloud_trace_header else None

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # Every answer is JSON or text; browsers must not guess another type from user-influenced bytes.
                message["headers"] = [*message.get("headers", ()), _NOSNIFF]
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_progress.dec()
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            # The route's template, never the raw path: unmatched paths would explode label cardinality.
            template = getattr(route, "path", None) or "unmatched"
            series = self._series_for(template, scope["method"], status)
            series.requests.inc()
            series.protocol_requests.inc()
            series.latency.observe(elapsed)
            if self.access_log:
                self._log(scope, status, elapsed)
            forget_cloud_trace(cloud_trace)

    def _series_for(self, template: str, method: str, status: int) -> _RequestSeries:
        key = (template, method, status)
        series = self._series.get(key)
        if series is None:
            m = self.metrics
            series = self._series[key] = _RequestSeries(
                m.requests.labels(template, method, str(status)),
                m.protocol_requests.labels(protocol_of(template), str(status)),
                m.request_latency.labels(template),
            )
        return series

    @staticmethod
    def _log(scope: Scope, status: int, elapsed: float) -> None:
        headers = dict(scope.get("headers") or [])
        client = scope.get("client")
        query = scope.get("query_string", b"").decode("latin-1")
        http_request: dict[str, Any] = {
            "requestMethod": scope["method"],
            "requestUrl": scope["path"] + (f"?{query}" if query else ""),
            "status": status,
            "latency": f"{elapsed:.6f}s",
            "userAgent": headers.get(b"user-agent", b"").decode("latin-1"),
            "remoteIp": client[0] if client else None,
            "protocol": f"HTTP/{scope.get('http_version', '1.1')}",
        }
        level = logging.WARNING if status >= 500 else logging.INFO
        logger.log(level, "%s %s %d", scope["method"], scope["path"], status, extra={"httpRequest": http_request})


class IdTokenAuthMiddleware:
    """Refuses requests without a valid token (``backend.auth``) before any route, or body read, runs."""

    def __init__(self, app: ASGIApp, verifier: GoogleIdTokenVerifier, open_paths: Iterable[str] = OPEN_PATHS) -> None:
        self.app = app
        self.verifier = verifier
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or (scope["type"] == "http" and scope["path"] in self.open_paths):
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        try:
            if token is None:
                raise InvalidToken(
                    "missing_token", "This service needs 'Authorization: Bearer <Google ID token>' on every request."
                )
            claims = await asyncio.to_thread(self.verifier.verify, token)
        except (InvalidToken, AuthUnavailable) as exc:
            if scope["type"] == "websocket":  # none today; a future one is closed too (1008: policy violation)
                await send({"type": "websocket.close", "code": 1008})
                return
            # RFC 6750: a challenge on every 401, with error="invalid_token" when a token was sent.
            challenge = {"WWW-Authenticate": "Bearer" if token is None else 'Bearer error="invalid_token"'}
            await error_response(exc, headers=challenge if answer_for(exc).status == 401 else None)(
                scope, receive, send
            )
            return
        scope.setdefault("state", {})["auth_claims"] = claims
        await self.app(scope, receive, send)
