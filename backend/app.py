"""The FastAPI application: routers, error handlers, middleware, and the model's lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from backend import __version__
from backend.auth import GoogleIdTokenVerifier
from backend.config import Settings, get_settings
from backend.errors import install_error_handlers
from backend.metrics import Metrics
from backend.middleware import IdTokenAuthMiddleware, ObservabilityMiddleware
from backend.routes import explain, health, metrics, predict, torchserve, v2
from backend.service import ClassifierFactory, ModelService, default_factory
from backend.tracing import install as install_tracing
from common.tracing import logs_traces, set_log_project

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    classifier_factory: ClassifierFactory = default_factory,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The app; ``tracer_provider`` traces its requests whatever TRACE_EXPORTER says (tests: an in-memory one)."""
    settings = settings or get_settings()
    app_metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = ModelService(settings, app_metrics, classifier_factory)
        service.tracing = tracing
        if settings.prediction_log_dir is not None:  # else no thread, no queue, and pyarrow is not imported
            from backend.predictions import PredictionLog

            service.prediction_log = PredictionLog.from_settings(settings, app_metrics)
        app.state.service = service
        service.start()  # loads in the background; /ready says 503 until it is done
        try:
            yield
        finally:
            await service.stop(settings.shutdown_grace_s)
            if service.prediction_log is not None:  # writes what is queued, within the grace period
                await asyncio.to_thread(service.prediction_log.close, settings.shutdown_grace_s)
            if tracing is not None:
                tracing.close()

    app = FastAPI(
        title="Image classifier",
        version=__version__,
        summary="ImageNet (or your own) image classification behind POST /predict, the Open Inference Protocol v2 "
        "(KServe, Triton) and TorchServe's inference API.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = app_metrics
    install_error_handlers(app)
    for router in (predict.router, explain.router, health.router, metrics.router, v2.router, torchserve.router):
        app.include_router(router)
    if settings.auth_audience:  # optional token check; inside CORS so preflights and 401s get CORS headers
        verifier = GoogleIdTokenVerifier(settings.auth_audience, settings.auth_certs_url, settings.auth_allowed_emails)
        app.add_middleware(IdTokenAuthMiddleware, verifier=verifier)
    if settings.cors_origins:  # closed by default: the frontend calls the backend server-side
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"], allow_headers=["*"]
        )
    set_log_project(settings.google_cloud_project)
    tracing = install_tracing(app, settings, tracer_provider)  # None (and nothing installed) when off
    app.add_middleware(
        ObservabilityMiddleware,
        metrics=app_metrics,
        access_log=settings.access_log,
        # Tracing off, on Cloud Run (or with a project id): log lines still carry Cloud Run's trace.
        cloud_trace_header=tracing is None and logs_traces(),
    )
    return app


def app_factory() -> FastAPI:
    """Entry point for ``uvicorn --factory backend.app:app_factory``."""
    return create_app()
