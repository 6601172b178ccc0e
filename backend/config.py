"""All configuration, from environment variables (or a ``.env`` file), validated once."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from backend.auth import GOOGLE_CERTS_URL
from backend.classifier import EMBEDDED_MODEL, ImageLimits, ModelSpec, RuntimeName


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "image-classifier"


class Settings(BaseSettings):
    """Every setting is an environment variable of the same name in upper case (``MODEL_NAME``, ...)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", protected_namespaces=())

    # --- the model
    model_name: str = Field(EMBEDDED_MODEL, description="efficientnet_lite0 (embedded) or a torchvision model name")
    model_weights: str = Field("DEFAULT", description="member of the torchvision weights enum")
    model_checkpoint: Path | None = Field(None, description="fine-tuned state dict for MODEL_NAME's architecture")
    model_labels: Path | None = Field(None, description="class names of the checkpoint, one per line")
    runtime: RuntimeName = Field("onnx", description="onnx (ONNX Runtime, fast) or torch (eager PyTorch)")
    model_cache_dir: Path = Field(default_factory=_default_cache_dir, description="where ONNX exports are kept")
    inference_threads: int = Field(0, ge=0, description="CPU threads for inference; 0 = one per CPU")

    # --- batching and backpressure
    max_batch_size: PositiveInt = 8
    max_batch_delay_ms: NonNegativeFloat = Field(0.0, description="extra wait for a fuller batch")
    max_queue_size: PositiveInt = Field(64, description="images waiting for the model before 503")
    request_timeout_s: PositiveFloat = 30.0

    # --- limits on what users send
    max_image_bytes: PositiveInt = 20 * 1024 * 1024
    max_image_pixels: PositiveInt = 50_000_000
    max_files: PositiveInt = 16
    default_top_k: Annotated[int, Field(ge=1, le=1000)] = 5

    # --- HTTP
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    access_log: bool = True
    shutdown_grace_s: PositiveFloat = Field(8.0, description="time in-flight requests get after SIGTERM")

    # --- optional token check, for hosting outside Cloud Run (there, the platform's IAM check does it)
    auth_audience: str | None = Field(None, description="require a Google-signed ID token with this audience")
    auth_certs_url: str = Field(GOOGLE_CERTS_URL, description="Google's token signing certificates (PEM format)")
    auth_allowed_emails: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="with AUTH_AUDIENCE: only these verified token emails may call"
    )

    @field_validator("auth_audience", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("auth_allowed_emails", mode="before")
    @classmethod
    def _split_emails(cls, value: object) -> object:
        if isinstance(value, str):
            return [email.strip() for email in value.split(",") if email.strip()]
        return value

    @model_validator(mode="after")
    def _one_request_fits_the_queue(self) -> Settings:
        if self.max_files > self.max_queue_size:
            raise ValueError(
                f"MAX_FILES ({self.max_files}) exceeds MAX_QUEUE_SIZE ({self.max_queue_size}): "
                "a request with that many images could never be admitted"
            )
        return self

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def model_spec(self) -> ModelSpec:
        return ModelSpec(self.model_name, self.model_weights, self.model_checkpoint, self.model_labels)

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels)

    @property
    def max_body_bytes(self) -> int:
        """The largest request body worth reading: every file at its limit, plus multipart framing."""
        return self.max_files * (self.max_image_bytes + 16 * 1024)


@lru_cache
def get_settings() -> Settings:
    return Settings()
