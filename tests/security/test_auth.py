"""The optional ID-token check (AUTH_AUDIENCE), against real RSA signatures and a local certificate server."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from backend.app import create_app
from backend.auth import AuthUnavailable, CertificateCache, ForbiddenIdentity, GoogleIdTokenVerifier, InvalidToken
from backend.classifier import Classifier
from backend.config import Settings
from backend.errors import answer_for
from backend.middleware import IdTokenAuthMiddleware
from tests.helpers import CAT_CLASSES, backend_server
from tests.helpers.tokens import (
    AUDIENCE,
    CALLER,
    CertServer,
    SigningKey,
    claims,
    hmac_token,
    unsigned_token,
)
from tests.hostile.corpus import cat_jpeg

PROTECTED = "/openapi.json"  # a route that needs no model: every check below is about the token alone


@pytest.fixture
def make_client(
    model_cache: Path, onnx_classifier: Classifier, cert_server: CertServer
) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = Settings(
            _env_file=None,
            model_cache_dir=model_cache,
            access_log=False,
            auth_audience=AUDIENCE,
            auth_certs_url=cert_server.url,
            **overrides,
        )
        client = TestClient(create_app(settings, lambda _: onnx_classifier), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        deadline = time.monotonic() + 60
        while client.get("/ready").status_code != 200:  # no token needed: Cloud Run and Kubernetes probe it
            assert time.monotonic() < deadline, client.get("/ready").text
            time.sleep(0.02)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Answer(Protocol):
    """An HTTP response, from httpx or from the TestClient (which uses its own copy of httpx)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def text(self) -> str: ...
    def json(self) -> Any: ...


def _refused(response: Answer, code: str, status: int = 401) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert len(body["detail"]) > 10
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.slow  # an app per test
def test_every_bad_token_is_refused_and_a_good_one_accepted(
    make_client: Callable[..., TestClient], google_key: SigningKey, other_key: SigningKey
) -> None:
    client = make_client()
    now = time.time()
    good = google_key.sign(claims())
    cases: dict[str, tuple[dict[str, str], str]] = {
        "no Authorization header": ({}, "missing_token"),
        "empty bearer": ({"Authorization": "Bearer "}, "missing_token"),
        "basic auth": ({"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}, "missing_token"),
        "garbage": (_bearer("not-a-token"), "invalid_token"),
        "three garbage segments": (_bearer("a.b.c"), "invalid_token"),
        "wrong audience": (_bearer(google_key.sign(claims(audience="https://other.example"))), "wrong_audience"),
        "expired": (_bearer(google_key.sign(claims(issued=now - 7200, lifetime_s=3600))), "token_expired"),
        "issued in the future": (_bearer(google_key.sign(claims(issued=now + 3600))), "invalid_token"),
        "signed by another key, our key id": (_bearer(other_key.sign(claims(), kid=google_key.kid)), "invalid_token"),
        "signed by another key, its key id": (_bearer(other_key.sign(claims())), "invalid_token"),
        # A forged token is refused as forged, whatever its (untrusted) claims say.
        "expired, signed by another key": (
            _bearer(other_key.sign(claims(issued=now - 7200, lifetime_s=3600), kid=google_key.kid)),
            "invalid_token",
        ),
        "wrong audience, signed by another key": (
            _bearer(other_key.sign(claims(audience="https://other.example"), kid=google_key.kid)),
            "invalid_token",
        ),
        "alg none": (_bearer(unsigned_token(claims(), google_key.kid)), "invalid_token"),
        "HS256 keyed with the certificate": (
            _bearer(hmac_token(claims(), google_key.certificate_pem.encode(), google_key.kid)),
            "invalid_token",
        ),
        "tampered payload": (_bearer(_tamper(good)), "invalid_token"),
        "10 kB token": (_bearer("x" * 10_000), "invalid_token"),
    }
    for name, (headers, code) in cases.items():
        response = client.get(PROTECTED, headers=headers)
        print(f"{name:36s} -> {response.status_code} {response.json().get('code')}")
        _refused(response, code)
        if code != "missing_token":
            assert 'error="invalid_token"' in response.headers["www-authenticate"], name

    assert client.get(PROTECTED, headers=_bearer(good)).status_code == 200
    assert client.get(PROTECTED, headers={"Authorization": f"bearer {good}"}).status_code == 200
    predicted = client.post("/predict", content=cat_jpeg(), headers=_bearer(good))
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["results"][0]["predictions"][0]["label"] in CAT_CLASSES
    _refused(client.post("/predict", content=cat_jpeg()), "missing_token")


@pytest.mark.slow  # an app per case
@pytest.mark.parametrize(
    "issuer",
    [
        "https://evil.example",
        "https://securetoken.google.com/example-project",  # Firebase's: another Google issuer, not ID tokens'
        "http://accounts.google.com",
        "accounts.google.com.evil.example",
        "https://accounts.google.com/",
        "",
        ["accounts.google.com"],
        {"iss": "accounts.google.com"},
        None,
    ],
)
def test_tokens_from_another_issuer_are_refused(
    make_client: Callable[..., TestClient], google_key: SigningKey, issuer: object
) -> None:
    """Signed with a published key, for the right audience and caller, but not issued by accounts.google.com:
    ``verify_token`` alone accepts these; the backend must not."""
    client = make_client(auth_allowed_emails=[CALLER])
    token = google_key.sign(claims(iss=issuer))
    response = client.get(PROTECTED, headers=_bearer(token))
    _refused(response, "wrong_issuer")
    assert "accounts.google.com" in response.json()["detail"]
    _refused(client.post("/predict", content=cat_jpeg(), headers=_bearer(token)), "wrong_issuer")


@pytest.mark.slow  # an app per test
def test_a_token_without_an_issuer_is_refused(make_client: Callable[..., TestClient], google_key: SigningKey) -> None:
    anonymous = claims()
    del anonymous["iss"]
    _refused(make_client().get(PROTECTED, headers=_bearer(google_key.sign(anonymous))), "wrong_issuer")


@pytest.mark.parametrize("issuer", ["accounts.google.com", "https://accounts.google.com"])
def test_both_google_issuers_are_accepted(cert_server: CertServer, google_key: SigningKey, issuer: str) -> None:
    verifier = GoogleIdTokenVerifier(AUDIENCE, cert_server.url, allowed_emails=[CALLER])
    assert verifier.verify(google_key.sign(claims(iss=issuer)))["iss"] == issuer


def test_the_issuer_is_checked_before_the_caller(cert_server: CertServer, google_key: SigningKey) -> None:
    """A stranger's token from another issuer is refused for its issuer (401), not as a stranger (403)."""
    verifier = GoogleIdTokenVerifier(AUDIENCE, cert_server.url, allowed_emails=[CALLER])
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(google_key.sign(claims(iss="https://evil.example", email="someone@evil.example")))
    assert not isinstance(caught.value, ForbiddenIdentity)
    assert (caught.value.code, answer_for(caught.value).status) == ("wrong_issuer", 401)


def _tamper(token: str) -> str:
    """The same signature over a payload with another audience-compatible subject."""
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["email"] = "attacker@example.com"
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


@pytest.mark.slow  # an app per test
def test_health_and_ready_stay_open_and_everything_else_is_closed(
    make_client: Callable[..., TestClient], google_key: SigningKey
) -> None:
    client = make_client()  # which waited for /ready without a token
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200
    # With a token, each route answers as it does without the check: the token opened it, nothing else.
    answers = {"/model": 200, "/metrics": 200, "/docs": 200, "/openapi.json": 200, "/nonexistent": 404}
    for path, status in answers.items():
        _refused(client.get(path), "missing_token")
        assert client.get(path, headers=_bearer(google_key.sign(claims()))).status_code == status, path
    assert client.get("/nonexistent", headers=_bearer(google_key.sign(claims()))).json()["code"] == "not_found"


@pytest.mark.slow  # an app per test
def test_allowed_emails_restrict_who_may_call(make_client: Callable[..., TestClient], google_key: SigningKey) -> None:
    client = make_client(auth_allowed_emails=[CALLER.upper()])  # compared without case
    assert client.get(PROTECTED, headers=_bearer(google_key.sign(claims()))).status_code == 200
    stranger = google_key.sign(claims(email="someone@else.iam.gserviceaccount.com"))
    _refused(client.get(PROTECTED, headers=_bearer(stranger)), "forbidden_identity", 403)
    unverified = google_key.sign(claims(email_verified=False))
    _refused(client.get(PROTECTED, headers=_bearer(unverified)), "forbidden_identity", 403)
    no_email = claims()
    del no_email["email"]
    _refused(client.get(PROTECTED, headers=_bearer(google_key.sign(no_email))), "forbidden_identity", 403)


@pytest.mark.slow  # an app per test
def test_cors_preflight_passes_and_refusals_carry_cors_headers(
    make_client: Callable[..., TestClient], google_key: SigningKey
) -> None:
    client = make_client(cors_origins=["https://a.example"])
    preflight = client.options(
        "/predict",
        headers={
            "Origin": "https://a.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200  # browsers send no Authorization on a preflight
    assert preflight.headers["access-control-allow-origin"] == "https://a.example"
    refused = client.get(PROTECTED, headers={"Origin": "https://a.example"})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "https://a.example"  # the page can read why


def test_certificates_are_fetched_once_and_verification_is_fast(
    cert_server: CertServer, google_key: SigningKey
) -> None:
    verifier = GoogleIdTokenVerifier(AUDIENCE, cert_server.url)
    token = google_key.sign(claims())
    verifier.verify(token)
    rounds = 200
    started = time.perf_counter()
    for _ in range(rounds):
        assert verifier.verify(token)["email"] == CALLER
    per_call_ms = (time.perf_counter() - started) / rounds * 1000
    print(f"\nverify(): {per_call_ms:.3f} ms per token with cached certificates; {cert_server.hits} fetch(es)")
    assert cert_server.hits == 1
    assert per_call_ms < 50  # generous: it is about 0.1-0.5 ms; the point is "no fetch per request"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_certificates_expire_rotate_and_survive_outages(
    cert_server: CertServer, google_key: SigningKey, other_key: SigningKey
) -> None:
    clock = FakeClock()
    cert_server.max_age_s = 600
    verifier = GoogleIdTokenVerifier(AUDIENCE, cert_server.url, certificates=CertificateCache(clock=clock))
    token = google_key.sign(claims())
    verifier.verify(token)
    assert cert_server.hits == 1

    clock.now += 599
    verifier.verify(token)
    assert cert_server.hits == 1  # within max-age
    clock.now += 2
    verifier.verify(token)
    assert cert_server.hits == 2  # max-age passed: fetched again

    # Google rotates: a token signed with a key we have not seen makes us look again, once.
    cert_server.keys[other_key.kid] = other_key.certificate_pem
    rotated = other_key.sign(claims())
    with pytest.raises(InvalidToken):  # fetched 0 s ago: no refetch yet (a flood of bad key ids is cheap)
        verifier.verify(rotated)
    assert cert_server.hits == 2
    clock.now += 31
    assert verifier.verify(rotated)["email"] == CALLER
    assert cert_server.hits == 3
    unknown = SigningKey("key-unknown", other_key.private_pem, other_key.certificate_pem).sign(claims())
    for _ in range(5):
        with pytest.raises(InvalidToken):
            verifier.verify(unknown)
    assert cert_server.hits == 3  # unknown key ids do not trigger a fetch each

    # The endpoint fails after the certificates expired: the old ones keep working meanwhile.
    cert_server.status = 500
    clock.now += 700
    assert verifier.verify(token)["email"] == CALLER
    assert cert_server.hits == 4
    verifier.verify(token)
    assert cert_server.hits == 4  # and the failing endpoint is not asked again at once


def test_certificate_outage_with_nothing_cached_is_a_503(cert_server: CertServer, google_key: SigningKey) -> None:
    clock = FakeClock()
    cert_server.status = 503
    verifier = GoogleIdTokenVerifier(AUDIENCE, cert_server.url, certificates=CertificateCache(clock=clock))
    token = google_key.sign(claims())
    with pytest.raises(AuthUnavailable):
        verifier.verify(token)
    with pytest.raises(AuthUnavailable):
        verifier.verify(token)
    assert cert_server.hits == 1  # backed off
    cert_server.status = 200
    clock.now += 6
    assert verifier.verify(token)["email"] == CALLER

    cert_server.body = b"<html>not json</html>"
    garbage = GoogleIdTokenVerifier(AUDIENCE, cert_server.url, certificates=CertificateCache(clock=clock))
    with pytest.raises(AuthUnavailable):
        garbage.verify(token)


def test_unreachable_certificates_answer_503_with_retry_after(
    model_cache: Path, onnx_classifier: Classifier, google_key: SigningKey
) -> None:
    settings = Settings(
        _env_file=None,
        model_cache_dir=model_cache,
        access_log=False,
        auth_audience=AUDIENCE,
        auth_certs_url="http://127.0.0.1:9/certs",  # the discard port: nothing listens
    )
    with TestClient(create_app(settings, lambda _: onnx_classifier), raise_server_exceptions=False) as client:
        response = client.get(PROTECTED, headers=_bearer(google_key.sign(claims())))
    assert response.status_code == 503
    assert response.json()["code"] == "auth_unavailable"
    assert response.headers["retry-after"] == "5"


def test_settings_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_AUDIENCE", "")
    monkeypatch.setenv("AUTH_ALLOWED_EMAILS", " a@x.example , b@y.example ,")
    settings = Settings(_env_file=None)
    assert settings.auth_audience is None  # empty means off
    assert settings.auth_allowed_emails == ["a@x.example", "b@y.example"]
    assert settings.auth_certs_url == "https://www.googleapis.com/oauth2/v1/certs"
    monkeypatch.setenv("AUTH_AUDIENCE", AUDIENCE)
    assert Settings(_env_file=None).auth_audience == AUDIENCE


@pytest.mark.slow
def test_real_server_requires_tokens_and_caches_certificates(
    model_cache: Path, tmp_path: Path, cert_server: CertServer, google_key: SigningKey
) -> None:
    env = {
        "MODEL_CACHE_DIR": str(model_cache),
        "ACCESS_LOG": "false",
        "AUTH_AUDIENCE": AUDIENCE,
        "AUTH_CERTS_URL": cert_server.url,
        "AUTH_ALLOWED_EMAILS": CALLER,
    }
    # backend_server waits for /ready without a token: that it starts at all shows /ready is open.
    with backend_server(env, tmp_path / "backend.log") as url:
        assert httpx.get(f"{url}/health").status_code == 200
        refused = httpx.post(f"{url}/predict", content=cat_jpeg(), timeout=30)
        _refused(refused, "missing_token")
        token = google_key.sign(claims())
        for _ in range(20):
            response = httpx.post(f"{url}/predict", content=cat_jpeg(), headers=_bearer(token), timeout=30)
            assert response.status_code == 200, response.text
        assert response.json()["results"][0]["predictions"][0]["label"] in CAT_CLASSES
        assert httpx.get(f"{url}/metrics", headers=_bearer(token)).status_code == 200
        _refused(httpx.get(f"{url}/metrics"), "missing_token")
    assert cert_server.hits == 1


def test_websockets_need_a_token_too(cert_server: CertServer, google_key: SigningKey) -> None:
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    inner = Starlette(routes=[WebSocketRoute("/ws", echo)])
    app = IdTokenAuthMiddleware(inner, GoogleIdTokenVerifier(AUDIENCE, cert_server.url))
    client = TestClient(app)
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/ws"):
        pass
    assert refused.value.code == 1008
    headers = _bearer(google_key.sign(claims()))
    with client.websocket_connect("/ws", headers=headers) as websocket:
        assert websocket.receive_text() == "hello"
