"""Mapping failures to HTTP answers: every error is JSON with a message that says what to do.

``ANSWERS`` is the one place that says which status, code and ``Retry-After`` each kind of failure gets;
one handler answers them all, and the token middleware answers its refusals from the same table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from backend.auth import AuthUnavailable, ForbiddenIdentity, InvalidToken
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
from backend.protocols import protocol_of
from backend.protocols.v2 import InferenceRequestError, ModelNotFound
from backend.saliency import InvalidClass
from backend.schemas import ErrorResponse, TorchServeErrorResponse, V2ErrorResponse
from backend.service import ImageFailed, NotReady
from backend.uploads import InvalidUpload, UnsupportedUpload, UploadMemoryFull, UploadTooLarge

logger = logging.getLogger(__name__)

# Retry-After, in seconds: a budget or queue that is full now has room a moment later; a model that is
# loading, or token certificates that cannot be fetched, take longer.
RETRY_SOON_S = 1
RETRY_LATER_S = 5


@dataclass(frozen=True)
class Answer:
    """How one kind of failure is answered."""

    status: int
    code: str | None = None  # None: the exception's own ``code``
    retry_after_s: int | None = None
    detail: str | None = None  # None: the exception's own ``message``; ``{exc}`` stands for the exception


ANSWERS: dict[type[BaseException], Answer] = {
    # what the caller sent
    InvalidUpload: Answer(400),
    UploadTooLarge: Answer(413),
    UnsupportedUpload: Answer(415),
    ImageError: Answer(400),
    InvalidImage: Answer(400),
    ImageTooLarge: Answer(413),
    UnsupportedImage: Answer(415),
    DecodeTimeout: Answer(422),
    RequestValidationError: Answer(422, "invalid_request"),
    InvalidClass: Answer(422),
    InferenceRequestError: Answer(400),
    ModelNotFound: Answer(404),
    # who the caller is (answered by the token middleware, before any route)
    InvalidToken: Answer(401),
    ForbiddenIdentity: Answer(403),
    AuthUnavailable: Answer(
        503, "auth_unavailable", RETRY_LATER_S, "Tokens cannot be checked right now. Retry shortly."
    ),
    # the server is full for a moment
    UploadMemoryFull: Answer(503, retry_after_s=RETRY_SOON_S),
    QueueFull: Answer(503, "overloaded", RETRY_SOON_S, "The server is at capacity ({exc}). Retry after a second."),
    DecoderBusy: Answer(503, retry_after_s=RETRY_SOON_S),
    # the model is not serving
    NotReady: Answer(503, retry_after_s=RETRY_LATER_S),
    DecoderClosed: Answer(503, "model_stopping", RETRY_SOON_S),
    BatcherClosed: Answer(503, "model_stopping", RETRY_SOON_S, "The server is shutting down. Retry."),
    # the connection
    ClientDisconnect: Answer(
        499, "client_disconnected", detail="The client closed the connection before the upload ended."
    ),
    TimeoutError: Answer(504, "timeout", detail="The request took too long. Retry, or send fewer or smaller images."),
    # anything else is a bug of ours
    Exception: Answer(500, "internal_error", detail="Internal error; it has been logged."),
}


class _Explained(Protocol):
    code: str
    message: str


def answer_for(exc: BaseException) -> Answer:
    """The table's entry for ``exc``: its own class's, or its nearest base class's (as handlers are found)."""
    return next(ANSWERS[cls] for cls in type(exc).__mro__ if cls in ANSWERS)


def error_response(
    exc: BaseException,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    *,
    path: str = "",
    **extra: object,
) -> JSONResponse:
    """The JSON answer to ``exc``, as ``ANSWERS`` says; ``detail`` replaces the table's or the exception's."""
    answer = answer_for(exc)
    own = cast(_Explained, exc)  # where the table gives no code or detail, the exception has its own
    code = answer.code or own.code
    if detail is None:
        detail = answer.detail.format(exc=exc) if answer.detail else own.message
    if answer.retry_after_s is not None:
        headers = {"Retry-After": str(answer.retry_after_s), **(headers or {})}
    return json_error(answer.status, code, detail, headers, path=path, **extra)


# TorchServe's error "type" (its Java exception names) by status, for clients that read it.
_TORCHSERVE_TYPES = {
    400: "BadRequestException",
    404: "ModelNotFoundException",
    405: "MethodNotAllowedException",
    413: "RequestEntityTooLargeException",
    415: "UnsupportedMediaTypeException",
    422: "BadRequestException",
    503: "ServiceUnavailableException",
    504: "RequestTimeoutException",
}


def json_error(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None, *, path: str = "", **extra: object
) -> JSONResponse:
    """The error body: ours (``ErrorResponse``), or the one the clients of the protocol at ``path`` read."""
    protocol = protocol_of(path)
    if protocol == "v2":  # the Open Inference Protocol's: {"error": "..."}
        return JSONResponse(V2ErrorResponse(error=detail).model_dump(), status_code=status, headers=headers)
    if protocol == "torchserve":  # TorchServe's: {"code": 404, "type": "ModelNotFoundException", "message": ...}
        kind = _TORCHSERVE_TYPES.get(status, "InternalServerException")
        served = TorchServeErrorResponse(code=status, type=kind, message=detail)
        return JSONResponse(served.model_dump(), status_code=status, headers=headers)
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


# Documented on /explain: /predict's answers, for one image and its own query parameters.
EXPLAIN_ERRORS: dict[int | str, dict[str, object]] = {
    **PREDICT_ERRORS,
    413: {
        "model": ErrorResponse,
        "description": "image over the byte, pixel or decode-memory limit, more than one file, body too large",
    },
    422: {
        "model": ErrorResponse,
        "description": "invalid query parameter (grid, class_index), or an image over its CPU budget to decode",
    },
}


async def _answer(request: Request, exc: Exception) -> JSONResponse:
    """The one exception handler: every failure in ``ANSWERS``, and the framework's own errors."""
    path = request.url.path
    if isinstance(exc, ImageFailed):  # one image of several: answered as that image's error, naming it
        name = exc.filename or f"image {exc.index + 1}"
        return error_response(
            exc.error, f"{name}: {exc.error.message}", path=path, filename=exc.filename, index=exc.index
        )
    if isinstance(exc, RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()) if p not in ('query', 'body'))}: {err.get('msg')}"
            for err in exc.errors()
        )
        return error_response(exc, f"Invalid request: {problems}.", path=path)
    if isinstance(exc, StarletteHTTPException):  # routing's own answers (404, 405): their status is theirs
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        detail = str(exc.detail)
        if exc.status_code in (404, 405):
            detail = f"{detail}: {request.method} {request.url.path}. The API is described at /docs."
        return json_error(exc.status_code, code, detail, dict(exc.headers) if exc.headers else None, path=path)
    if isinstance(exc, ClientDisconnect):
        # The client left before sending its whole body: nobody will read this answer. Not an error of
        # ours, so no stack trace; 499 (nginx's "client closed request") keeps it apart in the metrics.
        logger.info("client disconnected during the upload", extra={"path": request.url.path})
    elif answer_for(exc).status == 500:
        logger.exception("unhandled error", extra={"path": request.url.path})
    return error_response(exc, path=path)


def install_error_handlers(app: FastAPI) -> None:
    for exc_type in (*ANSWERS, ImageFailed, StarletteHTTPException):
        app.add_exception_handler(exc_type, _answer)


_PROTOCOL_ERRORS = {
    400: "not an inference request the model takes (see the message), corrupt or truncated image",
    404: "unknown model or version",
    413: "image over the byte, pixel or decode-memory limit, too many images, body too large",
    415: "not an image, an unsupported image format, or a compressed body (Content-Encoding)",
    422: "an image that took more than its CPU budget to decode",
    503: "model loading, shutting down, queue or memory budgets full, decoders busy (see Retry-After)",
    504: "the request took longer than REQUEST_TIMEOUT_S",
}
# Documented on the protocols' routes, in the body each protocol's clients read.
V2_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": V2ErrorResponse, "description": description} for status, description in _PROTOCOL_ERRORS.items()
}
TORCHSERVE_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": TorchServeErrorResponse, "description": description}
    for status, description in _PROTOCOL_ERRORS.items()
}
