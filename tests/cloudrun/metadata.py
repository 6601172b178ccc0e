"""A stand-in for the metadata server of a Cloud Run instance, on 127.0.0.1.

It answers what google-auth and the frontend ask it, the way Cloud Run's does: every answer carries
``Metadata-Flavor: Google``, and every ``/computeMetadata/v1/...`` request must carry it too (403 otherwise,
and for requests with ``X-Forwarded-For``); ``GET /`` is google-auth's "is there a metadata server?" ping.
Text values are ``application/text``, the service account's record and access tokens JSON. Identity tokens
(``.../identity?audience=A&format=full``) are JWTs signed RS256 with a local key (``tests.helpers.tokens``),
whose certificate ``CertServer`` serves as Google's certificate endpoint serves Google's.

Point google-auth at it with ``GCE_METADATA_HOST`` (metadata requests) and ``GCE_METADATA_IP`` (the ping),
both ``127.0.0.1:PORT``. ``MetadataState`` can be changed while it runs, to make it misbehave: mint tokens
for another audience, act as another service account; ``FakeServer.stop()`` takes it down (its port closed:
connections refused) and ``start()`` brings it back on the same port.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.helpers.fakes import FakeServer, Reply, Request
from tests.helpers.tokens import ISSUER, SigningKey, claims

V1 = "/computeMetadata/v1/"
FLAVOR = {"Metadata-Flavor": "Google", "Server": "Metadata Server for Serverless"}
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


@dataclass
class MetadataState:
    """What the metadata server says; tests change the fields while it runs."""

    key: SigningKey  # signs identity tokens; its certificate is what the backend's AUTH_CERTS_URL serves
    project_id: str = "example-project"
    project_number: str = "123456789012"
    region: str = "europe-west1"
    email: str = "classifier-frontend@example-project.iam.gserviceaccount.com"  # the instance's service account
    audience_override: str | None = None  # mint identity tokens for this audience, whatever was asked
    issuer: str = ISSUER
    token_lifetime_s: int = 3600
    delay_s: float = 0.0  # before every answer (a metadata server too slow to be of use)
    access_tokens: set[str] = field(default_factory=set)  # every access token handed out (the Admin API checks)
    audiences: list[str] = field(default_factory=list)  # every audience an identity token was asked for

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    @property
    def unique_id(self) -> str:
        """The service account's numeric id (``sub`` and ``azp`` of its identity tokens)."""
        return str(int.from_bytes(self.email.encode()[:8], "big") % 10**21).rjust(21, "1")

    def identity_token(self, audience: str) -> str:
        with self._lock:
            self.audiences.append(audience)
        now = int(time.time())
        token_claims = claims(
            audience=self.audience_override or audience,
            email=self.email,
            issued=now,
            lifetime_s=self.token_lifetime_s,
            iss=self.issuer,
            sub=self.unique_id,
            azp=self.unique_id,
        )
        return self.key.sign(token_claims)

    def access_token(self) -> dict[str, Any]:
        token = "ya29.local-" + secrets.token_urlsafe(32)
        with self._lock:
            self.access_tokens.add(token)
        return {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}


def _text(value: str) -> Reply:
    return Reply(200, value.encode(), {**FLAVOR, "Content-Type": "application/text"})


def _json(value: Any) -> Reply:
    return Reply(200, value, {**FLAVOR, "Content-Type": "application/json"})


def _error(status: int, message: str) -> Reply:
    return Reply(status, message.encode(), {**FLAVOR, "Content-Type": "text/plain; charset=utf-8"})


def metadata_server(state: MetadataState, port: int | None = None) -> FakeServer:
    def handle(request: Request) -> Reply:
        reply = answer(request)
        reply.delay_s = state.delay_s
        return reply

    def answer(request: Request) -> Reply:
        url = urlsplit(request.path)
        query = {name: values[-1] for name, values in parse_qs(url.query).items()}
        headers = {name.lower(): value for name, value in request.headers.items()}
        if url.path == "/":  # google-auth's ping (at GCE_METADATA_IP)
            return _text("computeMetadata/\n")
        if not url.path.startswith(V1):
            return _error(404, "Not Found")
        if headers.get("metadata-flavor") != "Google" or "x-forwarded-for" in headers:
            return _error(403, "Missing Metadata-Flavor:Google header.")
        path = url.path[len(V1) :]
        account = "instance/service-accounts/default/"
        if path.startswith(f"instance/service-accounts/{state.email}/"):  # by email, as well as "default"
            path = account + path.removeprefix(f"instance/service-accounts/{state.email}/")
        text = {
            "project/project-id": state.project_id,
            "project/numeric-project-id": state.project_number,
            "instance/region": f"projects/{state.project_number}/regions/{state.region}",
            "instance/zone": f"projects/{state.project_number}/zones/{state.region}-1",
            "instance/id": "00bf4bf02da4d3b8c2bdd5fc4dfc1a6e8ad3e4cf3d9b1f1e1e0ba2c7c1fbea19e1",
            "universe/universe-domain": "googleapis.com",
            account + "email": state.email,
            account + "aliases": "default",
            account + "scopes": "\n".join(SCOPES),
        }
        if path in text:
            return _text(text[path])
        if path == account and query.get("recursive") == "true":
            return _json({"aliases": ["default"], "email": state.email, "scopes": SCOPES})
        if path == account + "token":
            return _json(state.access_token())
        if path == account + "identity":
            audience = query.get("audience", "")
            if not audience:
                return _error(400, "non-empty audience parameter required")
            return _text(state.identity_token(audience))
        return _error(404, "Not Found")

    return FakeServer(handle, port)


def metadata_env(server: FakeServer) -> dict[str, str]:
    """The environment that sends google-auth (and the frontend) to ``server`` instead of 169.254.169.254."""
    host = f"127.0.0.1:{server.port}"
    return {"GCE_METADATA_HOST": host, "GCE_METADATA_IP": host}


def point_google_auth_at(monkeypatch: pytest.MonkeyPatch, server: FakeServer) -> None:
    """In this process, send google-auth (and the frontend) to ``server`` as if on Cloud Run.

    google-auth reads GCE_METADATA_HOST and NO_GCE_CHECK once, when it is first imported: those are
    patched in its module as well as set in the environment (GCE_METADATA_IP is read at every ping).
    """
    from google.auth.compute_engine import _metadata

    env = metadata_env(server)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("NO_GCE_CHECK", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setattr(_metadata, "_GCE_METADATA_HOST", env["GCE_METADATA_HOST"])
    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", False)
