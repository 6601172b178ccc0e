from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from backend.deps import ServiceDep, SettingsDep
from backend.errors import RETRY_LATER_S
from backend.schemas import (
    ErrorResponse,
    HealthResponse,
    ModelResponse,
    PreprocessingInfo,
    ProtocolRoutes,
    ReadyResponse,
)
from backend.service import ModelService

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=HealthResponse,
    response_model_exclude_none=True,
    responses={503: {"model": HealthResponse, "description": "inference or decoding is wedged: restart"}},
    summary="Liveness: the process answers and its inference and decoders make progress",
)
async def health(request: Request) -> HealthResponse | JSONResponse:
    service: ModelService | None = getattr(request.app.state, "service", None)  # None before the lifespan runs
    problem = service.health() if service is not None else None
    if problem is None:
        return HealthResponse()
    return JSONResponse(HealthResponse(status="wedged", detail=problem).model_dump(), status_code=503)


@router.get(
    "/ready",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "loading, failed, or shutting down"}},
    summary="Readiness: the model is loaded and warmed up",
)
async def ready(service: ServiceDep) -> ReadyResponse | JSONResponse:
    if service.state == "ready" and not service.draining:
        return ReadyResponse(status="ready")
    state = "stopping" if service.draining else service.state
    body = ReadyResponse(status=state, detail=service.error)
    return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": str(RETRY_LATER_S)})


@router.get(
    "/model",
    response_model=ModelResponse,
    responses={503: {"model": ErrorResponse, "description": "the model is not loaded"}},
    summary="The model being served and how inputs are prepared for it",
)
async def model(service: ServiceDep, settings: SettingsDep) -> ModelResponse:
    classifier, _, _ = service.ensure_ready()
    info = classifier.info
    p = info.preprocessing
    return ModelResponse(
        name=info.name,
        version=classifier.version,
        weights=info.weights,
        source=info.source,
        runtime=classifier.runtime.name,
        num_classes=info.num_classes,
        input_size=(p.crop_size, p.crop_size, 3),
        preprocessing=PreprocessingInfo(
            resize_size=p.resize_size, crop_size=p.crop_size, mean=p.mean, std=p.std, interpolation=p.interpolation
        ),
        max_batch_size=settings.max_batch_size,
        max_files=settings.max_files,
        max_image_bytes=settings.max_image_bytes,
        max_image_pixels=settings.max_image_pixels,
        protocols=ProtocolRoutes(
            v2_metadata=f"/v2/models/{info.name}",
            v2_infer=f"/v2/models/{info.name}/infer",
            torchserve_predictions=f"/predictions/{info.name}",
        ),
    )
