"""Identity tokens for a private backend: when they are sent, how long they are kept, what failures say.

Only the minting boundary (Google's ``fetch_id_token``) is replaced; the tokens travel over real HTTP to
a fake backend on 127.0.0.1, which records the Authorization header it receives.
"""

from __future__ import annotations

import base64
import json

import pytest

from frontend.auth import FAILURE_BACKOFF_S, FALLBACK_LIFETIME_S, REFRESH_MARGIN_S, AuthError, IdentityTokens
from frontend.backend_client import Backend, BackendError, ImageInput
from frontend.config import AuthMode, FrontendSettings
from tests.frontend.fakes import BackendBehaviour, FakeServer

IMAGE = ImageInput("cat.jpg", b"\xff\xd8\xff fake jpeg", "image/jpeg")
PRIVATE = "https://classifier-backend-x2b4qk7fva-ew.a.run.app"


def jwt(exp: float, audience: str = PRIVATE) -> str:
    """A token shaped like Google's (header.claims.signature); the frontend only reads ``exp``."""

    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part({'aud': audience, 'exp': exp})}.c2lnbmF0dXJl"


class Minter:
    """Stands in for google.oauth2.id_token.fetch_id_token: counts calls, can fail."""

    def __init__(self, clock: Clock, lifetime_s: float = 3600.0, fail: Exception | None = None) -> None:
        self.clock = clock
        self.lifetime_s = lifetime_s
        self.fail = fail
        self.audiences: list[str] = []

    def __call__(self, audience: str) -> str:
        self.audiences.append(audience)
        if self.fail is not None:
            raise self.fail
        return jwt(self.clock() + self.lifetime_s, audience)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_token_is_reused_until_shortly_before_it_expires(clock: Clock) -> None:
    minter = Minter(clock)
    tokens = IdentityTokens("auto", minter, clock)

    first = tokens.headers(PRIVATE)
    clock.now += 3600 - REFRESH_MARGIN_S - 1
    assert tokens.headers(PRIVATE) == first
    assert len(minter.audiences) == 1

    clock.now += 2  # now inside the refresh margin
    second = tokens.headers(PRIVATE)
    assert second != first
    assert second["Authorization"].startswith("Bearer ")
    assert minter.audiences == [PRIVATE, PRIVATE]


def test_a_token_without_a_readable_expiry_is_kept_for_a_while(clock: Clock) -> None:
    calls: list[str] = []

    def opaque(audience: str) -> str:
        calls.append(audience)
        return f"opaque-{len(calls)}"

    tokens = IdentityTokens("id_token", opaque, clock)
    assert tokens.headers(PRIVATE) == {"Authorization": "Bearer opaque-1"}
    clock.now += FALLBACK_LIFETIME_S - 1
    assert tokens.headers(PRIVATE) == {"Authorization": "Bearer opaque-1"}
    clock.now += 2
    assert tokens.headers(PRIVATE) == {"Authorization": "Bearer opaque-2"}


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
    minter = Minter(clock)

    headers = IdentityTokens(mode, minter, clock).headers(url)

    assert ("Authorization" in headers) is sends
    assert minter.audiences == ([url] if sends else [])


def test_auto_mode_goes_without_a_token_when_none_can_be_minted(clock: Clock) -> None:
    minter = Minter(clock, fail=RuntimeError("no service account"))
    tokens = IdentityTokens("auto", minter, clock)

    assert tokens.headers(PRIVATE) == {}
    assert tokens.headers(PRIVATE) == {}
    assert len(minter.audiences) == 1  # not retried on every request...
    clock.now += FAILURE_BACKOFF_S + 1
    minter.fail = None
    assert "Authorization" in tokens.headers(PRIVATE)  # ...but tried again after a while
    assert len(minter.audiences) == 2


def test_id_token_mode_explains_a_minting_failure(clock: Clock) -> None:
    tokens = IdentityTokens("id_token", Minter(clock, fail=RuntimeError("metadata server unreachable")), clock)

    with pytest.raises(AuthError, match="metadata server unreachable") as caught:
        tokens.headers(PRIVATE)
    assert "GOOGLE_APPLICATION_CREDENTIALS" in str(caught.value)
    assert "BACKEND_AUTH=none" in str(caught.value)


def test_google_minting_without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real google.auth minting, with GOOGLE_APPLICATION_CREDENTIALS naming a missing file (fixture)."""
    assert IdentityTokens("auto").headers(PRIVATE) == {}
    with pytest.raises(AuthError, match="DefaultCredentialsError"):
        IdentityTokens("id_token").headers(PRIVATE)


def test_the_token_reaches_the_backend(backend: FakeServer, clock: Clock) -> None:
    minter = Minter(clock)
    settings = FrontendSettings(backend_url=backend.url, backend_auth="id_token")
    client = Backend(settings, tokens=IdentityTokens("id_token", minter, clock))

    results = client.predict_many([IMAGE] * 4, top_k=3)

    assert all(not isinstance(r, BackendError) for r in results)
    received = [r.headers.get("Authorization") for r in backend.requests if r.path.startswith("/predict")]
    assert len(received) == 4
    assert set(received) == {f"Bearer {jwt(clock.now + 3600, backend.url)}"}
    assert minter.audiences == [backend.url]  # audience = the backend URL; one token shared by all requests


def test_a_custom_audience_is_used_for_custom_domains(backend: FakeServer, clock: Clock) -> None:
    minter = Minter(clock)
    settings = FrontendSettings(backend_url=backend.url, backend_auth="id_token", backend_audience=PRIVATE)

    Backend(settings, tokens=IdentityTokens("id_token", minter, clock)).predict(IMAGE, top_k=3)

    assert minter.audiences == [PRIVATE]
    assert backend.requests[-1].headers["Authorization"] == f"Bearer {jwt(clock.now + 3600)}"


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
    tokens = IdentityTokens("id_token", Minter(clock, fail=RuntimeError("no credentials")), clock)

    with pytest.raises(BackendError) as caught:
        Backend(FrontendSettings(backend_url=backend.url, backend_auth="id_token"), tokens=tokens).predict(IMAGE, 3)

    assert caught.value.kind == "auth"
    assert "no credentials" in caught.value.detail
    assert backend.requests == []  # nothing was sent without the token
