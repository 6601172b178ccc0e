"""Identity tokens for a private backend: when they are sent, how long they are kept, what failures say.

Google's credentials are replaced at the network boundary only: ``FakeCredentials`` is a google-auth
``Credentials`` (its ``valid`` is google-auth's own) whose ``refresh`` mints a token-shaped JWT instead of
asking Google; one test runs google-auth's service-account credentials against a fake token endpoint. The
tokens travel over real HTTP to a fake backend on 127.0.0.1, which records the Authorization header it receives.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from urllib.parse import parse_qs

import google.auth.credentials
import google.auth.jwt
import pytest
from google.auth.exceptions import DefaultCredentialsError, RefreshError

from frontend.auth import FAILURE_BACKOFF_S, FAILURE_REUSE_S, AuthError, IdentityTokenAuth, IdentityTokens
from frontend.backend_client import Backend, BackendError, ImageInput
from frontend.config import AuthMode, FrontendSettings
from tests.helpers.fakes import BackendBehaviour, FakeServer, Reply, Request, running
from tests.helpers.tokens import SigningKey

IMAGE = ImageInput("cat.jpg", b"\xff\xd8\xff fake jpeg", "image/jpeg")
PRIVATE = "https://classifier-backend-x2b4qk7fva-ew.a.run.app"
LIFETIME = dt.timedelta(hours=1)  # Google's identity tokens last an hour


def jwt(exp: float, audience: str = PRIVATE) -> str:
    """A token shaped like Google's (header.claims.signature); the frontend only reads its claims."""

    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part({'aud': audience, 'exp': exp})}.c2lnbmF0dXJl"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)  # google-auth's expiry: naive UTC


class FakeCredentials(google.auth.credentials.Credentials):
    """Google's ID-token credentials for one audience, with ``refresh`` minting locally (or failing)."""

    def __init__(self, google: Google, audience: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.google = google
        self.audience = audience

    def refresh(self, request: object) -> None:
        self.google.refreshes.append(self.audience)
        if self.google.fail is not None:
            raise self.google.fail
        self.expiry = utcnow() + LIFETIME
        self.token = jwt((self.expiry - dt.datetime(1970, 1, 1)).total_seconds(), self.audience)


class Google:
    """Stands in for google.oauth2.id_token.fetch_id_token_credentials: counts credentials and refreshes."""

    def __init__(self, fail: Exception | None = None, fail_to_create: Exception | None = None) -> None:
        self.fail = fail
        self.fail_to_create = fail_to_create
        self.created: list[str] = []
        self.refreshes: list[str] = []
        self.credentials: dict[str, FakeCredentials] = {}

    def __call__(self, audience: str) -> FakeCredentials:
        self.created.append(audience)
        if self.fail_to_create is not None:
            raise self.fail_to_create
        self.credentials[audience] = FakeCredentials(self, audience)
        return self.credentials[audience]


class Clock:
    """The clock failures are remembered by."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_token_is_reused_while_google_auth_calls_it_valid(clock: Clock) -> None:
    google = Google()
    tokens = IdentityTokens("auto", google, clock)

    first = tokens.headers(PRIVATE)
    assert tokens.headers(PRIVATE) == first
    assert (google.created, google.refreshes) == ([PRIVATE], [PRIVATE])  # one token, shared

    credentials = google.credentials[PRIVATE]
    credentials.expiry = utcnow() + dt.timedelta(minutes=1)  # within google-auth's refresh margin
    assert not credentials.valid
    second = tokens.headers(PRIVATE)
    assert second != first
    assert second["Authorization"] == f"Bearer {credentials.token}"
    assert (google.created, google.refreshes) == ([PRIVATE], [PRIVATE, PRIVATE])  # refreshed, not re-created


@pytest.mark.parametrize(
    ("mode", "url", "sends"),
    [
        ("none", PRIVATE, False),
        ("auto", "http://127.0.0.1:8000", False),  # a local backend never needs a token
        ("auto", PRIVATE, True),
        ("id_token", "http://127.0.0.1:8000", True),
        ("id_token", PRIVATE, True),
    ],
)
def test_when_a_token_is_sent(clock: Clock, mode: AuthMode, url: str, sends: bool) -> None:
    google = Google()

    headers = IdentityTokens(mode, google, clock).headers(url)

    assert ("Authorization" in headers) is sends
    assert google.refreshes == ([url] if sends else [])


@pytest.mark.parametrize("when", ["no credentials", "refresh fails"])
def test_auto_mode_goes_without_a_token_when_none_can_be_minted(clock: Clock, when: str) -> None:
    if when == "no credentials":
        google = Google(fail_to_create=DefaultCredentialsError("no service account"))  # type: ignore[no-untyped-call]
    else:
        google = Google(fail=RefreshError("no token"))  # type: ignore[no-untyped-call]
    tokens = IdentityTokens("auto", google, clock)

    assert tokens.headers(PRIVATE) == {}
    attempts = (len(google.created), len(google.refreshes))
    assert tokens.headers(PRIVATE) == {}
    assert (len(google.created), len(google.refreshes)) == attempts  # not retried on every request...
    clock.now += FAILURE_BACKOFF_S + 1
    google.fail = google.fail_to_create = None
    assert "Authorization" in tokens.headers(PRIVATE)  # ...but tried again after a while
    assert google.refreshes[-1] == PRIVATE


def test_id_token_mode_explains_a_minting_failure(clock: Clock) -> None:
    google = Google(fail=RefreshError("metadata server unreachable"))  # type: ignore[no-untyped-call]
    tokens = IdentityTokens("id_token", google, clock)

    with pytest.raises(AuthError, match="metadata server unreachable") as caught:
        tokens.headers(PRIVATE)
    assert "GOOGLE_APPLICATION_CREDENTIALS" in str(caught.value)
    assert "BACKEND_AUTH=none" in str(caught.value)
    with pytest.raises(AuthError) as again:
        tokens.headers(PRIVATE)
    assert again.value is caught.value  # reported again for a while, not minted again
    assert google.refreshes == [PRIVATE]
    clock.now += FAILURE_REUSE_S + 1
    google.fail = None
    assert "Authorization" in tokens.headers(PRIVATE)


def test_google_minting_without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real google.auth minting, with GOOGLE_APPLICATION_CREDENTIALS naming a missing file (fixture)."""
    assert IdentityTokens("auto").headers(PRIVATE) == {}
    with pytest.raises(AuthError, match="DefaultCredentialsError"):
        IdentityTokens("id_token").headers(PRIVATE)


def test_google_service_account_credentials_are_kept_until_google_auth_refreshes_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """google-auth's own credentials from a service-account key file (GOOGLE_APPLICATION_CREDENTIALS), minting
    from a token endpoint on 127.0.0.1: a token is reused while google-auth calls it valid, not after."""
    key = SigningKey.generate("frontend-key")
    lifetime = [dt.timedelta(minutes=1)]  # within google-auth's refresh margin: not valid for long

    def token_endpoint(request: Request) -> Reply:
        assertion = parse_qs(request.body.decode())["assertion"][0]  # signed with the key file's key
        audience = google.auth.jwt.decode(assertion, verify=False)["target_audience"]  # type: ignore[no-untyped-call]
        expiry = (utcnow() + lifetime[0] - dt.datetime(1970, 1, 1)).total_seconds()
        return Reply(200, {"id_token": jwt(expiry, audience)})

    with running(FakeServer(token_endpoint)) as endpoint:
        key_file = tmp_path / "frontend-key.json"
        key_file.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": "demo-project",
                    "private_key_id": key.kid,
                    "private_key": key.private_pem.decode(),
                    "client_email": "frontend@demo-project.iam.gserviceaccount.com",
                    "client_id": "1",
                    "token_uri": f"{endpoint.url}/token",
                }
            )
        )
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
        tokens = IdentityTokens("id_token")

        tokens.headers(PRIVATE)
        tokens.headers(PRIVATE)
        assert len(endpoint.requests) == 2  # a token about to expire is refreshed before it is sent

        lifetime[0] = LIFETIME
        first = tokens.headers(PRIVATE)
        assert tokens.headers(PRIVATE) == tokens.headers(PRIVATE) == first
        assert len(endpoint.requests) == 3  # an hour's token is reused
        assert tokens.claims(PRIVATE)["aud"] == PRIVATE


@pytest.mark.parametrize(
    ("backend_url", "audience", "url", "expected"),
    [
        (None, None, f"{PRIVATE}/predict?top_k=3", PRIVATE),  # a Cloud Run service's URL: the origin
        (
            "https://proxy.example/classifier",
            None,
            "https://proxy.example/classifier/predict",
            "https://proxy.example/classifier",
        ),
        (PRIVATE, "https://classify.example.com", f"{PRIVATE}/ready", "https://classify.example.com"),
    ],
)
def test_the_audience_is_backend_audience_else_backend_url_else_the_services_url(
    clock: Clock, backend_url: str | None, audience: str | None, url: str, expected: str
) -> None:
    google = Google()
    auth = IdentityTokenAuth(IdentityTokens("id_token", google, clock), audience, backend_url)

    assert auth.audience_for(url) == expected
    assert auth.audience_for(url) == expected


def test_the_token_reaches_the_backend(backend: FakeServer, clock: Clock) -> None:
    google = Google()
    settings = FrontendSettings(backend_url=backend.url, backend_auth="id_token")
    client = Backend(settings, tokens=IdentityTokens("id_token", google, clock))

    results = client.predict_many([IMAGE] * 4, top_k=3)

    assert all(not isinstance(r, BackendError) for r in results)
    received = [r.headers.get("Authorization") for r in backend.requests if r.path.startswith("/predict")]
    assert len(received) == 4
    assert set(received) == {f"Bearer {google.credentials[backend.url].token}"}
    assert google.refreshes == [backend.url]  # audience = the backend URL; one token shared by all requests


def test_a_custom_audience_is_used_for_custom_domains(backend: FakeServer, clock: Clock) -> None:
    google = Google()
    settings = FrontendSettings(backend_url=backend.url, backend_auth="id_token", backend_audience=PRIVATE)

    Backend(settings, tokens=IdentityTokens("id_token", google, clock)).predict(IMAGE, top_k=3)

    assert google.refreshes == [PRIVATE]
    assert backend.requests[-1].headers["Authorization"] == f"Bearer {google.credentials[PRIVATE].token}"


def test_no_token_is_sent_to_a_local_backend(backend: FakeServer) -> None:
    Backend(FrontendSettings(backend_url=backend.url)).predict(IMAGE, top_k=3)

    assert "Authorization" not in backend.requests[-1].headers


def test_a_private_backend_refusing_says_what_to_grant(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    behaviour.predict_status = 403  # Cloud Run's own refusal: an HTML page, not the backend's JSON
    behaviour.predict_error = b"<html><head><title>403 Forbidden</title></head><body>Forbidden</body></html>"
    behaviour.predict_headers = {"Content-Type": "text/html; charset=UTF-8"}

    with pytest.raises(BackendError) as caught:
        Backend(FrontendSettings(backend_url=backend.url)).predict(IMAGE, top_k=3)

    assert caught.value.kind == "unauthorized"
    assert "roles/run.invoker" in caught.value.detail
    assert "<html>" not in caught.value.detail


def test_a_minting_failure_is_a_friendly_backend_error(backend: FakeServer, clock: Clock) -> None:
    google = Google(fail=RefreshError("no credentials"))  # type: ignore[no-untyped-call]
    tokens = IdentityTokens("id_token", google, clock)

    with pytest.raises(BackendError) as caught:
        Backend(FrontendSettings(backend_url=backend.url, backend_auth="id_token"), tokens=tokens).predict(IMAGE, 3)

    assert caught.value.kind == "auth"
    assert "no credentials" in caught.value.detail
    assert backend.requests == []  # nothing was sent without the token
