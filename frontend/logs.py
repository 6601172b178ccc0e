"""The frontend's logging: its own loggers as JSON lines on stdout, in ``common.logs``'s format.

Only the ``frontend`` loggers are routed here: Streamlit keeps its own console output.
"""

from __future__ import annotations

import logging

from common.logs import JsonLinesHandler


def configure_logging(level: str = "INFO") -> None:
    """Send the ``frontend`` loggers' records to stdout as JSON lines; safe to call on every page run."""
    logger = logging.getLogger("frontend")
    logger.setLevel(level)
    logger.propagate = False
    if not any(isinstance(h, JsonLinesHandler) for h in logger.handlers):
        logger.addHandler(JsonLinesHandler())
