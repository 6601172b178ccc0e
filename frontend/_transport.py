"""Sending one request to the backend within a total deadline and reading its answer up to a size cap.

requests' own timeouts bound each single read, so an answer trickling in a byte at a time could hold a page
for ever, and ``response.content`` reads any length. ``send`` sets one deadline for all of a request (sending,
headers and body): when it passes, the sockets the request uses are shut down (``_Deadline``, through
connections the session's adapter registers). The body is read in chunks up to ``MAX_ANSWER_BYTES``, and a
compressed one unpacked no further than that.

Private to ``frontend.backend_client``, which turns these exceptions into messages for people.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import requests
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

__all__ = [
    "MAX_ANSWER_BYTES",
    "Answer",
    "AnswerTooLarge",
    "TooSlow",
    "UnreadableAnswer",
    "megabytes",
    "new_session",
    "send",
]

# The largest answer read from the backend: a /predict answer with top_k <= 10 is about 2 kB, /model
# and /ready well under 1 kB. Anything larger is refused without reading the rest of it.
MAX_ANSWER_BYTES = 1024 * 1024
READ_CHUNK_BYTES = 64 * 1024
CONNECT_TIMEOUT_S = 5.0  # at most; less when the request's whole deadline is shorter


class TooSlow(Exception):
    """No complete answer within the request's deadline (or requests' own read timeout)."""


class AnswerTooLarge(Exception):
    """The answer is over MAX_ANSWER_BYTES; the message is its size, as far as it is known."""


class UnreadableAnswer(Exception):
    """The answer is broken (chunking, encoding, ...); the message says how."""


def megabytes(size: int) -> str:
    """12.3 MB, in MiB like Streamlit's and the backend's limits."""
    return f"{size / 1024**2:.1f} MB"


@dataclass(frozen=True)
class Answer:
    """An HTTP answer from the backend, read in full (at most MAX_ANSWER_BYTES)."""

    status_code: int
    reason: str
    headers: Mapping[str, str]  # case-insensitive
    body: bytes

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> dict[str, Any]:
        """The body as a JSON object; {} when it is anything else (not JSON, an array, nested too deep)."""
        try:
            body = json.loads(self.body)
        except (ValueError, RecursionError):
            return {}
        return body if isinstance(body, dict) else {}


def new_session(pool_size: int) -> requests.Session:
    session = requests.Session()
    adapter = _DeadlineAdapter(pool_connections=2, pool_maxsize=max(pool_size, 2))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "image-classifier-frontend"
    return session


def send(session: requests.Session, request: requests.PreparedRequest, timeout: float) -> Answer:
    """Send ``request`` and read its answer, all within ``timeout`` seconds, at most ``MAX_ANSWER_BYTES`` long.

    Raises TooSlow, AnswerTooLarge or UnreadableAnswer; requests.ConnectionError when nothing answers.
    Redirects are not followed: the backend never redirects, and requests would read those bodies whole.
    """
    # What session.request adds to session.send: proxies and certificates from the environment.
    settings = session.merge_environment_settings(request.url, {}, True, None, None)
    deadline = _Deadline(timeout)
    try:
        with deadline:
            response = session.send(
                request, timeout=(min(timeout, CONNECT_TIMEOUT_S), timeout), allow_redirects=False, **settings
            )
            with contextlib.closing(response):
                body = _read_capped(response, deadline)
    except requests.ConnectTimeout:
        raise  # nothing accepted the connection: a ConnectionError, for the caller
    except (requests.Timeout, urllib3.exceptions.TimeoutError) as exc:
        raise TooSlow from exc
    except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
        if deadline.expired:  # we cut the connection: the answer was too slow in coming
            raise TooSlow from exc
        if isinstance(exc, requests.ConnectionError):
            raise  # nothing answers (the caller may look the backend up again)
        raise UnreadableAnswer(f"{type(exc).__name__}: {exc}"[:300]) from exc  # bad chunking, decoding, ...
    return Answer(response.status_code, response.reason or "", CaseInsensitiveDict(response.headers), body)


def _read_capped(response: requests.Response, deadline: _Deadline) -> bytes:
    """The body of ``response``, read in chunks until it ends, ``MAX_ANSWER_BYTES`` or the deadline."""
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > MAX_ANSWER_BYTES:
        raise AnswerTooLarge(f"{megabytes(int(length))} (Content-Length)")
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
        raise UnreadableAnswer(f"Unsupported Content-Encoding: {encoding[:40]}")
    chunks: list[bytes] = []
    size = 0
    while not deadline.expired:
        # read1: what has arrived (at most one read from the socket), undecoded; chunked bodies unframed.
        chunk = response.raw.read1(READ_CHUNK_BYTES, decode_content=False)
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise AnswerTooLarge(f"more than {megabytes(MAX_ANSWER_BYTES)}")
        chunks.append(chunk)
    if deadline.expired:  # also when the cut connection looked like the end of the body
        raise TooSlow
    body = b"".join(chunks)
    if encoding in ("gzip", "x-gzip", "deflate"):
        # A backend that compresses although asked not to: unpack, but no more than the cap either.
        unpacker = zlib.decompressobj(zlib.MAX_WBITS | 32 if "gzip" in encoding else zlib.MAX_WBITS)
        try:
            body = unpacker.decompress(body, MAX_ANSWER_BYTES + 1)
        except zlib.error as exc:
            raise UnreadableAnswer(f"Bad {encoding} data: {exc}") from exc
        if len(body) > MAX_ANSWER_BYTES or unpacker.unconsumed_tail:
            raise AnswerTooLarge(f"more than {megabytes(MAX_ANSWER_BYTES)} once unpacked")
    return body


class _Deadline:
    """The end of one request's time: then the sockets it uses are shut down, so a read blocked on an
    answer that trickles in (headers or body, a byte at a time) returns at once instead of never.

    The sockets are the ones its thread opened or reused while the deadline was current (see
    ``_WatchedConnection``); requests' own timeouts only bound each single read.
    """

    _current = threading.local()

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._done = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    @classmethod
    def watch_current(cls, sock: socket.socket | None) -> None:
        deadline: _Deadline | None = getattr(cls._current, "deadline", None)
        if deadline is not None and sock is not None:
            deadline._watch(sock)

    def __enter__(self) -> _Deadline:
        self._current.deadline = self
        self._timer.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._current.deadline = None
        with self._lock:
            self._done = True
            self._sockets.clear()
        self._timer.cancel()

    def _watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self._done:
                return
            if self.expired:
                _shut_down(sock)
            else:
                self._sockets.append(sock)

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for sock in self._sockets:
                _shut_down(sock)


def _shut_down(sock: socket.socket) -> None:
    # socket.socket's own shutdown, also for TLS sockets: the TLS state belongs to the reading thread.
    # A socket closed meanwhile has no descriptor any more (EBADF), so no other connection is touched.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _WatchedConnection(urllib3.connection.HTTPConnection):
    """Registers its socket with the current request's deadline when it connects or is reused."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _Deadline.watch_current(sock)
        return sock

    def connect(self) -> None:
        super().connect()
        _Deadline.watch_current(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _Deadline.watch_current(self.sock)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(_WatchedConnection, urllib3.connection.HTTPSConnection):
    pass


class _WatchedHTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _WatchedConnection


class _WatchedHTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter, with connections that the current request's deadline can cut."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
