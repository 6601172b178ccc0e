"""PyTriton serving the project's model: ``python pytriton_service.py`` in the PyTriton venv.

PyTriton starts NVIDIA Triton Inference Server (its C++ HTTP front end, bundled in the wheel) and binds a
Python function to a model: ``POST /v2/models/classifier/infer`` in the Open Inference Protocol v2 with
the binary tensor data extension, the JPEG as one ``BYTES`` element of input ``IMAGE`` (shape ``[1, 1]``:
batch, one image), exactly as ``tritonclient`` sends it, and the top 5 asked for through Triton's
classification extension on output ``PROBABILITIES``. Triton's dynamic batcher gathers requests into
batches of up to ``BENCH_MAX_BATCH_SIZE``, waiting at most ``BENCH_MAX_QUEUE_DELAY_US``; ``BENCH_INSTANCES``
model instances (one Python function, and one single-threaded ONNX Runtime session, each) run side by side.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
from pytriton.decorators import batch  # type: ignore[import-not-found]
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor  # type: ignore[import-not-found]
from pytriton.triton import Triton, TritonConfig  # type: ignore[import-not-found]

from bench.peers.services._model import Model


def infer_function(model: Model) -> Callable[..., dict[str, np.ndarray]]:
    @batch  # type: ignore[untyped-decorator]
    def infer(IMAGE: np.ndarray) -> dict[str, np.ndarray]:  # noqa: N803 - the input's name
        images = np.stack([model.prepare(bytes(row[0])) for row in IMAGE])
        return {"PROBABILITIES": model.probabilities(images)}

    wrapped: Callable[..., dict[str, np.ndarray]] = infer
    return wrapped


def main() -> None:
    port = int(os.environ["BENCH_PORT"])
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=port,
        grpc_address="127.0.0.1",
        grpc_port=int(os.environ["BENCH_GRPC_PORT"]),
        metrics_port=int(os.environ["BENCH_METRICS_PORT"]),
        allow_metrics=False,
        log_verbose=0,
    )
    model_config = ModelConfig(
        max_batch_size=int(os.environ["BENCH_MAX_BATCH_SIZE"]),
        batcher=DynamicBatcher(max_queue_delay_microseconds=int(os.environ["BENCH_MAX_QUEUE_DELAY_US"])),
    )
    instances: list[Any] = [infer_function(Model()) for _ in range(int(os.environ["BENCH_INSTANCES"]))]
    with Triton(config=config, workspace=os.environ.get("BENCH_WORKSPACE")) as triton:
        triton.bind(
            model_name="classifier",
            infer_func=instances,
            inputs=[Tensor(name="IMAGE", dtype=np.bytes_, shape=(1,))],
            outputs=[Tensor(name="PROBABILITIES", dtype=np.float32, shape=(-1,))],
            config=model_config,
            strict=False,
        )
        triton.serve()


if __name__ == "__main__":
    main()
