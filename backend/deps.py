"""Typed dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from backend.config import Settings
from backend.metrics import Metrics
from backend.service import ModelService


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _service(request: Request) -> ModelService:
    service: ModelService = request.app.state.service
    return service


def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[Settings, Depends(_settings)]
ServiceDep = Annotated[ModelService, Depends(_service)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
