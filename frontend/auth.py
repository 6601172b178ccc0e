"""Identity tokens for a private Cloud Run backend: google-auth's ID-token credentials, attached to every
backend request by ``IdentityTokenAuth`` (a ``requests.auth.AuthBase`` on the client's session).

A backend deployed without ``--allow-unauthenticated`` only answers requests that carry a Google-signed
identity token whose audience is the backend's URL, minted for an account holding ``roles/run.invoker``.
``google.oauth2.id_token.fetch_id_token_credentials`` gives the credentials that mint one: on Cloud Run the
metadata server's, for the frontend's own service account; elsewhere a service-account key
(GOOGLE_APPLICATION_CREDENTIALS). Each audience's credentials are kept and refreshed when google-auth says
their token is no longer ``valid`` (shortly before it expires).

On Cloud Run the metadata server is asked first with a short timeout (``frontend.discovery.MetadataServer``):
when it is unreachable that is said at once (``MetadataUnreachable``), whatever BACKEND_AUTH is, instead of
google-auth's retries ending in "no credentials".
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import google.auth.jwt
import google.auth.transport.requests
import google.oauth2.id_token
import requests

from frontend import discovery
from frontend.config import AuthMode
from frontend.discovery import MetadataUnreachable, on_cloud_run

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

__all__ = [
    "FAILURE_BACKOFF_S",
    "FAILURE_REUSE_S",
    "AuthError",
    "CredentialsFactory",
    "IdentityTokenAuth",
    "IdentityTokens",
    "id_token_credentials",
    "refusal_advice",
    "token_claims",
]

logger = logging.getLogger(__name__)

CredentialsFactory = Callable[[str], "Credentials"]
"""Google's ID-token credentials for an audience: the boundary to Google's credentials (tests replace it)."""

FAILURE_BACKOFF_S = 60.0  # in auto mode, how long to send no token after minting one failed
FAILURE_REUSE_S = 5.0  # in id_token mode, how long a minting failure is reported again before minting is retried


class AuthError(Exception):
    """BACKEND_AUTH=id_token, but no identity token could be minted; the message says how to fix it."""


def _check_metadata_server() -> None:
    """On Cloud Run (without a key file), MetadataUnreachable within a couple of seconds if the metadata server
    does not answer, rather than google-auth's retries (3 s three times) ending in "no credentials"."""
    if on_cloud_run() and not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        discovery.METADATA.check()


def id_token_credentials(audience: str) -> Credentials:
    """Google's ID-token credentials for ``audience``: a service-account key file, or the metadata server."""
    credentials: Credentials = google.oauth2.id_token.fetch_id_token_credentials(  # type: ignore[no-untyped-call]
        audience, request=google.auth.transport.requests.Request()
    )
    return credentials


def token_claims(token: str) -> dict[str, object]:
    """The claims of a JWT, read without verifying it (the frontend minted it); {} if they cannot be read."""
    try:
        claims = google.auth.jwt.decode(token, verify=False)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, RecursionError):
        return {}
    return claims if isinstance(claims, dict) else {}


class IdentityTokens:
    """Identity tokens for backend requests, according to BACKEND_AUTH, one set of credentials per audience.

    ``none``: never a token. ``id_token``: always one (failing loudly if none can be minted).
    ``auto``: a token for https URLs when the credentials can mint one, otherwise none; a local
    ``http://127.0.0.1`` backend never gets one.

    google-auth's credentials say when their token needs refreshing (``valid``) and mint it (``refresh``).
    What they lack, and this class adds: one refresh at a time for the requests of a page run (they have no
    lock), a failure remembered for a while (auto mode sends no token for FAILURE_BACKOFF_S; id_token mode and
    an unreachable metadata server report the same error for FAILURE_REUSE_S), so a page run's requests do not
    each wait for the same failure, and the metadata server's short check (see ``_check_metadata_server``).
    """

    def __init__(
        self,
        mode: AuthMode,
        credentials_for: CredentialsFactory = id_token_credentials,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mode = mode
        self._credentials_for = credentials_for
        self._clock = clock
        self._lock = threading.Lock()
        self._credentials: dict[str, Credentials] = {}  # audience -> its credentials (holding the last token)
        # audience -> (until, the error raised again meanwhile; None: auto mode sends no token meanwhile)
        self._failures: dict[str, tuple[float, Exception | None]] = {}
        self._request = google.auth.transport.requests.Request()  # google-auth's HTTP, for refreshing

    def headers(self, url: str, audience: str | None = None) -> dict[str, str]:
        """Headers to send to ``url``: ``{"Authorization": "Bearer ..."}`` or nothing."""
        if self.mode == "none" or (self.mode == "auto" and not url.startswith("https://")):
            return {}
        token = self.token(audience or url)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def token(self, audience: str) -> str | None:
        with self._lock:  # one refresh at a time: concurrent image requests share the token
            credentials = self._credentials.get(audience)
            if credentials is not None and credentials.valid:
                return _token(credentials)
            now = self._clock()
            failure = self._failures.get(audience)
            if failure is not None and now < failure[0]:
                if failure[1] is None:
                    return None  # auto mode, backing off
                raise failure[1]  # reported again: a page run's requests do not each wait for the same failure
            try:
                _check_metadata_server()
                if credentials is None:
                    credentials = self._credentials[audience] = self._credentials_for(audience)
                credentials.refresh(self._request)  # type: ignore[no-untyped-call]
            except MetadataUnreachable as exc:
                # On Cloud Run without a metadata server nothing works; "auto" must not hide that either.
                self._failures[audience] = (now + FAILURE_REUSE_S, exc)
                raise
            except Exception as exc:  # google.auth raises several unrelated types; all mean "no token"
                self._minting_failed(audience, now, exc)
                return None
            self._failures.pop(audience, None)
            expiry = credentials.expiry.replace(tzinfo=UTC).timestamp() if credentials.expiry else None
            logger.info("minted an identity token", extra={"audience": audience, "expires": expiry})
            return _token(credentials)

    def claims(self, audience: str) -> dict[str, object]:
        """The claims of the token last minted for ``audience`` (unverified), to explain a refusal; {} if none."""
        with self._lock:
            credentials = self._credentials.get(audience)
            token = _token(credentials) if credentials is not None else None
        return token_claims(token) if token else {}

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
        self._failures[audience] = (now + FAILURE_BACKOFF_S, None)
        logger.info("sending requests without an identity token", extra={"audience": audience, "reason": reason})


def _token(credentials: Credentials) -> str | None:
    token = credentials.token
    return token if isinstance(token, str) else None


class IdentityTokenAuth(requests.auth.AuthBase):
    """Adds the identity token BACKEND_AUTH calls for to each request of the session it is set on.

    The token's audience is BACKEND_AUDIENCE if set, else BACKEND_URL, else the URL's origin (a Cloud Run
    service's URL, as the Admin API gives it). Raises AuthError or MetadataUnreachable when the request
    must not go without a token; nothing is sent then.
    """

    def __init__(self, tokens: IdentityTokens, audience: str | None = None, backend_url: str | None = None) -> None:
        self.tokens = tokens
        self.audience = audience
        self.backend_url = backend_url

    def audience_for(self, url: str) -> str:
        if self.audience:
            return self.audience
        if self.backend_url and url.startswith(self.backend_url):
            return self.backend_url
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        url = request.url or ""
        request.headers.update(self.tokens.headers(url, self.audience_for(url)))
        return request


def refusal_advice(
    code: str | None,
    audience: str | None,
    claims: Mapping[str, object],
    email: str | None = None,
    mode: AuthMode = "auto",
) -> str:
    """What to grant or set when the backend refuses the frontend (401/403): what was wrong with the token the
    frontend sent, when the backend's ``code`` says, and the one remedy for that cause. ``mode`` is BACKEND_AUTH."""
    who = f"the frontend's service account ({_short(email)})" if email else "the frontend's service account"
    invoker = (
        f"If it is a private Cloud Run service, give {who} roles/run.invoker on it (a backend that checks "
        "tokens itself must list it in AUTH_ALLOWED_EMAILS)."
    )
    if code == "missing_token":
        return (
            "The frontend sent no identity token"
            + {
                "none": " (BACKEND_AUTH=none): set BACKEND_AUTH=id_token (or auto).",
                "auto": ": with BACKEND_AUTH=auto it sends one to https URLs only, when its credentials can mint one. "
                "Set BACKEND_AUTH=id_token to always send one (elsewhere than Cloud Run, with "
                "GOOGLE_APPLICATION_CREDENTIALS naming a service-account key).",
                "id_token": ". " + invoker,
            }[mode]
        )
    if code == "wrong_audience" and audience:
        token_audience = claims.get("aud")
        if isinstance(token_audience, str) and token_audience and token_audience != audience:
            got = f"is for {_short(token_audience)}, although the frontend asked for one for {audience}"
        else:
            got = f"is for {audience}"
        return (
            f"The identity token the frontend sent {got}; the backend expects another audience. Set "
            "BACKEND_AUDIENCE to the audience the backend checks (its AUTH_AUDIENCE; on Cloud Run, the "
            "service's URL)."
        )
    return {
        "wrong_issuer": "The identity token the frontend sent was not issued by Google (accounts.google.com): "
        "the frontend's credentials must be a Google service account (the metadata server on Cloud Run, or "
        "GOOGLE_APPLICATION_CREDENTIALS naming a service-account key).",
        "forbidden_identity": f"The backend does not accept {who}. {invoker}",
    }.get(code or "", invoker + " Set BACKEND_AUDIENCE if the backend expects a token for another audience.")


def _short(text: str, limit: int = 200) -> str:
    """At most ``limit`` characters of something the backend or a token said."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
