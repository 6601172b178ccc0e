"""TorchServe serving the project's model: a custom handler (a module with ``handle(data, context)``).

TorchServe's frontend (Java, Netty) receives ``POST /predictions/classifier`` with the JPEG as the raw body,
batches requests (``batchSize``, ``maxBatchDelay`` in the archive's model-config.yaml) and hands each batch to
one of its Python worker processes (``minWorkers`` = ``maxWorkers``), each with its own single-threaded ONNX
Runtime session. ``BENCH_MODEL_DIR`` and ``BENCH_PREPROCESS`` reach the workers through the frontend's
environment, and ``bench.peers.services._model`` through ``PYTHONPATH`` (the project's root).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from bench.peers.services._model import Model

_model: Model | None = None


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[str] | None:
    global _model  # noqa: PLW0603 - TorchServe's module-level handler keeps its state in the module
    if _model is None:
        _model = Model()
    if data is None:  # TorchServe calls the handler once without data when the worker starts
        return None
    bodies = [bytes(item.get("data") or item.get("body") or b"") for item in data]
    batch = np.stack([_model.prepare(body) for body in bodies])
    return [json.dumps({"predictions": _model.top(row)}) for row in _model.probabilities(batch)]
