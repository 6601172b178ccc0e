"""The backend's logging: every logger (ours, uvicorn's) as JSON lines on stdout, in ``common.logs``'s format."""

from __future__ import annotations

import logging

from common.logs import JsonLinesHandler


def configure_logging(level: str = "INFO") -> None:
    """Route every logger (ours, uvicorn's) through one JSON handler on stdout."""
    root = logging.getLogger()
    root.handlers[:] = [JsonLinesHandler()]
    root.setLevel(level)
    logging.captureWarnings(True)  # library warnings (e.g. Pillow on damaged files) become JSON lines too
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # Requests are logged by our own middleware, with latency and status in Cloud Logging's shape.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
