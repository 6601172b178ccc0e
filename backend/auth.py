"""Optional bearer-token check, for hosting the backend somewhere other than a private Cloud Run service.

On Cloud Run, deploy the backend without ``--allow-unauthenticated``: the platform then refuses every
call that does not carry a Google-signed ID token of an identity with ``roles/run.invoker``, before it
reaches this process. Elsewhere (a VM, GKE, another cloud), set ``AUTH_AUDIENCE`` and the app does the
same check itself: every route except ``/health`` and ``/ready`` needs ``Authorization: Bearer <token>``
where the token is a Google-signed ID token whose ``aud`` is ``AUTH_AUDIENCE``.

An audience check alone admits any Google identity that asks Google for a token with that audience,
so set ``AUTH_ALLOWED_EMAILS`` too (the service accounts of your callers) unless anyone may call.

The check is google-auth's, step by step as ``google.oauth2.id_token.verify_oauth2_token`` does it: the
certificates at ``AUTH_CERTS_URL`` (Google's by default), the key id from the token's header
(``google.auth.jwt.decode_header``), ``google.auth.jwt.decode`` (signature, ``iat``/``exp``, audience), the
issuer: ``iss`` must be ``accounts.google.com`` or ``https://accounts.google.com`` (a token another
issuer signed with a key published at ``AUTH_CERTS_URL`` would otherwise pass). A refusal says why from
the token's claims (expired, not yet valid, another audience), never from google-auth's message text.

What the libraries do not do is keep the certificates: ``CertificateCache`` keeps them for as long as their
``Cache-Control: max-age`` says (bounded), keeps serving them when a refresh fails, and fetches them again
early only when a token names a key id that is not among them (Google rotates its keys), at most once per
``REFRESH_MIN_INTERVAL_S``. Verification runs in a worker thread: it may fetch certificates (blocking
I/O), and RSA is CPU work. ``backend.middleware.IdTokenAuthMiddleware`` applies it to every request.
"""

from __future__ import annotations

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
from google.auth import jwt, transport
from starlette.types import Scope

logger = logging.getLogger(__name__)

# The issuers of Google-signed ID tokens (google.oauth2.id_token.verify_oauth2_token accepts these two).
GOOGLE_ISSUERS: Final = frozenset({"accounts.google.com", "https://accounts.google.com"})
# Google signs ID tokens with RS256, the one algorithm its PEM certificates verify.
GOOGLE_ALGORITHM: Final = "RS256"
CERTS_TTL_S: Final = 300.0  # when the certificate endpoint sends no max-age
CERTS_MAX_TTL_S: Final = 6 * 3600.0
REFRESH_MIN_INTERVAL_S: Final = 30.0
FAILURE_BACKOFF_S: Final = 5.0
FETCH_TIMEOUT_S: Final = 10.0
CLOCK_SKEW_S: Final = 10
MAX_TOKEN_CHARS: Final = 8192  # Google ID tokens are about 1 kB
_MAX_AGE = re.compile(r"max-age=(\d+)")


class InvalidToken(Exception):
    """The request's credentials are missing or not acceptable (401)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ForbiddenIdentity(InvalidToken):
    """A valid token of a caller not in ``AUTH_ALLOWED_EMAILS`` (403)."""


class AuthUnavailable(Exception):
    """The signing certificates cannot be fetched, so no token can be checked now (503)."""


@dataclass
class _Cached:
    certificates: dict[str, str]
    fetched: float
    expires: float


class CertificateCache:
    """The token signing certificates at each URL, fetched with google-auth's transport, kept until they expire.

    When a refresh fails, the previous certificates keep being used (Google's keys overlap by days), and a
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

    def get(self, url: str) -> dict[str, str]:
        """Key id -> PEM certificate, from the cache while fresh; ``AuthUnavailable`` if there are none."""
        with self._lock:
            now = self._clock()
            cached = self._cache.get(url)
            if cached is not None and now < cached.expires:
                return cached.certificates
            if cached is None and now < self._failed_until.get(url, 0.0):
                raise AuthUnavailable(f"fetching {url} failed less than {FAILURE_BACKOFF_S:.0f}s ago")
            try:
                certificates, max_age = self._fetch(url)
            except AuthUnavailable as exc:
                logger.warning("fetching token certificates failed", extra={"url": url, "error": str(exc)})
                if cached is not None:
                    cached.expires = now + REFRESH_MIN_INTERVAL_S
                    return cached.certificates
                self._failed_until[url] = now + FAILURE_BACKOFF_S
                raise
            self._cache[url] = _Cached(certificates, now, now + max_age)
            self._failed_until.pop(url, None)
            return certificates

    def _fetch(self, url: str) -> tuple[dict[str, str], float]:
        """What ``google.oauth2.id_token`` fetches (a JSON object of key id to PEM), and for how long to keep it."""
        self.fetches += 1
        try:
            response = self._inner(url, method="GET", timeout=FETCH_TIMEOUT_S)
        except google_exceptions.TransportError as exc:
            raise AuthUnavailable(str(exc)) from None
        if response.status != 200:
            raise AuthUnavailable(f"HTTP {response.status}")
        try:
            certificates = json.loads(response.data)
        except ValueError:  # the endpoint answered 200 with something else (an HTML error page, say)
            raise AuthUnavailable(f"the certificates at {url} are not JSON") from None
        if not isinstance(certificates, dict) or "keys" in certificates:
            # A JWK set ({"keys": [...]}) is what Google's v3 endpoint serves: AUTH_CERTS_URL must be the PEM one.
            logger.error("AUTH_CERTS_URL does not serve PEM certificates by key id", extra={"url": url})
            raise AuthUnavailable(f"the certificates at {url} are not PEM certificates by key id")
        return certificates, _ttl(response.headers)

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
        certs_url: str,
        allowed_emails: Iterable[str] = (),
        certificates: CertificateCache | None = None,
    ) -> None:
        self.audience = audience
        self.certs_url = certs_url
        self.allowed_emails = frozenset(email.lower() for email in allowed_emails)
        self.certificates = certificates or CertificateCache()

    def verify(self, token: str) -> Mapping[str, Any]:
        """The token's claims, or ``InvalidToken`` (401) / ``AuthUnavailable`` (503). Blocking: call in a thread."""
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("invalid_token", "The bearer token is too long to be a Google ID token.")
        claims = self._verify_signed(token)
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
                raise ForbiddenIdentity("forbidden_identity", "This identity may not call the service.")
        return claims

    def _verify_signed(self, token: str) -> Mapping[str, Any]:
        """The claims of a token Google signed, unexpired, for our audience (what ``verify_token`` checks)."""
        certificates = self.certificates.get(self.certs_url)
        try:
            header = jwt.decode_header(token)  # type: ignore[no-untyped-call]
        except Exception:  # malformed tokens fail in many ways inside google-auth: all are a 401
            raise _not_a_token() from None
        if header.get("alg") != GOOGLE_ALGORITHM:  # "none", HS256 keyed with a certificate, ...
            raise _not_a_token()
        key_id = header.get("kid")
        # A key id we do not know: Google may have rotated its keys since we fetched them.
        if isinstance(key_id, str) and key_id not in certificates and self.certificates.expire(self.certs_url):
            certificates = self.certificates.get(self.certs_url)
        try:
            claims: Mapping[str, Any] = jwt.decode(  # type: ignore[no-untyped-call]
                token, certs=certificates, audience=self.audience, clock_skew_in_seconds=CLOCK_SKEW_S
            )
        except google_exceptions.InvalidValue:
            # With an RS256 header and RSA certificates, raised only once the signature checked out: the
            # token's times or audience are wrong, and its (now trusted) claims say which.
            raise self._refusal(jwt.decode(token, verify=False)) from None  # type: ignore[no-untyped-call]
        except Exception:  # a bad signature, an unknown key id, a missing claim: all are a 401
            raise _not_a_token() from None
        return claims

    def _refusal(self, claims: Mapping[str, Any]) -> InvalidToken:
        """Why google-auth refused a validly signed token, checked in its order: ``iat``, ``exp``, ``aud``."""
        now = time.time()
        issued, expires = claims.get("iat"), claims.get("exp")
        if isinstance(issued, int | float) and now < issued - CLOCK_SKEW_S:
            return InvalidToken("invalid_token", "The token is not valid yet (check the caller's clock).")
        if isinstance(expires, int | float) and expires + CLOCK_SKEW_S < now:
            return InvalidToken("token_expired", "The token has expired. Fetch a new ID token and retry.")
        if claims.get("aud") != self.audience:
            return InvalidToken("wrong_audience", "The token was issued for another audience (see AUTH_AUDIENCE).")
        return _not_a_token()


def _not_a_token() -> InvalidToken:
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
