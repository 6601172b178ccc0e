"""Optional bearer-token check, for hosting the backend somewhere other than a private Cloud Run service.

On Cloud Run, deploy the backend without ``--allow-unauthenticated``: the platform then refuses every
call that does not carry a Google-signed ID token of an identity with ``roles/run.invoker``, before it
reaches this process. Elsewhere (a VM, GKE, another cloud), set ``AUTH_AUDIENCE`` and the app does the
same check itself: every route except ``/health`` and ``/ready`` needs ``Authorization: Bearer <token>``
where the token is a Google-signed ID token whose ``aud`` is ``AUTH_AUDIENCE``.

An audience check alone admits any Google identity that asks Google for a token with that audience,
so set ``AUTH_ALLOWED_EMAILS`` too (the service accounts of your callers) unless anyone may call.

Signatures are checked with ``google.oauth2.id_token.verify_token`` against the certificates at
``AUTH_CERTS_URL`` (Google's by default), and the issuer as ``verify_oauth2_token`` does: ``iss`` must be
``accounts.google.com`` or ``https://accounts.google.com`` (``verify_token`` alone does not look at it,
so a token another issuer signed with a key published at ``AUTH_CERTS_URL`` would otherwise pass).
The certificates are fetched once and kept for as long as their ``Cache-Control: max-age`` says
(bounded), and fetched again early only when a token names a key id that is not among them (Google
rotates its keys), at most once per ``REFRESH_MIN_INTERVAL_S``.
Verification runs in a worker thread: it may fetch certificates (blocking I/O), and RSA is CPU work.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import google.auth.transport.requests
from google.auth import exceptions as google_exceptions
from google.auth import transport
from google.oauth2 import id_token
from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger(__name__)

GOOGLE_CERTS_URL: Final = "https://www.googleapis.com/oauth2/v1/certs"
# The issuers of Google-signed ID tokens (google.oauth2.id_token.verify_oauth2_token accepts these two).
GOOGLE_ISSUERS: Final = frozenset({"accounts.google.com", "https://accounts.google.com"})
OPEN_PATHS: Final = frozenset({"/health", "/ready"})
CERTS_TTL_S: Final = 300.0  # when the certificate endpoint sends no max-age
CERTS_MAX_TTL_S: Final = 6 * 3600.0
REFRESH_MIN_INTERVAL_S: Final = 30.0
FAILURE_BACKOFF_S: Final = 5.0
FETCH_TIMEOUT_S: Final = 10.0
CLOCK_SKEW_S: Final = 10
MAX_TOKEN_CHARS: Final = 8192  # Google ID tokens are about 1 kB
_MAX_AGE = re.compile(r"max-age=(\d+)")


class InvalidToken(Exception):
    """The request's credentials are missing or not acceptable: 401, or 403 for a valid token of the wrong caller."""

    def __init__(self, code: str, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class AuthUnavailable(Exception):
    """The signing certificates cannot be fetched, so no token can be checked now (answer 503)."""


@dataclass
class _Cached:
    response: transport.Response
    fetched: float
    expires: float


class CachingRequest(transport.Request):
    """A google-auth transport that keeps successful GET answers (the certificates) until they expire.

    When a refresh fails, the previous answer keeps being used (Google's keys overlap by days), and a
    failure with nothing cached is remembered for ``FAILURE_BACKOFF_S`` so that an outage of the
    certificate endpoint does not turn every request into a slow fetch.
    """

    def __init__(self, inner: transport.Request | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._inner = inner or google.auth.transport.requests.Request()
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._failed_until: dict[str, float] = {}
        self._lock = threading.Lock()  # one fetch at a time: threads that waited then find it cached
        self.fetches = 0

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> transport.Response:
        if method != "GET":
            passed: transport.Response = self._inner(
                url, method=method, body=body, headers=headers, timeout=timeout, **kwargs
            )
            return passed
        with self._lock:
            now = self._clock()
            cached = self._cache.get(url)
            if cached is not None and now < cached.expires:
                return cached.response
            if cached is None and now < self._failed_until.get(url, 0.0):
                raise google_exceptions.TransportError(  # type: ignore[no-untyped-call]
                    f"fetching {url} failed less than {FAILURE_BACKOFF_S:.0f}s ago"
                )
            response: transport.Response | None = None
            try:
                self.fetches += 1
                response = self._inner(url, method="GET", headers=headers, timeout=timeout or FETCH_TIMEOUT_S, **kwargs)
                failure = None if response.status == 200 else f"HTTP {response.status}"
            except google_exceptions.TransportError as exc:
                failure = str(exc)
            if failure is None and response is not None:
                self._cache[url] = _Cached(response, now, now + _ttl(response.headers))
                self._failed_until.pop(url, None)
                return response
            logger.warning("fetching token certificates failed", extra={"url": url, "error": failure})
            if cached is not None:
                cached.expires = now + REFRESH_MIN_INTERVAL_S
                return cached.response
            self._failed_until[url] = now + FAILURE_BACKOFF_S
            if response is not None:
                return response  # verify_token turns a non-200 answer into a TransportError
            raise google_exceptions.TransportError(failure)  # type: ignore[no-untyped-call]

    def expire(self, url: str, min_age_s: float = REFRESH_MIN_INTERVAL_S) -> bool:
        """Make the next call fetch ``url`` again, if its answer is older than ``min_age_s``. True if so."""
        with self._lock:
            cached = self._cache.get(url)
            if cached is None:
                return True
            now = self._clock()
            if now - cached.fetched < min_age_s:
                return False
            cached.expires = now
            return True


def _ttl(headers: Mapping[str, str]) -> float:
    cache_control = next((v for k, v in headers.items() if k.lower() == "cache-control"), "")
    match = _MAX_AGE.search(cache_control)
    if match is None:
        return CERTS_TTL_S
    return min(max(float(match.group(1)), REFRESH_MIN_INTERVAL_S), CERTS_MAX_TTL_S)


class GoogleIdTokenVerifier:
    """Checks a Google-signed ID token: signature, expiry, audience, issuer, and optionally the caller's email."""

    def __init__(
        self,
        audience: str,
        certs_url: str = GOOGLE_CERTS_URL,
        allowed_emails: Iterable[str] = (),
        request: CachingRequest | None = None,
    ) -> None:
        self.audience = audience
        self.certs_url = certs_url
        self.allowed_emails = frozenset(email.lower() for email in allowed_emails)
        self.request = request or CachingRequest()

    def verify(self, token: str) -> Mapping[str, Any]:
        """The token's claims, or ``InvalidToken`` (401) / ``AuthUnavailable`` (503). Blocking: call in a thread."""
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("invalid_token", "The bearer token is too long to be a Google ID token.")
        try:
            claims = self._verify_signed(token)
        except (InvalidToken, AuthUnavailable):
            raise
        except Exception as exc:  # malformed tokens fail in many ways inside google-auth: all are a 401
            raise _classify(exc) from None
        issuer = claims.get("iss")
        if not isinstance(issuer, str) or issuer not in GOOGLE_ISSUERS:  # a list or an object is no issuer either
            raise InvalidToken("wrong_issuer", "The token was not issued by Google (accounts.google.com).")
        if self.allowed_emails:
            email = claims.get("email")
            if (
                not isinstance(email, str)
                or claims.get("email_verified") is not True
                or email.lower() not in self.allowed_emails
            ):
                raise InvalidToken("forbidden_identity", "This identity may not call the service.", status=403)
        return claims

    def _verify_signed(self, token: str) -> Mapping[str, Any]:
        for attempt in range(2):
            try:
                return id_token.verify_token(
                    token,
                    self.request,
                    audience=self.audience,
                    certs_url=self.certs_url,
                    clock_skew_in_seconds=CLOCK_SKEW_S,
                )
            except google_exceptions.TransportError as exc:
                raise AuthUnavailable(str(exc)) from None
            except json.JSONDecodeError as exc:  # the certificate endpoint answered 200 with something else
                logger.warning("token certificates are not JSON", extra={"url": self.certs_url})
                self.request.expire(self.certs_url)
                raise AuthUnavailable(f"the certificates at {self.certs_url} are not JSON") from exc
            except ImportError as exc:  # a JWK set needs PyJWT: AUTH_CERTS_URL must serve the PEM format
                logger.error("AUTH_CERTS_URL serves JWKs; use Google's PEM endpoint", extra={"url": self.certs_url})
                raise AuthUnavailable(str(exc)) from exc
            except google_exceptions.MalformedError as exc:
                # A key id we do not know: Google may have rotated its keys since we fetched them.
                if attempt == 0 and "Certificate for key id" in str(exc) and self.request.expire(self.certs_url):
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover


def _classify(exc: Exception) -> InvalidToken:
    message = str(exc)
    if message.startswith("Token expired"):
        return InvalidToken("token_expired", "The token has expired. Fetch a new ID token and retry.")
    if message.startswith("Token used too early"):
        return InvalidToken("invalid_token", "The token is not valid yet (check the caller's clock).")
    if "wrong audience" in message:
        return InvalidToken("wrong_audience", "The token was issued for another audience (see AUTH_AUDIENCE).")
    return InvalidToken("invalid_token", "The bearer token is not a valid Google-signed ID token.")


def bearer_token(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if the request has one."""
    headers: list[tuple[bytes, bytes]] = scope.get("headers") or []
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


class IdTokenAuthMiddleware:
    """Pure ASGI: refuses requests without a valid token before any route (or body read) runs."""

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
            await _refuse(send, token, exc)
            return
        scope.setdefault("state", {})["auth_claims"] = claims
        await self.app(scope, receive, send)


async def _refuse(send: Send, token: str | None, exc: InvalidToken | AuthUnavailable) -> None:
    if isinstance(exc, AuthUnavailable):
        detail = "Tokens cannot be checked right now. Retry shortly."
        await _send_json(send, 503, "auth_unavailable", detail, {"retry-after": "5"})
        return
    # RFC 6750: a challenge on every 401, with error="invalid_token" when a token was sent.
    challenge = {"www-authenticate": "Bearer" if token is None else 'Bearer error="invalid_token"'}
    await _send_json(send, exc.status, exc.code, exc.message, challenge if exc.status == 401 else {})


async def _send_json(send: Send, status: int, code: str, detail: str, headers: dict[str, str]) -> None:
    body = json.dumps({"detail": detail, "code": code}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
