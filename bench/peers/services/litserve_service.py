"""LitServe serving the project's model: ``python litserve_service.py`` in the LitServe venv.

LitServe reads a request body as JSON (or a form); its documented way to send an image is base64 inside
JSON (``litserve.schema.image.ImageInput``), so the body is ``{"image": "<base64 of the JPEG>"}``.
Configuration (environment, set by bench/peers/harness.py): ``BENCH_PORT``, ``BENCH_WORKERS`` (worker
processes, ``workers_per_device`` on the CPU), ``BENCH_MAX_BATCH_SIZE`` and ``BENCH_BATCH_TIMEOUT`` (s).
"""

from __future__ import annotations

import base64
import os
from typing import Any

import litserve as ls  # type: ignore[import-not-found]
import numpy as np

from bench.peers.services._model import Model


class ClassifierAPI(ls.LitAPI):  # type: ignore[misc]
    def setup(self, device: str) -> None:
        self.model = Model()

    # No annotation: LitServe then parses the body as JSON itself (an annotation would make FastAPI look for a
    # query parameter, or validate a pydantic model first).
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return self.model.prepare(base64.b64decode(request["image"], validate=True))

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        if x.ndim == 3:  # max_batch_size 1: one image, unbatched
            one: np.ndarray = self.model.probabilities(x[None])[0]
            return one
        batch: np.ndarray = self.model.probabilities(x)
        return batch

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, output: np.ndarray) -> dict[str, Any]:
        return {"predictions": self.model.top(output)}


def main() -> None:
    api = ClassifierAPI(
        max_batch_size=int(os.environ["BENCH_MAX_BATCH_SIZE"]),
        batch_timeout=float(os.environ["BENCH_BATCH_TIMEOUT"]),
    )
    server = ls.LitServer(
        api, accelerator="cpu", workers_per_device=int(os.environ["BENCH_WORKERS"]), timeout=30, fast_queue=True
    )
    server.run(host="127.0.0.1", port=int(os.environ["BENCH_PORT"]), generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
