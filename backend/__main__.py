"""``python -m backend``: serve the API with uvicorn, configured from the environment."""

from __future__ import annotations

import uvicorn

from backend.config import get_settings
from backend.logs import configure_logging


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level)
    uvicorn.run(
        "backend.app:app_factory",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep our JSON logging
        access_log=False,  # the middleware logs requests with latency
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        timeout_keep_alive=75,  # longer than typical load balancer idle timeouts
        server_header=False,
    )


if __name__ == "__main__":
    main()
