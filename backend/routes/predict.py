from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import pydantic_core
from fastapi import APIRouter, Query, Request, Response
from pydantic import BeforeValidator

from backend.classifier import Classifier
from backend.deps import ServiceDep, SettingsDep
from backend.errors import PREDICT_ERRORS
from backend.schemas import PredictResponse
from backend.service import ImageResult
from backend.tracing import stage
from backend.uploads import read_uploads

router = APIRouter(tags=["predict"])

_BINARY = {"schema": {"type": "string", "format": "binary"}}


def decimal_integer(value: object) -> object:
    """Query integers as people write them: ``3``, not ``3_0``, ``+3``, ``3.0`` or `` 3`` (which int() takes)."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be a whole number written with the digits 0-9")
    return value


_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "description": "Images as multipart `file` parts (several allowed), or one image as the raw body.",
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "file": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1}
                },
                "required": ["file"],
            }
        },
        "image/jpeg": _BINARY,
        "image/png": _BINARY,
        "image/webp": _BINARY,
        "application/octet-stream": _BINARY,
    },
}


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=PREDICT_ERRORS,
    openapi_extra={"requestBody": _REQUEST_BODY},
    summary="Classify one or more images",
)
async def predict(
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    top_k: Annotated[
        int | None,
        BeforeValidator(decimal_integer),
        Query(ge=1, le=1000, description="how many classes per image (default 5)"),
    ] = None,
) -> Response:
    """Top-k ImageNet (or your checkpoint's) classes for each image, most probable first.

    ```
    curl -F file=@cat.jpg -F file=@dog.png 'http://127.0.0.1:8000/predict?top_k=3'
    curl --data-binary @cat.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8000/predict
    ```
    """
    started = time.perf_counter()
    classifier, _, _ = service.ensure_ready()  # answer 503 before reading a body we could not use
    service.ensure_capacity()
    k = top_k or settings.default_top_k
    length = request.headers.get("content-length")
    with service.uploads.lease() as lease:  # the body's memory, counted as it is read, given back at the end
        async with asyncio.timeout(settings.request_timeout_s):
            with stage(service.tracing, "receive"):
                uploads = await read_uploads(
                    request.headers.get("content-type"),
                    int(length) if length and length.isdigit() else None,
                    request.stream(),
                    lease,
                    max_files=settings.max_files,
                    max_image_bytes=settings.max_image_bytes,
                    max_request_bytes=settings.max_request_bytes,
                )
            results = await service.classify(uploads, k, "predict", started)
    with stage(service.tracing, "respond"):
        return _answer(classifier, results, started)


def _answer(classifier: Classifier, results: list[ImageResult], started: float) -> Response:
    # PredictResponse's shape (response_model documents it; tests/backend/test_predict_answer.py holds us to
    # it), written straight to JSON by pydantic-core: building the models validated every field of our own
    # answer, and FastAPI then validated the model again before serializing it (docs/profile.md: the figures).
    answer = {
        "model": classifier.info.name,
        "model_version": classifier.version,
        "top_k": len(results[0].predictions),  # k, or the number of classes if fewer
        "results": [
            {
                "filename": r.filename,
                "format": r.prepared.format,
                "width": r.prepared.width,
                "height": r.prepared.height,
                "predictions": [
                    {"index": p.index, "label": p.label, "probability": p.probability} for p in r.predictions
                ],
            }
            for r in results
        ],
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    return Response(pydantic_core.to_json(answer), media_type="application/json")
