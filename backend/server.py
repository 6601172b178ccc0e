"""The HTTP server: uvicorn with httptools, plus the connection budgets uvicorn does not have.

uvicorn 0.54 (httptools) has no limit on header size (httptools re-joins a header value split over many
reads, so a 200 MB header cost 51 s of event-loop CPU), no header-read timeout, no idle timeout for a
connection that never sent a request (its keep-alive timer starts after the first response: 1,100 silent
sockets exhausted 1,024 descriptors and every new request failed without a log line), drains the unread
body after an early response without bound, and answers its own concurrency limit in plain text.

The alternatives, measured with this app (``docs/reliability.md``, "The HTTP server", and ``docs/profile.md``,
"The HTTP server", have the figures): at 16 clients granian 2.8.9 was 1.22x ahead of ``python -m backend`` in
images/s on a loaded machine, but so was uvicorn's own CLI with the same httptools (1.10-1.25x), and this module's
protocol against uvicorn's plain one 1.07x: the server is not where the time goes. uvicorn's h11 answers
oversized headers 400, not 431, and has no header timeout either. granian 2.8.9
(``--http1-header-read-timeout``, ``--http1-buffer-size``, ``--backpressure``) closes silent and slow-header
connections at its header timeout, but with no answer (no 408), its idle keep-alive timeout is that same header
timeout, its 431 has an empty body, and it has no connection limit: ``--backpressure`` counts connections being
served without evicting idle ones, so 300 silent sockets held a real request for 7 s and 45 stalled uploads held
the 46th for 2.5 s where this module answers at once (6 of the 10 tests of ``tests/reliability/test_connections.py``
fail under it). It would also replace the process model, signals and logging this service is tested with.
So this module keeps uvicorn and adds, in ~200 lines on its protocol class:

- ``max_header_bytes``: request line + headers above it get **431** (JSON) before httptools sees more;
- ``header_timeout_s``: from a request's first byte to the end of its headers, else **408**;
- ``keep_alive_timeout_s``: for idle connections, *including* new connections that have sent nothing;
- ``max_connections``: a connection beyond it first makes room by closing the connection that has waited
  longest for a request (idle keep-alive, or still sending its headers): silent sockets cannot lock clients
  out. Only when every connection has a request in progress is it answered **503** with ``Retry-After``
  (JSON) at its first request, instead of failing at the descriptor limit;
- a *lingering close*: after an early answer (413 before the body was read, 431, 408, 503), up to
  ``drain_bytes`` / ``drain_timeout_s`` of the rest of the request are read and dropped before the
  connection closes, so that clients that send their whole body before reading (requests, httpx) read the
  answer instead of a connection reset. Past that bound, the connection is closed.

``Server`` also tells the app when SIGTERM arrives (``on_exit``), so it can report not-ready and answer
what is still in progress with a JSON 503 before uvicorn's own grace period cancels it with a plain 500.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, ClassVar, Final

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)

_FD_RESERVE: Final = 256  # descriptors kept for everything but client connections (decoders' pipes, files)
_OVER_LIMIT_HEADER_TIMEOUT_S: Final = 1.0
_REFUSALS: Final = ("header_too_large", "header_timeout", "too_many_connections", "evicted_waiting", "drain_limit")


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int = 16 * 1024
    header_timeout_s: float = 10.0
    keep_alive_timeout_s: float = 75.0
    max_connections: int = 1000
    drain_bytes: int = 64 * 1024 * 1024
    drain_timeout_s: float = 5.0


@dataclass
class ConnectionStats:
    """Counts of what the connection budgets did, for ``/metrics``."""

    refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_REFUSALS, 0))
    open_connections: int = 0

    def count(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


STATS = ConnectionStats()


def _json_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> bytes:
    body = json.dumps({"detail": detail, "code": code}).encode()
    reason = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}[status]
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "x-content-type-options: nosniff",
        "connection: close",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _LingeringTransport:
    """What the request/response cycle sees as its transport: ``close()`` lingers while the body still arrives."""

    def __init__(self, protocol: GuardedHttpToolsProtocol, transport: asyncio.Transport) -> None:
        self._protocol = protocol
        self._transport = transport

    def close(self) -> None:
        self._protocol.close_after_body()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the budgets described in the module docstring."""

    limits: ConnectionLimits = ConnectionLimits()
    # Connections waiting for a request (idle, or headers still arriving), longest-waiting first; per server.
    waiting: ClassVar[collections.OrderedDict[GuardedHttpToolsProtocol, None]] = collections.OrderedDict()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._awaiting_headers = True
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_done = True
        self._closing_after_body = False
        self._drained = 0
        self._drain_timer: asyncio.TimerHandle | None = None
        self._header_timeout_s = self.limits.header_timeout_s

    # --- connections

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._evict_longest_waiting()
        STATS.open_connections = len(self.connections)
        self.waiting[self] = None
        if len(self.connections) > self.limits.max_connections:
            STATS.count("too_many_connections")
            self.app = _too_many_connections  # answered at its first request, which must come quickly
            self._header_timeout_s = min(self._header_timeout_s, _OVER_LIMIT_HEADER_TIMEOUT_S)
            self.timeout_keep_alive_task = self.loop.call_later(_OVER_LIMIT_HEADER_TIMEOUT_S, self._close)
            return
        # uvicorn arms its idle timer only after a response; a connection that never speaks is idle too.
        self.timeout_keep_alive_task = self.loop.call_later(self.limits.keep_alive_timeout_s, self._close)

    def _evict_longest_waiting(self) -> None:
        oldest = next(iter(self.waiting), None)
        if oldest is None:
            return
        del self.waiting[oldest]
        STATS.count("evicted_waiting")
        oldest.transport.close()
        self.connections.discard(oldest)  # counted out now; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.waiting.pop(self, None)
        for timer in (self._header_timer, self._drain_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)
        STATS.open_connections = len(self.connections)

    def _close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    # --- headers

    def data_received(self, data: bytes) -> None:
        if self._closing_after_body or (
            self.cycle is not None and self.cycle.response_complete and not self._body_done
        ):
            self._drained += len(data)  # the rest of a request that was answered early
        if not self._awaiting_headers:
            super().data_received(data)
            self._check_drain()
            return
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self._header_timeout_s, self._header_timeout)
        room = self.limits.max_header_bytes - self._header_bytes
        self._header_bytes += min(len(data), room)
        if len(data) > room:  # a read of headers and body (a whole request, often): split without copying it
            data = memoryview(data)  # type: ignore[assignment]  # httptools parses any buffer
        super().data_received(data[:room] if len(data) > room else data)
        headers_pending = self._headers_pending()  # the parser's callbacks may have ended them
        if headers_pending and len(data) >= room and not self.transport.is_closing():
            STATS.count("header_too_large")
            self._refuse(
                431,
                "headers_too_large",
                f"The request line and headers are larger than {self.limits.max_header_bytes} bytes. "
                "Send fewer or shorter headers (cookies, tokens).",
            )
            return
        if not headers_pending and len(data) > room:
            super().data_received(data[room:])  # the body that followed the headers in the same read

    def _headers_pending(self) -> bool:
        return self._awaiting_headers

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._body_done = False

    def on_headers_complete(self) -> None:
        self.waiting.pop(self, None)
        self._awaiting_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().on_headers_complete()
        if self.cycle is not None:
            self.cycle.transport = _LingeringTransport(self, self.transport)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._body_done = True
        self._awaiting_headers = True
        self._header_bytes = 0
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        if self._closing_after_body:
            self._close()

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self.transport.is_closing():
            STATS.count("header_timeout")
            self._refuse(
                408,
                "header_timeout",
                f"The request headers did not arrive within {self._header_timeout_s:g} s.",
            )

    # --- early answers and lingering close

    def _refuse(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        """Answer now with a JSON error, stop parsing, and close once the client had a chance to read it."""
        self._unset_keepalive_if_required()
        self.transport.write(_json_response(status, code, detail, headers))
        self.parser = _Discard()  # type: ignore[assignment]
        self._awaiting_headers = False
        self._closing_after_body = True
        self._half_close()
        self._drain_timer = self.loop.call_later(self.limits.drain_timeout_s, self._close)

    def close_after_body(self) -> None:
        """The cycle wants the connection closed: at once if the request was read, else after a bounded drain."""
        if self._body_done or self.transport.is_closing():
            self._close()
            return
        self._closing_after_body = True
        self._half_close()
        self._start_drain()

    def _half_close(self) -> None:
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the answer, then FIN: the client reads it while it still sends
        self.flow.resume_reading()

    def _start_drain(self) -> None:
        if self._drain_timer is None and not self._body_done:
            self._drain_timer = self.loop.call_later(self.limits.drain_timeout_s, self._drain_limit)
        self._check_drain()

    def _check_drain(self) -> None:
        if self._drained > self.limits.drain_bytes:
            self._drain_limit()

    def _drain_limit(self) -> None:
        self._drain_timer = None
        if not self.transport.is_closing():
            STATS.count("drain_limit")
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._body_done and not self.pipeline and not self.transport.is_closing():
            self.waiting[self] = None  # idle until its next request
        if not self._body_done and self.cycle is not None:
            self._drained = 0
            self._start_drain()


class _Discard:
    """Stands in for the parser once a connection is being refused: bytes are counted, not parsed."""

    def feed_data(self, data: bytes) -> None:
        return None

    def should_upgrade(self) -> bool:
        return False


async def _too_many_connections(scope: Any, receive: Any, send: Any) -> None:
    body = json.dumps(
        {
            "detail": "The server has too many open connections. Retry in a second.",
            "code": "too_many_connections",
        }
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
        (b"x-content-type-options", b"nosniff"),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def protocol_with(limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for one server: its limits, and its own register of waiting connections."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"limits": limits, "waiting": collections.OrderedDict()},
    )


def raise_descriptor_limit(max_connections: int) -> int:
    """Raise the soft limit on open files to the hard one; the connections that fit under it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    fits = max(16, soft - _FD_RESERVE) if soft != resource.RLIM_INFINITY else max_connections
    if fits < max_connections:
        logger.warning(
            "MAX_CONNECTIONS lowered to fit the open-file limit",
            extra={"max_connections": max_connections, "open_file_limit": soft, "used": fits},
        )
    return min(max_connections, fits)


class Server(uvicorn.Server):
    """uvicorn's server, calling ``on_exit`` (once, on the event loop) when asked to stop."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit
        self._exit_announced = False
        self.exit_requested_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._exit_announced:
            return
        self._exit_announced = True
        self.exit_requested_at = time.monotonic()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_soon_threadsafe(self._on_exit)


__all__ = [
    "STATS",
    "ConnectionLimits",
    "ConnectionStats",
    "GuardedHttpToolsProtocol",
    "Server",
    "protocol_with",
    "raise_descriptor_limit",
]
