"""``python -m frontend``: check the configuration, then become the Streamlit server for ``frontend/app.py``.

The process replaces itself with ``python -m streamlit run`` (same PID, so a container's SIGTERM reaches
Streamlit, which shuts down cleanly). Listens on $HOST:$PORT (default 127.0.0.1:8501; containers set
HOST=0.0.0.0), headless, without usage statistics or a file watcher; Streamlit's health check is
``/_stcore/health``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from frontend.config import ConfigError, FrontendSettings
from frontend.logs import configure_logging

logger = logging.getLogger("frontend.main")

APP = Path(__file__).resolve().parent / "app.py"
PROJECT_ROOT = APP.parent.parent


def streamlit_command(settings: FrontendSettings) -> list[str]:
    """The ``streamlit run`` command line serving the page with these settings."""
    options = {
        "server.address": settings.host,
        "server.port": settings.port,
        "server.headless": "true",
        "server.fileWatcherType": "none",
        "server.runOnSave": "false",
        "server.maxUploadSize": settings.max_upload_mb,
        "browser.gatherUsageStats": "false",
        # The welcome banner looks up the machine's external IP on every start; we log our own line.
        "logger.hideWelcomeMessage": "true",
        "client.toolbarMode": "viewer",
        # Unexpected errors show a generic message in the browser; the details go to the logs only.
        "client.showErrorDetails": "none",
    }
    flags = [f"--{name}={value}" for name, value in options.items()]
    return [sys.executable, "-m", "streamlit", "run", str(APP), *flags]


def main() -> int:
    configure_logging("INFO")
    try:
        settings = FrontendSettings.from_env()
    except ConfigError as exc:
        logger.error("invalid configuration: %s", exc)
        return 2
    configure_logging(settings.log_level)
    command = streamlit_command(settings)
    # The page imports ``frontend.*``: make the project root importable wherever we were started from.
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = f"{PROJECT_ROOT}{os.pathsep}{path}" if path else str(PROJECT_ROOT)
    logger.info(
        "starting the frontend",
        extra={
            "url": f"http://{settings.host}:{settings.port}",
            "backend_url": settings.backend_url,
            "backend_service": None if settings.backend_url else settings.backend_service,
        },
    )
    sys.stdout.flush()
    os.execv(sys.executable, command)  # noqa: S606  (no shell; our own interpreter and fixed arguments)


if __name__ == "__main__":
    sys.exit(main())
