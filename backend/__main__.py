"""``python -m backend``: serve the API with uvicorn, configured from the environment."""

from __future__ import annotations

import dataclasses

import uvicorn

from backend.app import create_app
from backend.config import get_settings
from backend.logs import configure_logging
from backend.server import Server, protocol_with, raise_descriptor_limit
from backend.service import ModelService

# uvicorn's own grace period outlasts the service's, so that what is still running when the service's ends
# is answered by the service (JSON 503), not cancelled by uvicorn (a plain-text 500).
_UVICORN_EXTRA_GRACE_S = 2


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level)
    limits = settings.connection_limits
    limits = dataclasses.replace(limits, max_connections=raise_descriptor_limit(limits.max_connections))
    app = create_app(settings)

    def on_sigterm() -> None:
        service: ModelService | None = getattr(app.state, "service", None)
        if service is not None:
            service.begin_shutdown(settings.shutdown_grace_s)

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep our JSON logging
        access_log=False,  # the middleware logs requests with latency
        loop="uvloop",
        http=protocol_with(limits),  # httptools, with header, connection and drain budgets
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + _UVICORN_EXTRA_GRACE_S,
        timeout_keep_alive=int(settings.keep_alive_timeout_s),
        server_header=False,
    )
    Server(config, on_exit=on_sigterm).run()


if __name__ == "__main__":
    main()
