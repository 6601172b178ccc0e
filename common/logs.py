"""The log format of both services: one JSON object per line, in the shape Cloud Logging reads.

``severity`` and ``message`` are the fields Cloud Logging promotes; ``time`` is the record's time (UTC),
``logger`` the logger's name, ``exception`` the traceback, and anything passed in ``extra=`` becomes a
field of its own (``httpRequest`` becomes the request shown in the Logs Explorer). A line logged inside a
traced request carries ``logging.googleapis.com/trace`` (and ``spanId``, ``trace_sampled``): the Logs Explorer
groups it under its request (``common.tracing``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from common.tracing import trace_log_fields

# Record attributes that are never fields: the standard ones, Python 3.12's taskName, and uvicorn's
# ANSI-coloured copy of the message.
_NOT_FIELDS = (*RESERVED_ATTRS, "taskName", "color_message")


class CloudLoggingFormatter(JsonFormatter):
    """python-json-logger's formatter, with Cloud Logging's field names."""

    def __init__(self) -> None:
        super().__init__(
            "{levelname}{message}{name}",
            style="{",
            rename_fields={"levelname": "severity", "name": "logger", "exc_info": "exception"},
            timestamp="time",
            reserved_attrs=_NOT_FIELDS,
            json_ensure_ascii=False,
        )

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        # Formatted in the logging call's own thread and context: the trace of the request logging it.
        log_data.update(trace_log_fields())


class JsonLinesHandler(logging.Handler):
    """Writes each record as one JSON line to whatever ``sys.stdout`` is at the time (test runners swap it)."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.setFormatter(CloudLoggingFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:
            self.handleError(record)
