"""The R plotting service started for real (``Rscript plotter/main.R``), and real /predict answers to draw,
from the backend's app in this process (the embedded model, real photos)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from backend.classifier import Classifier
from backend.config import Settings
from frontend import discovery
from tests.backend.conftest import wait_ready
from tests.frontend.conftest import FRONTEND_VARIABLES
from tests.helpers import CAT, COFFEE, need, plotter_server

R_PACKAGES = ("plumber", "ggplot2", "ragg")
INSTALL = "apt-get install -y --no-install-recommends r-cran-plumber r-cran-ggplot2 r-cran-ragg"


@dataclass(frozen=True)
class RunningPlotter:
    url: str
    log: Path  # its stdout and stderr

    def log_lines(self) -> list[str]:
        return [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]


def need_r() -> None:
    """Rscript and the R packages the service loads (skipped without them; in CI, failed)."""
    need(shutil.which("Rscript") is not None, f"R is not installed: {INSTALL}")
    loads = "; ".join(f"library({name})" for name in R_PACKAGES)
    result = subprocess.run(["Rscript", "-e", loads], capture_output=True, text=True, timeout=120, check=False)
    need(result.returncode == 0, f"R packages missing ({result.stderr.strip()[-300:]}): {INSTALL}")


@pytest.fixture(scope="module")
def plotter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlotter]:
    """The plotting service on a free port, shared by a module's tests."""
    need_r()
    log = tmp_path_factory.mktemp("plotter") / "plotter.log"
    with plotter_server(log) as url:
        yield RunningPlotter(url, log)


@pytest.fixture(scope="module")
def predict_answers(model_cache: Path, classifier: Classifier) -> dict[str, dict[str, Any]]:
    """Real /predict answers of the backend's app (embedded model): the cat alone, and the cat and the
    coffee in one request."""
    settings = Settings(_env_file=None, model_cache_dir=model_cache, access_log=False)
    with TestClient(create_app(settings, lambda _: classifier), raise_server_exceptions=False) as client:
        wait_ready(client)
        cat = CAT.read_bytes()
        one = client.post("/predict?top_k=5", files={"file": ("cat.png", cat, "image/png")})
        both = client.post(
            "/predict?top_k=5",
            files=[("file", ("cat.png", cat, "image/png")), ("file", ("coffee.png", COFFEE.read_bytes(), "image/png"))],
        )
    assert one.status_code == both.status_code == 200, (one.text, both.text)
    return {"one": one.json(), "both": both.json()}


@pytest.fixture
def frontend_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The frontend's clean environment (as tests/frontend's): no developer settings, no Google credentials."""
    for name in FRONTEND_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-credentials.json"))
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    monkeypatch.setattr(discovery, "METADATA", discovery.MetadataServer())
