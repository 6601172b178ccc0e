"""BentoML serving the project's model: ``bentoml serve bentoml_service:Classifier`` in the BentoML venv.

Two routes on one service, both BentoML's documented ways to take an image:

- ``POST /classify``: the JPEG as the raw body (a positional-only parameter is BentoML's *root input*: the
  whole body is the image), one image per call, in BentoML's thread pool;
- ``POST /classify_batch``: adaptive batching (``batchable=True``): ``multipart/form-data`` with the JPEG in
  the ``images`` field, calls gathered into batches of up to ``BENCH_MAX_BATCH_SIZE`` images, waiting at most
  ``BENCH_MAX_LATENCY_MS`` (30 s, the request timeout, by default: BentoML refuses a call with 503 "process is
  overloaded" when it expects it to take longer, where the other servers queue it).

``BENCH_WORKERS`` worker processes (each with its own single-threaded ONNX Runtime session). BentoML opens
the image with Pillow (``PIL.Image.open``, lazily); ``_model.Model.prepare_image`` then decodes it as ours.
"""

from __future__ import annotations

import os
from typing import Any

import bentoml  # type: ignore[import-not-found]
import numpy as np
from PIL import Image

from bench.peers.services._model import Model

WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
MAX_BATCH_SIZE = int(os.environ.get("BENCH_MAX_BATCH_SIZE", "8"))
MAX_LATENCY_MS = int(os.environ.get("BENCH_MAX_LATENCY_MS", "30000"))


@bentoml.service(workers=WORKERS, traffic={"timeout": 30}, logging={"access": {"enabled": False}})
class Classifier:
    def __init__(self) -> None:
        self.model = Model()

    @bentoml.api  # type: ignore[untyped-decorator]
    def classify(self, image: Image.Image, /) -> dict[str, Any]:
        prepared = self.model.prepare_image(image)
        return {"predictions": self.model.top(self.model.probabilities(prepared[None])[0])}

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)  # type: ignore[untyped-decorator]
    def classify_batch(self, images: list[Image.Image]) -> list[dict[str, Any]]:
        batch = np.stack([self.model.prepare_image(image) for image in images])
        return [{"predictions": self.model.top(row)} for row in self.model.probabilities(batch)]
