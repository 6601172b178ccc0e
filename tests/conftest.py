from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.classifier import Classifier, ModelSpec, load_classifier
from backend.config import Settings
from tests.helpers import backend_server

DEFAULT_RUNTIME = Settings.model_fields["runtime"].default  # what the service runs unless RUNTIME says otherwise


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model cache holding the embedded model's ONNX export, made once per test session (or kept in
    ``$TEST_MODEL_CACHE``: ``make mutate`` starts a session per mutant and exports once for all of them)."""
    kept = os.environ.get("TEST_MODEL_CACHE")
    cache = Path(kept) if kept else tmp_path_factory.mktemp("model-cache")
    load_classifier(ModelSpec(), runtime=DEFAULT_RUNTIME, cache_dir=cache, threads=2)  # exports (and compiles)
    return cache


@pytest.fixture(scope="session")
def classifier(model_cache: Path) -> Classifier:
    """The embedded model on the default runtime, as the service loads it."""
    return load_classifier(ModelSpec(), runtime=DEFAULT_RUNTIME, cache_dir=model_cache, threads=2)


@pytest.fixture(scope="session")
def onnx_classifier(model_cache: Path) -> Classifier:
    return load_classifier(ModelSpec(), runtime="onnx", cache_dir=model_cache, threads=2)


@pytest.fixture(scope="session")
def openvino_classifier(model_cache: Path) -> Classifier:
    return load_classifier(ModelSpec(), runtime="openvino", cache_dir=model_cache, threads=2)


@pytest.fixture(scope="session")
def torch_classifier(model_cache: Path) -> Classifier:
    return load_classifier(ModelSpec(), runtime="torch", cache_dir=model_cache, threads=2)


@pytest.fixture(scope="session")
def live_backend(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real backend (``python -m backend``, embedded model, default runtime) on a free port, shared by a session."""
    log = tmp_path_factory.mktemp("logs") / "backend.log"
    with backend_server({"MODEL_CACHE_DIR": str(model_cache), "ACCESS_LOG": "false"}, log) as url:
        yield url
