from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from backend.deps import MetricsDep, ServiceDep

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics",
)
async def metrics(metrics: MetricsDep, service: ServiceDep) -> Response:
    if service.batcher is not None:
        metrics.queue_depth.set(service.batcher.queue_depth)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
