"""Identity tokens for a private Cloud Run backend, cached until shortly before they expire.

A backend deployed without ``--allow-unauthenticated`` only answers requests that carry a Google-signed
identity token whose audience is the backend's URL, minted for an account holding ``roles/run.invoker``.
On Cloud Run, ``google.oauth2.id_token.fetch_id_token`` gets one from the metadata server for the
frontend's own service account; elsewhere it needs a service-account key (GOOGLE_APPLICATION_CREDENTIALS).
On Cloud Run the metadata server is asked first with a short timeout (``frontend.discovery.MetadataServer``):
when it is unreachable that is said at once (``MetadataUnreachable``), whatever BACKEND_AUTH is, instead of
google-auth's retries ending in "no credentials".
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable

from frontend import discovery
from frontend.config import AuthMode
from frontend.discovery import MetadataUnreachable, on_cloud_run

logger = logging.getLogger(__name__)

TokenMinter = Callable[[str], str]
"""Mints an identity token for an audience: the boundary to Google's credentials (tests replace it)."""

REFRESH_MARGIN_S = 300.0  # a fresh token is fetched this long before the cached one expires
FALLBACK_LIFETIME_S = 600.0  # how long to keep a token whose expiry cannot be read
FAILURE_BACKOFF_S = 60.0  # in auto mode, how long to send no token after minting one failed
FAILURE_REUSE_S = 5.0  # in id_token mode, how long a minting failure is reported again before minting is retried


class AuthError(Exception):
    """BACKEND_AUTH=id_token, but no identity token could be minted; the message says how to fix it."""


def fetch_google_id_token(audience: str) -> str:
    """Google's own minting: the metadata server on Cloud Run, or a service-account key file elsewhere."""
    import os

    import google.auth.transport.requests
    import google.oauth2.id_token

    if on_cloud_run() and not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        discovery.METADATA.check()  # MetadataUnreachable within a couple of seconds, not google-auth's retries
    token: str = google.oauth2.id_token.fetch_id_token(  # type: ignore[no-untyped-call]
        google.auth.transport.requests.Request(), audience
    )
    return token


def token_claims(token: str) -> dict[str, object]:
    """The claims of a JWT, read without verifying it (the frontend minted it); {} if they cannot be read."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, TypeError, ValueError, RecursionError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim (Unix time) of a JWT, read without verifying it; None if it cannot be read."""
    exp = token_claims(token).get("exp")
    return float(exp) if isinstance(exp, int | float) else None


class IdentityTokens:
    """Authorization headers for backend requests, according to BACKEND_AUTH.

    ``none``: never a token. ``id_token``: always one (failing loudly if none can be minted).
    ``auto``: a token for https URLs when the credentials can mint one, otherwise none; a local
    ``http://127.0.0.1`` backend never gets one.
    """

    def __init__(
        self,
        mode: AuthMode,
        minter: TokenMinter = fetch_google_id_token,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.mode = mode
        self._minter = minter
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}  # audience -> (token, refresh at)
        self._failed_until: dict[str, float] = {}  # audience -> time before which auto mode does not retry
        self._failures: dict[str, tuple[float, Exception]] = {}  # audience -> (until, error raised again meanwhile)

    def headers(self, url: str, audience: str | None = None) -> dict[str, str]:
        """Headers to send to ``url``: ``{"Authorization": "Bearer ..."}`` or nothing."""
        if self.mode == "none" or (self.mode == "auto" and not url.startswith("https://")):
            return {}
        token = self.token(audience or url)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def token(self, audience: str) -> str | None:
        with self._lock:  # one mint at a time: concurrent image requests share the token
            now = self._clock()
            cached = self._tokens.get(audience)
            if cached is not None and now < cached[1]:
                return cached[0]
            failure = self._failures.get(audience)
            if failure is not None and now < failure[0]:
                raise failure[1]  # reported again: a page run's requests do not each wait for the same failure
            if self.mode == "auto" and now < self._failed_until.get(audience, 0.0):
                return None
            try:
                token = self._minter(audience)
            except MetadataUnreachable as exc:
                # On Cloud Run without a metadata server nothing works; "auto" must not hide that either.
                self._failures[audience] = (now + FAILURE_REUSE_S, exc)
                raise
            except Exception as exc:  # google.auth raises several unrelated types; all mean "no token"
                self._minting_failed(audience, now, exc)
                return None
            expiry = token_expiry(token)
            refresh_at = now + FALLBACK_LIFETIME_S if expiry is None else expiry - REFRESH_MARGIN_S
            self._tokens[audience] = (token, refresh_at)
            self._failed_until.pop(audience, None)
            self._failures.pop(audience, None)
            logger.info("minted an identity token", extra={"audience": audience, "expires": expiry})
            return token

    def claims(self, audience: str) -> dict[str, object]:
        """The claims of the token last minted for ``audience`` (unverified), to explain a refusal; {} if none."""
        with self._lock:
            cached = self._tokens.get(audience)
        return token_claims(cached[0]) if cached is not None else {}

    def _minting_failed(self, audience: str, now: float, exc: Exception) -> None:
        """Raise AuthError in id_token mode; in auto mode, send no token for a while."""
        reason = f"{type(exc).__name__}: {exc}"
        if self.mode == "id_token":
            logger.error("could not mint an identity token", extra={"audience": audience, "reason": reason})
            error = AuthError(
                f"BACKEND_AUTH=id_token, but no identity token for {audience} could be minted ({reason}). "
                "On Cloud Run this uses the service's own service account; elsewhere set "
                "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or set BACKEND_AUTH=none "
                "for a public backend."
            )
            self._failures[audience] = (now + FAILURE_REUSE_S, error)
            raise error from exc
        self._failed_until[audience] = now + FAILURE_BACKOFF_S
        logger.info("sending requests without an identity token", extra={"audience": audience, "reason": reason})
