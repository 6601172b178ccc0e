"""CORS is closed by default (the frontend calls the backend server-side); CORS_ORIGINS opens exactly what it lists."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from backend.config import Settings
from tests.helpers import backend_server

ALLOWED = "https://a.example"
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
STRANGERS = ["https://evil.example", "https://a.example.evil.example", "http://a.example", "null"]


def _client(**overrides: object) -> TestClient:
    # No lifespan (no model): CORS is decided before any route runs, and /health needs no model.
    return TestClient(create_app(Settings(_env_file=None, access_log=False, **overrides)))  # type: ignore[arg-type]


def test_closed_by_default_to_simple_requests_and_preflights() -> None:
    client = _client()
    for origin in [ALLOWED, *STRANGERS]:
        simple = client.get("/health", headers={"Origin": origin})
        assert simple.status_code == 200
        assert "access-control-allow-origin" not in simple.headers
        preflight = client.options("/predict", headers={"Origin": origin, **PREFLIGHT})
        assert "access-control-allow-origin" not in preflight.headers
        assert preflight.status_code == 405  # no CORS layer at all: OPTIONS is just not a route


def test_cors_origins_opens_exactly_the_listed_origin() -> None:
    client = _client(cors_origins=[ALLOWED])
    preflight = client.options("/predict", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in preflight.headers["access-control-allow-methods"]
    simple = client.get("/health", headers={"Origin": ALLOWED})
    assert simple.headers["access-control-allow-origin"] == ALLOWED
    assert "access-control-allow-credentials" not in simple.headers  # no cookies are ever involved
    for origin in STRANGERS:
        refused = client.options("/predict", headers={"Origin": origin, **PREFLIGHT})
        assert refused.status_code == 400, origin
        assert "access-control-allow-origin" not in refused.headers
        other = client.get("/health", headers={"Origin": origin})
        assert "access-control-allow-origin" not in other.headers, origin


def test_cors_origins_is_a_comma_separated_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", f" {ALLOWED} , https://b.example ,")
    assert Settings(_env_file=None).cors_origins == [ALLOWED, "https://b.example"]


@pytest.mark.slow
def test_real_server_closed_by_default_and_opened_by_the_environment(
    live_backend: str, model_cache: Path, tmp_path: Path
) -> None:
    closed = httpx.options(f"{live_backend}/predict", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert "access-control-allow-origin" not in closed.headers
    env = {"MODEL_CACHE_DIR": str(model_cache), "ACCESS_LOG": "false", "CORS_ORIGINS": ALLOWED}
    with backend_server(env, tmp_path / "backend.log") as url:
        opened = httpx.options(f"{url}/predict", headers={"Origin": ALLOWED, **PREFLIGHT})
        assert opened.status_code == 200
        assert opened.headers["access-control-allow-origin"] == ALLOWED
        other = httpx.options(f"{url}/predict", headers={"Origin": "https://evil.example", **PREFLIGHT})
        assert "access-control-allow-origin" not in other.headers
