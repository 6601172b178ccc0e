"""Configuration from the environment, and the rule that only the page imports Streamlit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from frontend.config import ConfigError, FrontendSettings
from tests.helpers import ROOT


def test_defaults() -> None:
    settings = FrontendSettings.from_env({})

    assert settings.backend_url is None
    assert settings.backend_service == "classifier-backend"
    assert (settings.project, settings.region) == (None, None)
    assert settings.backend_auth == "auto"
    assert (settings.host, settings.port) == ("127.0.0.1", 8501)
    assert settings.max_upload_mb == 20  # the backend's MAX_IMAGE_BYTES default, 20 MiB
    assert settings.max_files == 16
    assert settings.backend_timeout_s == 35.0


def test_every_variable_is_read() -> None:
    settings = FrontendSettings.from_env(
        {
            "BACKEND_URL": "https://classifier-backend-abc-ew.a.run.app/",
            "BACKEND_SERVICE": "my-backend",
            "GOOGLE_CLOUD_PROJECT": "my-project",
            "CLOUD_RUN_REGION": "us-central1",
            "CLOUD_RUN_API_ENDPOINT": "http://127.0.0.1:9",
            "BACKEND_AUTH": "ID_TOKEN",
            "BACKEND_AUDIENCE": "https://aud.example",
            "BACKEND_TIMEOUT_S": "2.5",
            "STATUS_TIMEOUT_S": "1",
            "PREDICT_CONCURRENCY": "8",
            "DEFAULT_TOP_K": "3",
            "MAX_UPLOAD_MB": "10",
            "MAX_FILES": "40",
            "HOST": "0.0.0.0",
            "PORT": "8080",
            "LOG_LEVEL": "debug",
        }
    )

    assert settings == FrontendSettings(
        backend_url="https://classifier-backend-abc-ew.a.run.app",
        backend_service="my-backend",
        google_cloud_project="my-project",
        cloud_run_region="us-central1",
        cloud_run_api_endpoint="http://127.0.0.1:9",
        backend_auth="id_token",
        backend_audience="https://aud.example",
        backend_timeout_s=2.5,
        status_timeout_s=1.0,
        predict_concurrency=8,
        default_top_k=3,
        max_upload_mb=10,
        max_files=40,
        host="0.0.0.0",
        port=8080,
        log_level="DEBUG",
    )


def test_google_cloud_region_wins_over_cloud_run_region() -> None:
    settings = FrontendSettings.from_env({"GOOGLE_CLOUD_REGION": "asia-east1", "CLOUD_RUN_REGION": "us-east1"})

    assert settings.region == "asia-east1"


def test_the_environment_is_read_as_pydantic_settings_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_URL", " http://127.0.0.1:8000/ ")
    monkeypatch.setenv("BACKEND_SERVICE", "   ")  # blank: the default
    monkeypatch.setenv("CLOUD_RUN_REGION", "us-east4")
    monkeypatch.setenv("LOG_LEVEL", "warning")

    settings = FrontendSettings.from_env()

    assert settings == FrontendSettings.from_env(
        {"BACKEND_URL": "http://127.0.0.1:8000", "CLOUD_RUN_REGION": "us-east4", "LOG_LEVEL": "WARNING"}
    )
    assert (settings.backend_url, settings.backend_service, settings.region) == (
        "http://127.0.0.1:8000",
        "classifier-backend",
        "us-east4",
    )
    monkeypatch.setenv("PORT", "eighty")
    with pytest.raises(ConfigError, match=r"^PORT='eighty' is not a whole number\.$"):
        FrontendSettings.from_env()


def test_a_dotenv_file_does_not_configure_the_frontend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``make run`` starts both services in one directory: the backend's .env (PORT=...) is not the frontend's."""
    (tmp_path / ".env").write_text("PORT=9000\nBACKEND_URL=http://127.0.0.1:9\n")
    monkeypatch.chdir(tmp_path)

    settings = FrontendSettings.from_env()

    assert (settings.port, settings.backend_url) == (8501, None)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("BACKEND_URL", "127.0.0.1:8000", "must be a full URL"),
        ("BACKEND_AUTH", "always", "must be one of: auto, none, id_token"),
        ("BACKEND_TIMEOUT_S", "soon", "is not a number"),
        ("BACKEND_TIMEOUT_S", "0", "must be between"),
        ("PORT", "80.5", "is not a whole number"),
        ("PORT", "70000", "must be between 1 and 65535"),
        ("MAX_FILES", "0", "must be between 1 and 1000"),
        ("MAX_FILES", "many", "is not a whole number"),
        ("LOG_LEVEL", "loud", "must be one of: DEBUG, INFO, WARNING, ERROR"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        FrontendSettings.from_env({variable: value})

    assert str(caught.value).startswith(f"{variable}={value!r}")


@pytest.mark.slow  # a fresh interpreter importing the package
def test_only_the_page_imports_streamlit() -> None:
    code = (
        "import sys\n"
        "import frontend._transport, frontend.auth, frontend.backend_client, frontend.config, frontend.discovery\n"
        "import frontend.logs, frontend.presentation, frontend.previews, frontend.samples, frontend.__main__\n"
        "assert 'streamlit' not in sys.modules, 'a non-page module imported streamlit'\n"
    )

    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
