"""The frontend's configuration: environment variables, read and validated in one place.

Nothing here imports Streamlit, so ``python -m frontend`` can check the configuration before starting it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar, cast, get_args

AuthMode = Literal["auto", "none", "id_token"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

DEFAULT_BACKEND_SERVICE = "classifier-backend"
DEFAULT_REGION = "europe-west1"
# The backend's MAX_IMAGE_BYTES default is 20 MiB; Streamlit's upload limit is in MiB too. Keep it at or
# under the backend's: a larger file would only be refused (the page says so without sending it).
DEFAULT_MAX_UPLOAD_MB = 20
# The most images classified (and previewed) per page run; more are listed as not classified.
DEFAULT_MAX_FILES = 16

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting has a value the frontend cannot use; the message names the variable and what it expects."""


@dataclass(frozen=True)
class FrontendSettings:
    """Every field is the environment variable of the same name in upper case, unless its comment says otherwise."""

    # --- where the backend is
    backend_url: str | None = None  # explicit URL; skips the Cloud Run lookup
    backend_service: str = DEFAULT_BACKEND_SERVICE  # the Cloud Run service to look up
    project: str | None = None  # GOOGLE_CLOUD_PROJECT; else the project google.auth.default() knows
    # GOOGLE_CLOUD_REGION or CLOUD_RUN_REGION; else the region this Cloud Run instance runs in, else DEFAULT_REGION
    region: str | None = None
    cloud_run_api_endpoint: str | None = None  # CLOUD_RUN_API_ENDPOINT: tests and emulators only
    discovery_timeout_s: float = 10.0

    # --- how to call it
    backend_auth: AuthMode = "auto"
    backend_audience: str | None = None  # identity-token audience when it differs from the URL (custom domains)
    backend_timeout_s: float = 35.0  # per image; a little over the backend's REQUEST_TIMEOUT_S (30 s)
    status_timeout_s: float = 5.0  # STATUS_TIMEOUT_S: /ready and /model
    predict_concurrency: int = 4  # images sent at once; the backend batches them

    # --- the page and the server
    default_top_k: int = 5
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB  # per file
    max_files: int = DEFAULT_MAX_FILES  # images classified per page run
    host: str = "127.0.0.1"
    port: int = 8501
    log_level: LogLevel = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FrontendSettings:
        """Read the settings from ``env`` (default: ``os.environ``); raise ConfigError naming a bad variable."""
        env = os.environ if env is None else env

        def text(*names: str) -> str | None:
            for name in names:
                value = env.get(name, "").strip()
                if value:
                    return value
            return None

        def number(name: str, default: T, parse: Callable[[str], T], minimum: float, maximum: float) -> T:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = parse(raw)
            except ValueError:
                kind = "a whole number" if parse is int else "a number"
                raise ConfigError(f"{name}={raw!r} is not {kind}.") from None
            if not minimum <= cast(float, value) <= maximum:
                raise ConfigError(f"{name}={raw!r} must be between {minimum:g} and {maximum:g}.")
            return value

        def choice(name: str, default: str, options: tuple[str, ...], upper: bool = False) -> str:
            raw = text(name)
            if raw is None:
                return default
            value = raw.upper() if upper else raw.lower()
            if value not in options:
                raise ConfigError(f"{name}={raw!r} must be one of: {', '.join(options)}.")
            return value

        backend_url = text("BACKEND_URL")
        if backend_url is not None:
            backend_url = _check_url("BACKEND_URL", backend_url)
        endpoint = text("CLOUD_RUN_API_ENDPOINT")
        defaults = cls()
        return cls(
            backend_url=backend_url,
            backend_service=text("BACKEND_SERVICE") or DEFAULT_BACKEND_SERVICE,
            project=text("GOOGLE_CLOUD_PROJECT"),
            region=text("GOOGLE_CLOUD_REGION", "CLOUD_RUN_REGION"),
            cloud_run_api_endpoint=endpoint,
            discovery_timeout_s=number("DISCOVERY_TIMEOUT_S", defaults.discovery_timeout_s, float, 0.1, 300),
            backend_auth=cast(AuthMode, choice("BACKEND_AUTH", defaults.backend_auth, get_args(AuthMode))),
            backend_audience=text("BACKEND_AUDIENCE"),
            backend_timeout_s=number("BACKEND_TIMEOUT_S", defaults.backend_timeout_s, float, 0.1, 3600),
            status_timeout_s=number("STATUS_TIMEOUT_S", defaults.status_timeout_s, float, 0.1, 300),
            predict_concurrency=number("PREDICT_CONCURRENCY", defaults.predict_concurrency, int, 1, 64),
            default_top_k=number("DEFAULT_TOP_K", defaults.default_top_k, int, 1, 20),
            max_upload_mb=number("MAX_UPLOAD_MB", defaults.max_upload_mb, int, 1, 1024),
            max_files=number("MAX_FILES", defaults.max_files, int, 1, 1000),
            host=text("HOST") or defaults.host,
            port=number("PORT", defaults.port, int, 1, 65535),
            log_level=cast(LogLevel, choice("LOG_LEVEL", defaults.log_level, get_args(LogLevel), upper=True)),
        )


def _check_url(name: str, value: str) -> str:
    if not value.startswith(("http://", "https://")) or len(value) <= len("https://"):
        raise ConfigError(f"{name}={value!r} must be a full URL such as http://127.0.0.1:8000 or https://....run.app.")
    return value.rstrip("/")
