"""Mapping failures to HTTP answers: every error is JSON with a message that says what to do."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from backend.batching import BatcherClosed, QueueFull
from backend.classifier import (
    DecoderBusy,
    DecoderClosed,
    DecodeTimeout,
    ImageError,
    ImageTooLarge,
    InvalidImage,
    UnsupportedImage,
)
from backend.schemas import ErrorResponse
from backend.service import ImageFailed, NotReady
from backend.uploads import UploadError

logger = logging.getLogger(__name__)

_IMAGE_STATUS: dict[type[ImageError], int] = {
    ImageTooLarge: 413,
    UnsupportedImage: 415,
    DecodeTimeout: 422,
    InvalidImage: 400,
}
RETRY_AFTER_S = "1"


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: object
) -> JSONResponse:
    body = ErrorResponse(detail=detail, code=code, **extra)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


# Documented on /predict so clients (and schemathesis) know every answer's shape.
PREDICT_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "empty body, malformed multipart, no 'file' part, corrupt or truncated image",
        413: "image over the byte, pixel or decode-memory limit, too many files, body too large",
        415: "not an image, or an unsupported format or encoding",
        422: "invalid query parameter (top_k), or an image that took more than its CPU budget to decode",
        503: "model loading, shutting down, queue or memory budgets full, decoders busy (see Retry-After)",
        504: "the request took longer than REQUEST_TIMEOUT_S",
    }.items()
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UploadError)
    async def _upload(_: Request, exc: UploadError) -> JSONResponse:
        headers = {"Retry-After": exc.retry_after} if exc.retry_after else None
        return error_response(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(DecoderBusy)
    async def _decoders_busy(_: Request, exc: DecoderBusy) -> JSONResponse:
        return error_response(503, exc.code, exc.message, {"Retry-After": RETRY_AFTER_S})

    @app.exception_handler(DecoderClosed)
    async def _decoders_closed(_: Request, exc: DecoderClosed) -> JSONResponse:
        return error_response(503, "model_stopping", exc.message, {"Retry-After": RETRY_AFTER_S})

    @app.exception_handler(ImageFailed)
    async def _image(_: Request, exc: ImageFailed) -> JSONResponse:
        status = next((s for cls, s in _IMAGE_STATUS.items() if isinstance(exc.error, cls)), 400)
        name = exc.filename or f"image {exc.index + 1}"
        return error_response(
            status, exc.error.code, f"{name}: {exc.error.message}", filename=exc.filename, index=exc.index
        )

    @app.exception_handler(NotReady)
    async def _not_ready(_: Request, exc: NotReady) -> JSONResponse:
        return error_response(503, f"model_{exc.state}", exc.message, {"Retry-After": "5"})

    @app.exception_handler(QueueFull)
    async def _queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        request.app.state.metrics.rejected.inc()
        return error_response(
            503,
            "overloaded",
            f"The server is at capacity ({exc}). Retry after a second.",
            {"Retry-After": RETRY_AFTER_S},
        )

    @app.exception_handler(BatcherClosed)
    async def _closed(_: Request, exc: BatcherClosed) -> JSONResponse:
        return error_response(
            503, "model_stopping", "The server is shutting down. Retry.", {"Retry-After": RETRY_AFTER_S}
        )

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _: ClientDisconnect) -> JSONResponse:
        # The client left before sending its whole body: nobody will read this answer. Not an error of
        # ours, so no stack trace; 499 (nginx's "client closed request") keeps it apart in the metrics.
        logger.info("client disconnected during the upload", extra={"path": request.url.path})
        return error_response(499, "client_disconnected", "The client closed the connection before the upload ended.")

    @app.exception_handler(TimeoutError)
    async def _timeout(_: Request, exc: TimeoutError) -> JSONResponse:
        return error_response(504, "timeout", "The request took too long. Retry, or send fewer or smaller images.")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()) if p not in ('query', 'body'))}: {err.get('msg')}"
            for err in exc.errors()
        )
        return error_response(422, "invalid_request", f"Invalid request: {problems}.")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        detail = str(exc.detail)
        if exc.status_code in (404, 405):
            detail = f"{detail}: {request.method} {request.url.path}. The API is described at /docs."
        return error_response(exc.status_code, code, detail, dict(exc.headers) if exc.headers else None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", extra={"path": request.url.path})
        return error_response(500, "internal_error", "Internal error; it has been logged.")
