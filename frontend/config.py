"""The frontend's configuration: environment variables, read and validated in one place (pydantic-settings,
as the backend's ``backend/config.py``).

Nothing here imports Streamlit, so ``python -m frontend`` can check the configuration before starting it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

import annotated_types
from pydantic import BeforeValidator, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails, PydanticCustomError, PydanticUseDefault
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "DEFAULT_BACKEND_SERVICE",
    "DEFAULT_MAX_FILES",
    "DEFAULT_MAX_UPLOAD_MB",
    "DEFAULT_REGION",
    "AuthMode",
    "ConfigError",
    "FrontendSettings",
    "LogLevel",
    "TraceExporter",
]

AuthMode = Literal["auto", "none", "id_token"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
TraceExporter = Literal["none", "gcp", "console"]

DEFAULT_BACKEND_SERVICE = "classifier-backend"
DEFAULT_REGION = "europe-west1"
# The backend's MAX_IMAGE_BYTES default is 20 MiB; Streamlit's upload limit is in MiB too. Keep it at or
# under the backend's: a larger file would only be refused (the page says so without sending it).
DEFAULT_MAX_UPLOAD_MB = 20
# The most images classified (and previewed) per page run; more are listed as not classified.
DEFAULT_MAX_FILES = 16


class ConfigError(ValueError):
    """A setting has a value the frontend cannot use; the message names the variable and what it expects."""


def _case_insensitive(options: tuple[str, ...]) -> BeforeValidator:
    """``auto``/``AUTO``, ``info``/``INFO``: the option in its own case; anything else as typed, for the message."""

    def normalise(value: object) -> object:
        if isinstance(value, str):
            for option in options:
                if value.strip().lower() == option.lower():
                    return option
        return value

    return BeforeValidator(normalise)


def _full_url(value: object) -> object:
    if isinstance(value, str):
        value = value.strip()
        if not value.startswith(("http://", "https://")) or len(value) <= len("https://"):
            raise PydanticCustomError(
                "full_url", "must be a full URL such as http://127.0.0.1:8000 or https://....run.app."
            )
        return value.rstrip("/")
    return value


class FrontendSettings(BaseSettings):
    """Every field is the environment variable of the same name in upper case (``BACKEND_URL``, ...).

    ``FrontendSettings.from_env()`` reads them (``ConfigError`` for a bad one); ``FrontendSettings(...)`` with
    keyword arguments (tests) takes the rest from the environment too, as pydantic-settings does.
    """

    # No .env file: ``make run`` starts both services from the same directory, and the backend's .env (PORT,
    # MAX_FILES, LOG_LEVEL ...) must not configure the frontend. Frozen: hashable for st.cache_resource.
    model_config = SettingsConfigDict(env_file=None, str_strip_whitespace=True, frozen=True)

    # --- where the backend is
    backend_url: Annotated[str | None, BeforeValidator(_full_url)] = Field(
        None, description="explicit URL; skips the Cloud Run lookup"
    )
    backend_service: str = Field(DEFAULT_BACKEND_SERVICE, description="the Cloud Run service to look up")
    google_cloud_project: str | None = Field(None, description="else the project google.auth.default() knows")
    # else the region this Cloud Run instance runs in, else DEFAULT_REGION
    google_cloud_region: str | None = None
    cloud_run_region: str | None = Field(None, description="when GOOGLE_CLOUD_REGION is not set")
    cloud_run_api_endpoint: str | None = Field(None, description="tests and emulators only")
    discovery_timeout_s: float = Field(10.0, ge=0.1, le=300)

    # --- how to call it
    backend_auth: Annotated[AuthMode, _case_insensitive(get_args(AuthMode))] = "auto"
    backend_audience: str | None = Field(
        None, description="identity-token audience when it differs from the URL (custom domains)"
    )
    backend_timeout_s: float = Field(
        35.0, ge=0.1, le=3600, description="per image; a little over the backend's REQUEST_TIMEOUT_S (30 s)"
    )
    status_timeout_s: float = Field(5.0, ge=0.1, le=300, description="/ready and /model")
    predict_concurrency: int = Field(4, ge=1, le=64, description="images sent at once; the backend batches them")

    # --- the optional plotting service (plotter/): off unless PLOTTER_URL or PLOTTER_SERVICE is set. It is
    # found and called as the backend is (BACKEND_AUTH's identity tokens, the Cloud Run lookup).
    plotter_url: Annotated[str | None, BeforeValidator(_full_url)] = Field(
        None, description="explicit URL; skips the Cloud Run lookup"
    )
    plotter_service: str | None = Field(None, description="the plotter's Cloud Run service to look up")
    plotter_timeout_s: float = Field(2.0, ge=0.1, le=30, description="the most a page run waits for a chart")

    # --- the page and the server
    default_top_k: int = Field(5, ge=1, le=20)
    max_upload_mb: int = Field(DEFAULT_MAX_UPLOAD_MB, ge=1, le=1024, description="per file")
    max_files: int = Field(DEFAULT_MAX_FILES, ge=1, le=1000, description="images classified per page run")
    host: str = "127.0.0.1"
    port: int = Field(8501, ge=1, le=65535)
    log_level: Annotated[LogLevel, _case_insensitive(get_args(LogLevel))] = "INFO"

    # --- traces (docs/monitoring.md, "Traces"): the backend's settings of the same names
    trace_exporter: Annotated[TraceExporter, _case_insensitive(get_args(TraceExporter))] = Field(
        "none", description="none (no tracing, no trace headers sent), gcp (Cloud Trace) or console (stdout)"
    )
    trace_sample_ratio: float = Field(1.0, ge=0.0, le=1.0, description="share of page runs traced")

    # --- the Monitoring page (frontend/drift.py; docs/monitoring.md#drift)
    prediction_log_dir: str | None = Field(
        None, description="the prediction log's folder (on Cloud Run: the log bucket, mounted read-only)"
    )
    monitoring_reference: str | None = Field(
        None, description="a reference set (Parquet file or folder); else the days before the current window"
    )
    monitoring_current_hours: float = Field(24.0, ge=0.1, le=24 * 366, description="the current window")
    monitoring_reference_days: float = Field(7.0, ge=0.1, le=366, description="the reference window before it")
    monitoring_max_rows: int = Field(200_000, ge=100, le=10_000_000, description="records read, newest first")
    monitoring_max_mb: int = Field(256, ge=1, le=8192, description="megabytes of Parquet files read, newest first")

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """An empty (or all-blank) variable means "not set": the default applies."""
        if isinstance(value, str) and not value.strip():
            raise PydanticUseDefault
        return value

    @property
    def project(self) -> str | None:
        return self.google_cloud_project

    @property
    def region(self) -> str | None:
        return self.google_cloud_region or self.cloud_run_region

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FrontendSettings:
        """The settings from ``environ`` (default: the process's environment); ConfigError naming the first bad
        variable and what it expects."""
        try:
            if environ is None:
                return cls()
            # Every field is given (a blank one takes its default), so nothing is read from os.environ.
            given: dict[str, Any] = {name: environ.get(name.upper(), "") for name in cls.model_fields}
            return cls(**given)
        except ValidationError as exc:
            raise ConfigError(_message(exc.errors()[0])) from None


def _message(error: ErrorDetails) -> str:
    """``NAME='value' must be ...``: pydantic's error for one field, in the words the page shows."""
    field = str(error["loc"][0]) if error["loc"] else ""
    info = FrontendSettings.model_fields.get(field)
    if info is None:
        return error["msg"]
    raw: Any = error.get("input")
    kind = error["type"]
    if kind in ("int_parsing", "int_from_float", "int_type"):
        problem = "is not a whole number."
    elif kind in ("float_parsing", "float_type"):
        problem = "is not a number."
    elif kind in ("greater_than_equal", "less_than_equal"):
        low = next(m.ge for m in info.metadata if isinstance(m, annotated_types.Ge))
        high = next(m.le for m in info.metadata if isinstance(m, annotated_types.Le))
        problem = f"must be between {low:g} and {high:g}."
    elif kind == "literal_error":
        problem = f"must be one of: {', '.join(get_args(info.annotation))}."
    else:  # our own (PydanticCustomError), or pydantic's
        problem = error["msg"]
    return f"{field.upper()}={raw!r} {problem}"
