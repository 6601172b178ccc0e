from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from backend.deps import MetricsDep, ServiceDep
from backend.server import STATS as CONNECTIONS

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
    if (decoders := service.decoders) is not None:
        metrics.decodes_in_progress.set(decoders.busy)
        metrics.decode_memory.set(decoders.memory_in_use)
        for reason, count in decoders.stopped.items():
            metrics.decodes_stopped.labels(reason).set(count)
    metrics.upload_memory.set(service.uploads.in_use)
    metrics.open_connections.set(CONNECTIONS.open_connections)
    for reason, count in CONNECTIONS.refused.items():
        metrics.connections_refused.labels(reason).set(count)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
