"""Reading images out of a request body, in memory, with limits enforced while the bytes arrive.

Two shapes are accepted on the same endpoint:

- ``multipart/form-data`` with one or more ``file`` parts (what ``curl -F file=@cat.jpg`` and browsers send);
- a raw body (``curl --data-binary @cat.jpg -H 'Content-Type: image/jpeg'``), as TorchServe users expect.
  Any content type other than multipart counts as a raw body; the decoder decides whether it is an image.

Nothing is spooled to disk (Starlette's form parser would spill files over 1 MB to a temporary file), and
each file is held once, in a ``bytearray`` grown as its bytes arrive. Every byte read is first counted
against a process-wide ``MemoryBudget`` for request bodies: when the bodies being read and held by all
requests would exceed it, the request is answered 503 at once, before the bytes are buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import unicodedata
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from backend.classifier import return_free_memory

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

IMAGE_FIELDS: Final = frozenset({"file", "files"})
MAX_BOUNDARY: Final = 70  # RFC 2046 section 5.1.1; every HTTP client we know uses 16 to 70 characters
# Form fields that are not images are tolerated (and ignored) up to this many.
_MAX_OTHER_PARTS: Final = 16
_MAX_OTHER_PART_BYTES: Final = 64 * 1024
_MAX_FILENAME: Final = 255
_TRIM_AFTER_BYTES: Final = 4 * 1024 * 1024
_TRIM_DELAY_S: Final = 1.0


class UploadError(Exception):
    """The request body is not something we can take images from (its HTTP answer: ``backend.errors``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidUpload(UploadError):
    """Malformed, empty, or without an image."""


class UploadTooLarge(UploadError):
    """Over a byte or count limit."""


class UnsupportedUpload(UploadError):
    """A content type images cannot be taken from."""


class UploadMemoryFull(UploadError):
    """The memory budget for request bodies is spent: retry in a moment."""


class MemoryBudget:
    """Bytes of request bodies held in memory by all requests together (the event loop's thread only)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._trim: asyncio.TimerHandle | None = None

    @contextlib.contextmanager
    def lease(self) -> Iterator[BodyLease]:
        """A request's share of the budget, grown as it reads and given back when the request ends."""
        lease = BodyLease(self)
        try:
            yield lease
        finally:
            for buffer in lease.buffers:
                # The memory goes now, even if an exception's traceback (a reference cycle, collected
                # much later) still holds the object: without this, large uploads refused with 503 kept
                # their memory resident (BENCHMARKS.md, "Measurements behind the code").
                # A buffer a decoder's I/O thread is still sending is left alone.
                with contextlib.suppress(BufferError):
                    buffer.clear()
            self.in_use -= lease.size
            if lease.size >= _TRIM_AFTER_BYTES and self._trim is None:
                self._trim = asyncio.get_running_loop().call_later(_TRIM_DELAY_S, self._return_free_memory)
            lease.size = 0

    def _return_free_memory(self) -> None:
        """Large bodies leave free pages behind in the allocator: give them back, once the burst is over."""
        self._trim = None
        asyncio.get_running_loop().run_in_executor(None, return_free_memory)


class BodyLease:
    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.size = 0
        self.buffers: list[bytearray] = []

    def buffer(self) -> bytearray:
        """A buffer for body bytes, emptied when the lease ends."""
        buffer = bytearray()
        self.buffers.append(buffer)
        return buffer

    def grow(self, n: int) -> None:
        budget = self.budget
        if budget.in_use + n > budget.limit:
            raise UploadMemoryFull(
                "server_busy", "The server is holding as many uploads in memory as it allows. Retry in a second."
            )
        budget.in_use += n
        self.size += n


@dataclass
class Upload:
    data: bytearray
    filename: str | None = None
    content_type: str | None = None


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    size: int = 0
    name: str = ""
    filename: str | None = None
    is_image: bool = False


def clean_filename(raw: str | None) -> str | None:
    """A file name safe to echo back: last path component, no control characters, bounded length."""
    if raw is None:
        return None
    name = re.split(r"[\\/]", raw)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    return name[:_MAX_FILENAME] or None


def _too_large(limit: int) -> UploadError:
    return UploadTooLarge(
        "image_too_large", f"An image is larger than the limit of {limit / 1_000_000:.1f} MB. Send a smaller one."
    )


def _request_too_large(size: int, limit: int, *, declared: bool) -> UploadError:
    return UploadTooLarge(
        "request_too_large",
        f"The request is {'' if declared else 'over '}{size / 1_000_000:.1f} MB; the limit is "
        f"{limit / 1_000_000:.1f} MB per request. Send fewer images per request, or smaller ones.",
    )


async def _counted(body: AsyncIterator[bytes], lease: BodyLease, max_request_bytes: int) -> AsyncIterator[bytes]:
    """The body's chunks, each counted against the request limit and the memory budget before it is kept."""
    size = 0
    async for chunk in body:
        size += len(chunk)
        if size > max_request_bytes:
            raise _request_too_large(max_request_bytes, max_request_bytes, declared=False)
        lease.grow(len(chunk))
        yield chunk


async def read_uploads(
    content_type: str | None,
    content_length: int | None,
    body: AsyncIterator[bytes],
    lease: BodyLease,
    *,
    max_files: int,
    max_image_bytes: int,
    max_request_bytes: int,
    fields: frozenset[str] = IMAGE_FIELDS,
) -> list[Upload]:
    """The images in a request body, in the order they were sent. ``lease`` holds their memory.

    ``fields``: the multipart field names that hold images (TorchServe's clients send ``data``)."""
    if content_length is not None and content_length > max_request_bytes:
        raise _request_too_large(content_length, max_request_bytes, declared=True)
    mime, params = parse_options_header(content_type or "")
    counted = _counted(body, lease, max_request_bytes)
    if mime == b"multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary or len(boundary) > MAX_BOUNDARY:
            raise InvalidUpload(
                "invalid_multipart",
                f"The multipart boundary in the Content-Type header must be 1 to {MAX_BOUNDARY} characters long.",
            )
        return await _read_multipart(
            boundary, counted, lease, max_files=max_files, max_image_bytes=max_image_bytes, fields=fields
        )
    if mime.startswith(b"multipart/"):
        raise UnsupportedUpload(
            "unsupported_media_type", "Send images as multipart/form-data 'file' parts or as a raw image body."
        )
    data = lease.buffer()
    async for chunk in counted:
        if len(data) + len(chunk) > max_image_bytes:
            raise _too_large(max_image_bytes)
        data += chunk
    if not data:
        raise InvalidUpload(
            "no_image",
            "The request has no image. Send it as a form field (curl -F file=@cat.jpg ...) "
            "or as the body (curl --data-binary @cat.jpg -H 'Content-Type: image/jpeg' ...).",
        )
    return [Upload(data, None, mime.decode("latin-1") or None)]


async def _read_multipart(
    boundary: bytes,
    body: AsyncIterator[bytes],
    lease: BodyLease,
    *,
    max_files: int,
    max_image_bytes: int,
    fields: frozenset[str] = IMAGE_FIELDS,
) -> list[Upload]:
    reader = _MultipartReader(lease, max_files, max_image_bytes, fields)
    parser = MultipartParser(boundary, reader.callbacks())
    try:
        async for chunk in body:
            parser.write(chunk)
            if reader.error is not None:
                raise reader.error
            if reader.ended:
                break  # what follows the closing boundary is not read (the server drops it, within a bound)
        parser.finalize()
    except MultipartParseError as exc:
        raise InvalidUpload("invalid_multipart", f"The multipart body is malformed: {exc}") from None
    if reader.error is not None:
        raise reader.error
    return _uploads_from(reader.parts)


class _MultipartReader:
    """The parser's callbacks: the parts, their headers, and image data kept within the limits."""

    def __init__(
        self, lease: BodyLease, max_files: int, max_image_bytes: int, fields: frozenset[str] = IMAGE_FIELDS
    ) -> None:
        self.lease = lease
        self.fields = fields
        self.max_files = max_files
        self.max_image_bytes = max_image_bytes
        self.parts: list[_Part] = []
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.error: UploadError | None = None  # raised after the callback returns; the parser would swallow it
        self.ended = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }

    def fail(self, exc: UploadError) -> None:
        if self.error is None:
            self.error = exc

    def on_part_begin(self) -> None:
        self.parts.append(_Part(data=self.lease.buffer()))

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        # Latin-1 keeps the raw bytes (one character per byte): parse_options_header needs that, and
        # browsers send UTF-8 file names unencoded, so names are decoded as UTF-8 only once parsed.
        self.parts[-1].headers[self.header_field.decode("latin-1").lower()] = self.header_value.decode("latin-1")
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        part = self.parts[-1]
        _, disposition = parse_options_header(part.headers.get("content-disposition", ""))
        part.name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in disposition:
            part.filename = disposition[b"filename"].decode("utf-8", "replace")
        part.is_image = part.name in self.fields or (part.filename is not None and not part.name)
        images = sum(p.is_image for p in self.parts)
        if images > self.max_files:
            self.fail(UploadTooLarge("too_many_files", f"Too many images: at most {self.max_files} per request."))
        if len(self.parts) - images > _MAX_OTHER_PARTS:
            self.fail(
                UploadTooLarge("too_many_parts", f"Too many form fields: send at most {self.max_files} 'file' parts.")
            )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.parts[-1]
        part.size += end - start
        limit = self.max_image_bytes if part.is_image else _MAX_OTHER_PART_BYTES
        if part.size > limit:
            self.fail(
                _too_large(limit) if part.is_image else UploadTooLarge("field_too_large", "A form field is too large.")
            )
        elif part.is_image:
            part.data += data[start:end]

    def on_end(self) -> None:
        self.ended = True


def _uploads_from(parts: list[_Part]) -> list[Upload]:
    uploads = [Upload(p.data, clean_filename(p.filename), p.headers.get("content-type")) for p in parts if p.is_image]
    if not uploads:
        names = sorted({p.name for p in parts if p.name})
        sent = f" (the form had: {', '.join(names)})" if names else ""
        raise InvalidUpload("no_image", f"The form has no 'file' part{sent}. Send images as: curl -F file=@cat.jpg ...")
    for upload in uploads:
        if not upload.data:
            raise InvalidUpload("empty_file", f"The file {upload.filename or '(unnamed)'} is empty (0 bytes).")
    return uploads
