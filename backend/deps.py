"""Typed dependencies shared by the routers.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, so each of these
cost a hand-off to a worker thread and back on every request (two per ``/predict``: 60 us of CPU, measured in
docs/profile.md), for reading an attribute.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from backend.config import Settings
from backend.metrics import Metrics
from backend.service import ModelService


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _service(request: Request) -> ModelService:
    service: ModelService = request.app.state.service
    return service


async def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[Settings, Depends(_settings)]
ServiceDep = Annotated[ModelService, Depends(_service)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
