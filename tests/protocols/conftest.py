"""What the protocol tests share: the third-party clients' interpreter, the photos, /predict's own answers."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from backend.classifier import Preprocessing
from tests.helpers import ROOT, need

# tritonclient[http] and kserve live in a venv of their own (their pins are not the project's), made by
# `make clients` (and `make test`) from tests/protocols/requirements_clients.txt.
CLIENTS_VENV_HELP = "the third-party clients' venv is missing: make clients (or set CLIENTS_PYTHON)"


def clients_python() -> Path:
    """The interpreter that has tritonclient and kserve: $CLIENTS_PYTHON, or ./.venv-clients."""
    candidates = [Path(p) for p in (os.environ.get("CLIENTS_PYTHON"),) if p]
    candidates.append(ROOT / ".venv-clients" / "bin" / "python")
    found = next((p for p in candidates if p.is_file()), None)
    need(found is not None, CLIENTS_VENV_HELP)
    assert found is not None
    return found


def predict_probabilities(base: str, image: bytes) -> np.ndarray:
    """Every class's probability for ``image`` from ``/predict`` (the native API), indexed by class."""
    response = httpx.post(f"{base}/predict?top_k=1000", content=image, timeout=60)
    response.raise_for_status()
    probabilities = np.zeros(1000, dtype=np.float64)
    for p in response.json()["results"][0]["predictions"]:
        probabilities[p["index"]] = p["probability"]
    return probabilities


def preprocessed(base: str, photo: Path) -> np.ndarray:
    """``photo`` preprocessed as a client would, from what ``/model`` says: FP32 ``(3, H, W)``, normalised."""
    p = httpx.get(f"{base}/model", timeout=30).json()["preprocessing"]
    prep = Preprocessing(p["resize_size"], p["crop_size"], tuple(p["mean"]), tuple(p["std"]), p["interpolation"])
    crop = prep(Image.open(photo).convert("RGB")).astype(np.float32) / 255.0  # (H, W, 3) in [0, 1]
    normalised = (crop - np.array(p["mean"], dtype=np.float32)) / np.array(p["std"], dtype=np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))
