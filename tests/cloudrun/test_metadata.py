"""The metadata server stand-in, asked by Google's own libraries as they ask Cloud Run's (in this process)."""

from __future__ import annotations

import time

import google.auth
import google.auth.transport.requests
import httpx
import pytest

from backend.auth import GoogleIdTokenVerifier, InvalidToken
from backend.errors import answer_for
from frontend.auth import IdentityTokens, token_claims
from frontend.discovery import MetadataServer, MetadataUnreachable
from tests.cloudrun.metadata import MetadataState, point_google_auth_at
from tests.helpers.fakes import FakeServer
from tests.helpers.tokens import CertServer

AUDIENCE = "http://127.0.0.1:8080"


def mint(audience: str) -> str:
    """An identity token as the frontend gets one: google-auth's ID-token credentials (fresh ones each time)."""
    token = IdentityTokens("id_token").token(audience)
    assert token is not None
    return token


@pytest.fixture(autouse=True)
def on_cloud_run(monkeypatch: pytest.MonkeyPatch, metadata: FakeServer) -> None:
    monkeypatch.setenv("K_SERVICE", "classifier-frontend")
    point_google_auth_at(monkeypatch, metadata)


def test_it_answers_like_cloud_runs(metadata: FakeServer, metadata_state: MetadataState) -> None:
    v1 = f"{metadata.url}/computeMetadata/v1"
    flavor = {"Metadata-Flavor": "Google"}
    ping = httpx.get(f"{metadata.url}/")
    assert (ping.status_code, ping.headers["metadata-flavor"]) == (200, "Google")
    refused = httpx.get(f"{v1}/project/project-id")
    assert (refused.status_code, refused.headers["metadata-flavor"]) == (403, "Google")
    assert httpx.get(f"{v1}/project/project-id", headers={**flavor, "X-Forwarded-For": "1.2.3.4"}).status_code == 403
    assert httpx.get(f"{v1}/project/project-id", headers=flavor).text == "example-project"
    assert httpx.get(f"{v1}/project/numeric-project-id", headers=flavor).text == "123456789012"
    assert httpx.get(f"{v1}/instance/region", headers=flavor).text == "projects/123456789012/regions/europe-west1"
    email = httpx.get(f"{v1}/instance/service-accounts/default/email", headers=flavor)
    assert (email.text, email.headers["content-type"]) == (metadata_state.email, "application/text")
    assert httpx.get(f"{v1}/instance/service-accounts/default/identity", headers=flavor).status_code == 400
    token = httpx.get(f"{v1}/instance/service-accounts/default/token", headers=flavor).json()
    assert token["token_type"] == "Bearer"
    assert token["access_token"] in metadata_state.access_tokens


def test_google_auths_identity_tokens_pass_the_backends_check(
    cert_server: CertServer, metadata_state: MetadataState
) -> None:
    """``fetch_id_token_credentials`` (what the frontend uses) gets a token the backend's verifier accepts."""
    token = mint(AUDIENCE)
    verifier = GoogleIdTokenVerifier(AUDIENCE, cert_server.url, allowed_emails=[metadata_state.email])
    claims = verifier.verify(token)
    assert (claims["aud"], claims["email"], claims["iss"]) == (
        AUDIENCE,
        metadata_state.email,
        "https://accounts.google.com",
    )
    assert claims["exp"] - time.time() > 3000
    assert metadata_state.audiences == [AUDIENCE]


def test_it_can_mint_for_another_audience_or_be_another_account(
    cert_server: CertServer, metadata_state: MetadataState
) -> None:
    verifier = GoogleIdTokenVerifier(AUDIENCE, cert_server.url, allowed_emails=[metadata_state.email])
    metadata_state.audience_override = "https://another-service-x2b4qk7fva-ew.a.run.app"
    wrong_audience = mint(AUDIENCE)
    assert token_claims(wrong_audience)["aud"] == metadata_state.audience_override
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(wrong_audience)
    assert caught.value.code == "wrong_audience"

    metadata_state.audience_override = None
    metadata_state.email = "someone-else@example-project.iam.gserviceaccount.com"
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(mint(AUDIENCE))
    assert (caught.value.code, answer_for(caught.value).status) == ("forbidden_identity", 403)


def test_application_default_credentials_come_from_it(metadata_state: MetadataState) -> None:
    credentials, project = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    assert project == "example-project"
    credentials.refresh(google.auth.transport.requests.Request())  # type: ignore[no-untyped-call]
    assert credentials.token in metadata_state.access_tokens
    assert getattr(credentials, "service_account_email", None) == metadata_state.email


def test_the_frontend_knows_when_it_is_down(metadata: FakeServer) -> None:
    server = MetadataServer()
    assert server.service_account_email() == "classifier-frontend@example-project.iam.gserviceaccount.com"
    server.check()
    metadata.stop()
    try:
        started = time.monotonic()
        with pytest.raises(MetadataUnreachable) as caught:
            MetadataServer().check()
        assert time.monotonic() - started < 1
        assert "the connection was refused" in str(caught.value)
    finally:
        metadata.start()
