"""``python -m backend.prefetch``: fetch the configured model's weights and export it, ahead of serving.

Used at container build time, so the image holds the ONNX model and a cold start reads no network::

    MODEL_NAME=resnet50 python -m backend.prefetch

With ``RUNTIME=openvino`` (the default) it also fills OpenVINO's compiled-model cache beside the export, for
``INFERENCE_THREADS`` threads: the server then loads the compiled model instead of compiling it, if it runs with
as many threads on a CPU of the same name. ``--precision int8`` (``PRECISION=int8``) also writes the INT8
model beside the export (NNCF, the model dependency group; ``backend/classifier/_quantize.py``).

``--export-to DIR`` writes the configured model (``MODEL_NAME``, ``MODEL_CHECKPOINT``, ``MODEL_LABELS``) as a
bundle into DIR instead, a new folder: ``model.onnx``, ``model.json`` and ``bundle.json`` (each file's SHA-256
and the model's version, a hash of both). Copy DIR to a bucket and serve it with ``MODEL_DIR`` (README, "Ship a
new model version")::

    MODEL_NAME=resnet18 MODEL_CHECKPOINT=leaves.pt MODEL_LABELS=leaves.txt \
        python -m backend.prefetch --export-to bundles/leaves/v3
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from backend.classifier import ModelConfigError, ModelSpec, export_bundle, load_classifier
from backend.config import get_settings
from backend.logs import configure_logging

logger = logging.getLogger("backend.prefetch")


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=settings.model_name, help="default: MODEL_NAME")
    parser.add_argument("--weights", default=settings.model_weights, help="default: MODEL_WEIGHTS")
    parser.add_argument(
        "--runtime", default=settings.runtime, choices=["onnx", "openvino", "torch"], help="default: RUNTIME"
    )
    parser.add_argument(
        "--precision",
        default=settings.precision,
        choices=["fp32", "int8"],
        help="default: PRECISION; int8 (with --runtime openvino) also quantizes the export, which needs NNCF",
    )
    parser.add_argument(
        "--export-to",
        type=Path,
        metavar="DIR",
        help="write the model as a bundle into DIR (a new folder) to serve with MODEL_DIR, and nothing else",
    )
    args = parser.parse_args(argv)
    if args.precision != "fp32" and args.runtime != "openvino":
        parser.error(f"--precision {args.precision} needs --runtime openvino")
    configure_logging(settings.log_level)
    spec = ModelSpec(args.model, args.weights, settings.model_checkpoint, settings.model_labels)
    if args.export_to is not None:
        if args.precision != "fp32":
            parser.error("--export-to writes an FP32 bundle: MODEL_DIR serves FP32 models only (--precision fp32)")
        try:
            version = export_bundle(spec, args.export_to)
        except ModelConfigError as exc:
            parser.exit(2, f"{parser.prog}: error: {exc.message}\n")
        logger.info("exported a bundle", extra={"model": spec.name, "version": version, "bundle": str(args.export_to)})
        return
    classifier = load_classifier(
        spec,
        runtime=args.runtime,
        cache_dir=settings.model_cache_dir,
        threads=settings.inference_threads,
        precision=args.precision,
    )
    classifier.warm_up()
    logger.info(
        "prefetched",
        extra={
            "model": classifier.info.name,
            "weights": classifier.info.weights,
            "cache": str(settings.model_cache_dir),
        },
    )


if __name__ == "__main__":
    main()
