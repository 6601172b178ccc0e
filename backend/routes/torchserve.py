"""TorchServe's inference API (and the model listing of its management API), as its ``image_classifier`` serves.

A TorchServe user changes only the host: ``curl http://HOST/predictions/NAME -T kitten.jpg`` (a raw body,
PUT or POST) or ``-F data=@kitten.jpg`` (multipart ``data``, or ``body``) answers the top 5 classes as
``{label: probability}``, most probable first; several ``data`` parts answer a list, one object per image.
Same limits, budgets, batcher and metrics as ``/predict``; errors in TorchServe's ``{code, type, message}``.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import time
from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from backend.classifier import Classifier
from backend.config import Settings
from backend.deps import ServiceDep, SettingsDep
from backend.errors import RETRY_LATER_S, TORCHSERVE_ERRORS
from backend.protocols.body import check_identity_encoding
from backend.protocols.v2 import ModelNotFound
from backend.schemas import (
    TorchServeModelDescription,
    TorchServeModelEntry,
    TorchServeModels,
    TorchServePing,
    TorchServeWorker,
)
from backend.service import ModelService
from backend.uploads import InvalidUpload, read_uploads

router = APIRouter(tags=["TorchServe"])

TOP_K: Final = 5  # what TorchServe's image_classifier handler returns
VERSION: Final = "1.0"  # torch-model-archiver's default
_VERSIONS: Final = frozenset({VERSION, "1"})
_FIELDS: Final = frozenset({"data", "body"})  # the fields TorchServe's handlers read an image from
_STARTED: Final = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
_BINARY: Final = {"schema": {"type": "string", "format": "binary"}}
_REQUEST_BODY: Final[dict[str, Any]] = {
    "required": True,
    "description": "One image as the raw body (`curl -T kitten.jpg`), or multipart `data` parts (several allowed).",
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "data": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1}
                },
                "required": ["data"],
            }
        },
        "image/jpeg": _BINARY,
        "image/png": _BINARY,
        "application/octet-stream": _BINARY,
    },
}
_PREDICTION: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1},
    "description": "label: probability, the 5 most probable classes, most probable first",
}
_PREDICTIONS_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "description": "one image: an object; several: a list of them, in the order sent",
        "content": {"application/json": {"schema": {"anyOf": [_PREDICTION, {"type": "array", "items": _PREDICTION}]}}},
    },
    **TORCHSERVE_ERRORS,
}
ModelName = Annotated[str, Path(description="the served model's name (GET /models lists it)")]


def _served(service: ModelService, name: str, version: str | None) -> Classifier:
    classifier, _, _ = service.ensure_ready()
    served = classifier.info.name
    if name != served:
        raise ModelNotFound(f"Model not found: {name[:100]}. This server serves {served!r}.")
    if version is not None and version not in _VERSIONS:
        raise ModelNotFound(f"Model version not found: {name[:100]} {version[:40]}. The only version is {VERSION}.")
    return classifier


@router.get(
    "/ping",
    response_model=TorchServePing,
    responses={503: {"model": TorchServePing, "description": "loading, failed, or shutting down"}},
    summary="TorchServe health check",
)
async def ping(service: ServiceDep) -> TorchServePing | JSONResponse:
    if service.state == "ready" and not service.draining:
        return TorchServePing(status="Healthy")
    body = TorchServePing(status="Unhealthy").model_dump()
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_LATER_S)})


def _model_url(classifier: Classifier) -> str:
    info = classifier.info
    return f"{info.source}:{info.name}:{info.weights}"


@router.get("/models", response_model=TorchServeModels, responses=TORCHSERVE_ERRORS, summary="TorchServe: list models")
async def models(service: ServiceDep) -> TorchServeModels:
    classifier, _, _ = service.ensure_ready()
    return TorchServeModels(
        models=[TorchServeModelEntry(modelName=classifier.info.name, modelUrl=_model_url(classifier))]
    )


def _describe(
    service: ModelService, settings: Settings, name: str, version: str | None
) -> list[TorchServeModelDescription]:
    classifier = _served(service, name, version)
    workers = service.batcher.workers if service.batcher is not None else 1
    return [
        TorchServeModelDescription(
            modelName=classifier.info.name,
            modelVersion=VERSION,
            modelUrl=_model_url(classifier),
            runtime=classifier.runtime.name,
            minWorkers=workers,
            maxWorkers=workers,
            batchSize=settings.max_batch_size,
            maxBatchDelay=round(settings.max_batch_delay_ms),
            loadedAtStartup=True,
            workers=[
                TorchServeWorker(
                    id=str(9000 + i),
                    startTime=_STARTED,
                    status="READY",
                    memoryUsage=0,
                    pid=os.getpid(),
                    gpu=False,
                    gpuUsage="N/A",
                )
                for i in range(workers)
            ],
        )
    ]


@router.get(
    "/models/{model_name}",
    response_model=list[TorchServeModelDescription],
    responses=TORCHSERVE_ERRORS,
    summary="TorchServe: describe a model",
)
async def describe(
    model_name: ModelName, service: ServiceDep, settings: SettingsDep
) -> list[TorchServeModelDescription]:
    return _describe(service, settings, model_name, None)


@router.get(
    "/models/{model_name}/{model_version}",
    response_model=list[TorchServeModelDescription],
    responses=TORCHSERVE_ERRORS,
    summary="TorchServe: describe a model version",
)
async def describe_version(
    model_name: ModelName, model_version: str, service: ServiceDep, settings: SettingsDep
) -> list[TorchServeModelDescription]:
    return _describe(service, settings, model_name, model_version)


_PREDICT: Final[dict[str, Any]] = {  # POST, and PUT (what `curl -T` sends)
    "response_model": None,
    "responses": _PREDICTIONS_RESPONSES,
    "openapi_extra": {"requestBody": _REQUEST_BODY},
}


async def predictions(
    request: Request, model_name: ModelName, service: ServiceDep, settings: SettingsDep
) -> JSONResponse:
    """The top 5 classes, as TorchServe's ``image_classifier`` handler answers.

    ```
    curl http://127.0.0.1:8000/predictions/efficientnet_lite0 -T kitten.jpg
    curl http://127.0.0.1:8000/predictions/efficientnet_lite0 -F data=@kitten.jpg
    ```
    """
    return await _predict(request, service, settings, model_name, None)


async def version_predictions(
    request: Request, model_name: ModelName, model_version: str, service: ServiceDep, settings: SettingsDep
) -> JSONResponse:
    return await _predict(request, service, settings, model_name, model_version)


# One route takes both POST and PUT (what `curl -T` sends), so that a 405 names both in Allow; the schema
# documents each method as a route of its own, never reached (FastAPI gives every method of one route the
# same operation id, and OpenAPI wants them unique).
for _path, _endpoint, _summary in (
    ("/predictions/{model_name}", predictions, "TorchServe: classify images"),
    ("/predictions/{model_name}/{model_version}", version_predictions, "TorchServe: classify with a model version"),
):
    router.add_api_route(_path, _endpoint, methods=["POST", "PUT"], include_in_schema=False, **_PREDICT)
    for _method in ("POST", "PUT"):
        router.add_api_route(
            _path,
            _endpoint,
            methods=[_method],
            operation_id=f"{_endpoint.__name__}_{_method.lower()}",
            summary=_summary,
            **_PREDICT,
        )


async def _predict(
    request: Request, service: ModelService, settings: Settings, name: str, version: str | None
) -> JSONResponse:
    started = time.perf_counter()
    _served(service, name, version)  # 503/404 before reading a body we could not use
    service.ensure_capacity()
    check_identity_encoding(request.headers)
    length = request.headers.get("content-length")
    with service.uploads.lease() as lease:
        async with asyncio.timeout(settings.request_timeout_s):
            try:
                uploads = await read_uploads(
                    request.headers.get("content-type"),
                    int(length) if length and length.isascii() and length.isdigit() else None,
                    request.stream(),
                    lease,
                    max_files=settings.max_files,
                    max_image_bytes=settings.max_image_bytes,
                    max_request_bytes=settings.max_request_bytes,
                    fields=_FIELDS,
                )
            except InvalidUpload as exc:
                if exc.code != "no_image":
                    raise
                raise InvalidUpload(
                    "no_image",
                    "The request has no image. Send it as the body (curl -T kitten.jpg ...) "
                    "or as a multipart 'data' part (curl -F data=@kitten.jpg ...).",
                ) from None
            results = await service.classify(uploads, TOP_K, "torchserve", started)
    answers = [{p.label: p.probability for p in r.predictions} for r in results]
    return JSONResponse(answers[0] if len(answers) == 1 else answers)
