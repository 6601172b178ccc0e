"""The Open Inference Protocol v2 over HTTP/REST: what KServe's and Triton's clients call, unmodified.

The codec is ``backend.protocols.v2``; here the routes read the body within ``/predict``'s limits and
memory budget, and send the images through the same service (admission, decoders, batcher, metrics).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from backend import __version__
from backend.classifier import Classifier
from backend.config import Settings
from backend.deps import ServiceDep, SettingsDep
from backend.errors import RETRY_LATER_S, V2_ERRORS
from backend.protocols.body import check_identity_encoding, declared_length, read_body
from backend.protocols.v2 import (
    INFERENCE_HEADER,
    ModelFacts,
    check_model,
    encode_response,
    header_length,
    model_metadata,
    parse_infer_request,
    server_metadata,
)
from backend.schemas import (
    V2InferRequest,
    V2InferResponse,
    V2Live,
    V2ModelMetadata,
    V2ModelReady,
    V2Ready,
    V2ServerMetadata,
)
from backend.service import ModelService
from backend.uploads import Upload, UploadTooLarge

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])

_PARSE_IN_THREAD_BYTES: Final = 256 * 1024  # larger bodies (FP32 JSON) are parsed off the event loop
# Triton's platform names for the runtime that serves the model (one per RuntimeName: tests/backend/test_api.py).
PLATFORMS: Final = {"onnx": "onnxruntime_onnx", "openvino": "openvino", "torch": "pytorch_libtorch"}


def model_facts(classifier: Classifier, settings: Settings) -> ModelFacts:
    info = classifier.info
    p = info.preprocessing
    return ModelFacts(
        name=info.name,
        platform=PLATFORMS[classifier.runtime.name],
        num_classes=info.num_classes,
        crop_size=p.crop_size,
        mean=p.mean,
        std=p.std,
        max_images=settings.max_files,
        max_image_bytes=settings.max_image_bytes,
    )


def _served(service: ModelService, settings: Settings, name: str, version: str | None) -> tuple[Classifier, ModelFacts]:
    classifier, _, _ = service.ensure_ready()
    facts = model_facts(classifier, settings)
    check_model(facts, name, version)
    return classifier, facts


@router.get("", response_model=V2ServerMetadata, summary="Server metadata: name, version, extensions")
async def server() -> dict[str, Any]:
    return server_metadata(__version__)


@router.get(
    "/health/live",
    response_model=V2Live,
    responses={503: {"model": V2Live, "description": "inference or decoding is wedged: restart"}},
    summary="Liveness (as /health)",
)
async def live(request: Request) -> V2Live | JSONResponse:
    service: ModelService | None = getattr(request.app.state, "service", None)
    if service is None or service.health() is None:
        return V2Live(live=True)
    return JSONResponse(V2Live(live=False).model_dump(), status_code=503)


@router.get(
    "/health/ready",
    response_model=V2Ready,
    responses={503: {"model": V2Ready, "description": "loading, failed, or shutting down"}},
    summary="Readiness (as /ready)",
)
async def ready(service: ServiceDep) -> V2Ready | JSONResponse:
    if service.state == "ready" and not service.draining:
        return V2Ready(ready=True)
    return JSONResponse(V2Ready(ready=False).model_dump(), status_code=503, headers={"Retry-After": str(RETRY_LATER_S)})


async def _metadata(service: ModelService, settings: Settings, name: str, version: str | None) -> dict[str, Any]:
    _, facts = _served(service, settings, name, version)
    return model_metadata(facts)


async def _model_ready(service: ModelService, settings: Settings, name: str, version: str | None) -> V2ModelReady:
    _, facts = _served(service, settings, name, version)  # 503 while loading, 404 for another model
    return V2ModelReady(name=facts.name, ready=True)


_METADATA: Final[dict[str, Any]] = {
    "response_model": V2ModelMetadata,
    "response_model_exclude_none": True,
    "responses": V2_ERRORS,
    "summary": "Model metadata: its inputs (IMAGE BYTES [N], PIXELS FP32 [N,3,H,W]) and output",
}
_READY: Final[dict[str, Any]] = {
    "response_model": V2ModelReady,
    "responses": V2_ERRORS,
    "summary": "Model readiness: 200 when it serves",
}


@router.get("/models/{model_name}", **_METADATA)
async def metadata(model_name: str, service: ServiceDep, settings: SettingsDep) -> dict[str, Any]:
    return await _metadata(service, settings, model_name, None)


@router.get("/models/{model_name}/versions/{model_version}", **_METADATA)
async def version_metadata(
    model_name: str, model_version: str, service: ServiceDep, settings: SettingsDep
) -> dict[str, Any]:
    return await _metadata(service, settings, model_name, model_version)


@router.get("/models/{model_name}/ready", **_READY)
async def model_ready(model_name: str, service: ServiceDep, settings: SettingsDep) -> V2ModelReady:
    return await _model_ready(service, settings, model_name, None)


@router.get("/models/{model_name}/versions/{model_version}/ready", **_READY)
async def version_ready(
    model_name: str, model_version: str, service: ServiceDep, settings: SettingsDep
) -> V2ModelReady:
    return await _model_ready(service, settings, model_name, model_version)


_INFER_BODY: Final[dict[str, Any]] = {
    "required": True,
    "description": "An inference request (JSON); or, with the binary tensor data extension, its JSON header "
    "(Inference-Header-Content-Length bytes) followed by the tensors' bytes. No Content-Type is required.",
    "content": {
        "application/json": {"schema": V2InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
_INFER: Final[dict[str, Any]] = {
    "response_model": V2InferResponse,
    "response_model_exclude_none": True,
    "responses": {
        200: {
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            "description": "JSON; or, when binary outputs were asked for, the JSON header "
            "(Inference-Header-Content-Length bytes) followed by the outputs' bytes",
        },
        **V2_ERRORS,
    },
    "openapi_extra": {"requestBody": _INFER_BODY},
    "summary": "Classify images: encoded (IMAGE) or preprocessed (PIXELS); probabilities or top-k classes",
}


@router.post("/models/{model_name}/infer", **_INFER)
async def infer(request: Request, model_name: str, service: ServiceDep, settings: SettingsDep) -> Response:
    """Open Inference Protocol v2 inference, with Triton's binary tensor data and classification extensions.

    ```
    curl -d '{"inputs":[{"name":"IMAGE","shape":[1],"datatype":"BYTES","data":["'$(base64 -w0 cat.jpg)'"]}]}' \\
      http://127.0.0.1:8000/v2/models/efficientnet_lite0/infer
    ```
    """
    return await _infer(request, service, settings, model_name, None)


@router.post("/models/{model_name}/versions/{model_version}/infer", **_INFER)
async def version_infer(
    request: Request, model_name: str, model_version: str, service: ServiceDep, settings: SettingsDep
) -> Response:
    return await _infer(request, service, settings, model_name, model_version)


async def _infer(
    request: Request, service: ModelService, settings: Settings, name: str, version: str | None
) -> Response:
    started = time.perf_counter()
    classifier, facts = _served(service, settings, name, version)  # 503/404 before reading a body
    service.ensure_capacity()
    check_identity_encoding(request.headers)
    declared_length(request.headers, settings.max_request_bytes)
    with service.uploads.lease() as lease:  # the body's memory, counted as it is read, given back at the end
        async with asyncio.timeout(settings.request_timeout_s):
            body = await read_body(request.stream(), lease, settings.max_request_bytes)
            json_length = header_length(request.headers.get(INFERENCE_HEADER), len(body))
            if len(body) > _PARSE_IN_THREAD_BYTES:
                parsed = await asyncio.to_thread(parse_infer_request, body, json_length, facts)
            else:
                parsed = parse_infer_request(body, json_length, facts)
            if parsed.pixels is not None:
                rows = await service.classify_pixels(list(parsed.pixels), "v2", started)
            else:
                uploads = []
                for image in parsed.images:
                    if len(image) > facts.max_image_bytes:
                        raise UploadTooLarge(
                            "image_too_large",
                            f"An image is larger than the limit of {facts.max_image_bytes / 1_000_000:.1f} MB. "
                            "Send a smaller one.",
                        )
                    buffer = lease.buffer()
                    lease.grow(len(image))
                    buffer += image
                    uploads.append(Upload(buffer))
                parsed.images = []  # the views into the body go before the lease empties it
                rows = [result.probabilities for result in await service.classify(uploads, 1, "v2", started)]
    content, header = encode_response(
        facts,
        parsed,
        np.stack(rows),
        lambda row, k: [(p.probability, p.index, p.label) for p in classifier.top_k(row, k)],
    )
    if header is None:
        return Response(content, media_type="application/json")
    return Response(
        content, media_type="application/octet-stream", headers={"Inference-Header-Content-Length": str(header)}
    )
