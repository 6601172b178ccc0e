from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from frontend import discovery
from tests.helpers.fakes import BackendBehaviour, CloudRunState, FakeServer, fake_backend, fake_cloud_run_api, running

# Every variable the frontend reads, so a developer's own settings never leak into a test.
FRONTEND_VARIABLES = (
    "BACKEND_URL",
    "BACKEND_SERVICE",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_REGION",
    "CLOUD_RUN_REGION",
    "CLOUD_RUN_API_ENDPOINT",
    "DISCOVERY_TIMEOUT_S",
    "BACKEND_AUTH",
    "BACKEND_AUDIENCE",
    "BACKEND_TIMEOUT_S",
    "STATUS_TIMEOUT_S",
    "PREDICT_CONCURRENCY",
    "DEFAULT_TOP_K",
    "MAX_UPLOAD_MB",
    "MAX_FILES",
    "PLOTTER_URL",
    "PLOTTER_SERVICE",
    "PLOTTER_TIMEOUT_S",
    "HOST",
    "PORT",
    "LOG_LEVEL",
    "K_SERVICE",
    "GCE_METADATA_HOST",
    "GCE_METADATA_IP",
    "GCE_METADATA_ROOT",
)


@pytest.fixture(autouse=True)
def frontend_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A clean environment without Google credentials: lookups that need them fail at once, offline."""
    for name in FRONTEND_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-credentials.json"))
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # google.auth must not probe a metadata server here
    # The process's metadata server remembers failures and its service account: a fresh one per test.
    monkeypatch.setattr(discovery, "METADATA", discovery.MetadataServer())


@pytest.fixture
def behaviour() -> BackendBehaviour:
    return BackendBehaviour()


@pytest.fixture
def backend(behaviour: BackendBehaviour) -> Iterator[FakeServer]:
    """A fake backend on 127.0.0.1 whose behaviour the test changes through ``behaviour``."""
    with running(fake_backend(behaviour)) as server:
        yield server


@pytest.fixture
def cloud_run_state() -> CloudRunState:
    return CloudRunState()


@pytest.fixture
def cloud_run_api(cloud_run_state: CloudRunState) -> Iterator[FakeServer]:
    with running(fake_cloud_run_api(cloud_run_state)) as server:
        yield server
