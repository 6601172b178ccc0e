"""All configuration, from environment variables (or a ``.env`` file), validated once."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ByteSize, Field, NonNegativeFloat, PositiveFloat, PositiveInt, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.classifier import EMBEDDED_MODEL, ImageLimits, ModelSpec, Precision, RuntimeName
from backend.server import ConnectionLimits
from common.settings import CommaSeparated

KiB = 1024
MiB = 1024 * KiB
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"


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
    model_dir: Path | None = Field(
        None,
        description="serve the exported bundle in this folder (python -m backend.prefetch --export-to) instead of "
        "MODEL_NAME / MODEL_CHECKPOINT: no torch, no image rebuild (on Cloud Run, a Cloud Storage mount)",
    )
    runtime: RuntimeName = Field(
        "openvino",
        description="openvino (OpenVINO), onnx (ONNX Runtime, the same ONNX export) or torch (eager PyTorch)",
    )
    precision: Precision = Field(
        "fp32", description="int8: the NNCF-quantized export, faster but not passing the accuracy gate (openvino only)"
    )
    model_cache_dir: Path = Field(default_factory=_default_cache_dir, description="where ONNX exports are kept")
    inference_threads: int = Field(0, ge=0, description="CPU threads for inference; 0 = one per CPU")

    # --- batching and backpressure
    max_batch_size: PositiveInt = Field(
        1, description="most images in one forward pass; 1: on CPUs one image per pass is the cheapest (BENCHMARKS.md)"
    )
    max_batch_delay_ms: NonNegativeFloat = Field(0.0, description="extra wait for a fuller batch")
    max_queue_size: PositiveInt = Field(64, description="images waiting for the model before 503")
    request_timeout_s: PositiveFloat = 30.0

    # --- limits on what users send
    max_image_bytes: ByteSize = Field(ByteSize(20 * MiB), gt=0, description="per image")
    max_image_pixels: PositiveInt = 50_000_000
    max_files: PositiveInt = 16
    max_request_bytes: ByteSize = Field(
        ByteSize(32 * MiB), gt=0, description="per request body (Cloud Run's HTTP/1 front end refuses more)"
    )
    default_top_k: Annotated[int, Field(ge=1, le=1000)] = 5

    # --- budgets that stop hostile input (see docs/reliability.md)
    upload_memory_bytes: ByteSize = Field(
        ByteSize(320 * MiB), gt=0, description="request bodies held in memory by all requests together"
    )
    decode_timeout_s: PositiveFloat = Field(3.0, description="CPU seconds one image may take to decode")
    decode_memory_bytes: ByteSize = Field(
        ByteSize(1024 * MiB), gt=0, description="memory all image decodes may use together (and one at most)"
    )
    decode_processes: int = Field(0, ge=0, description="decoder processes at normal priority; 0 = two per CPU")
    stall_timeout_s: PositiveFloat = Field(
        60.0, description="a forward pass or normal-priority decode running longer makes /health fail"
    )

    # --- the batch job, python -m backend.batch (docs/batch.md); Cloud Run jobs set CLOUD_RUN_TASK_*
    cloud_run_task_index: int = Field(0, ge=0, description="this task's share of the input: 0 .. count - 1")
    cloud_run_task_count: PositiveInt = Field(1, description="how many tasks share the input")
    job_batch_size: PositiveInt = Field(1, description="images per forward pass (1: the most images/s on CPUs)")
    job_shard_images: PositiveInt = Field(10_000, description="results per shard: a killed task redoes at most this")
    job_shard_seconds: PositiveFloat = Field(120.0, description="...or at most this much work: a shard is cut then")
    job_progress_interval_s: PositiveFloat = Field(30.0, description="progress log lines when not on a terminal")

    # --- HTTP
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    max_header_bytes: ByteSize = Field(ByteSize(16 * KiB), ge=1024, description="request line and headers")
    header_timeout_s: PositiveFloat = Field(10.0, description="from a request's first byte to its last header")
    keep_alive_timeout_s: PositiveFloat = Field(75.0, description="idle connections, new ones included")
    max_connections: PositiveInt = Field(1000, description="open connections; beyond, 503 at once")
    cors_origins: CommaSeparated = Field(default_factory=list)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    access_log: bool = True
    shutdown_grace_s: PositiveFloat = Field(8.0, description="time in-flight requests get after SIGTERM")

    # --- traces (docs/monitoring.md, "Traces")
    trace_exporter: Literal["none", "gcp", "console"] = Field(
        "none", description="none (no tracing at all), gcp (Cloud Trace) or console (spans as JSON lines on stdout)"
    )
    trace_sample_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="share of the traces that start here; a caller's sampled flag decides for the others",
    )
    google_cloud_project: str | None = Field(
        None, description="for log lines' trace field and Cloud Trace; else the metadata server's (on Cloud Run)"
    )

    # --- the prediction log (docs/monitoring.md, "Prediction log"): unset PREDICTION_LOG_DIR = off, no cost
    prediction_log_dir: Path | None = Field(
        None, description="write a Parquet record per classified image under this folder (Cloud Run: a bucket mount)"
    )
    prediction_log_flush_s: PositiveFloat = Field(60.0, description="a file at least this often while records come")
    prediction_log_max_rows: PositiveInt = Field(10_000, description="records per file at most")
    prediction_log_queue: PositiveInt = Field(
        4096, description="records waiting for the writer; beyond, they are dropped and counted (a slow sink)"
    )

    # --- optional token check, for hosting outside Cloud Run (there, the platform's IAM check does it)
    auth_audience: str | None = Field(None, description="require a Google-signed ID token with this audience")
    auth_certs_url: str = Field(GOOGLE_CERTS_URL, description="Google's token signing certificates (PEM format)")
    auth_allowed_emails: CommaSeparated = Field(
        default_factory=list, description="with AUTH_AUDIENCE: only these verified token emails may call"
    )

    @field_validator("auth_audience", "model_dir", "google_cloud_project", "prediction_log_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _precision_has_its_runtime(self) -> Settings:
        if self.precision != "fp32" and self.runtime != "openvino":
            raise ValueError(f"PRECISION={self.precision} runs on OpenVINO only: set RUNTIME=openvino")
        return self

    @model_validator(mode="after")
    def _bundle_has_its_runtime(self) -> Settings:
        if self.model_dir is not None and self.runtime == "torch":
            raise ValueError("MODEL_DIR serves an exported bundle: set RUNTIME=openvino or onnx (not torch)")
        if self.model_dir is not None and self.precision != "fp32":
            # The INT8 model would be made beside the bundle, with NNCF, which the serving image lacks.
            raise ValueError("MODEL_DIR serves the bundle's FP32 model: unset PRECISION (or set it to fp32)")
        return self

    @model_validator(mode="after")
    def _one_request_fits(self) -> Settings:
        if self.max_files > self.max_queue_size:
            raise ValueError(
                f"MAX_FILES ({self.max_files}) exceeds MAX_QUEUE_SIZE ({self.max_queue_size}): "
                "a request with that many images could never be admitted"
            )
        if self.max_request_bytes > self.upload_memory_bytes:
            raise ValueError(
                f"MAX_REQUEST_BYTES ({self.max_request_bytes}) exceeds UPLOAD_MEMORY_BYTES "
                f"({self.upload_memory_bytes}): a request that large could never be read"
            )
        return self

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
    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(
            max_header_bytes=self.max_header_bytes,
            header_timeout_s=self.header_timeout_s,
            keep_alive_timeout_s=self.keep_alive_timeout_s,
            max_connections=self.max_connections,
            drain_bytes=2 * self.max_request_bytes,
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()
