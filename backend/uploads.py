"""Reading images out of a request body, in memory, with limits enforced while the bytes arrive.

Two shapes are accepted on the same endpoint:

- ``multipart/form-data`` with one or more ``file`` parts (what ``curl -F file=@cat.jpg`` and browsers send);
- a raw body (``curl --data-binary @cat.jpg -H 'Content-Type: image/jpeg'``), as TorchServe users expect.
  Any content type other than multipart counts as a raw body; the decoder decides whether it is an image.

Nothing is spooled to disk (Starlette's form parser would spill files over 1 MB to a temporary file).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

IMAGE_FIELDS: Final = frozenset({"file", "files"})
# Form fields that are not images are tolerated (and ignored) up to this many.
_MAX_OTHER_PARTS: Final = 16
_MAX_OTHER_PART_BYTES: Final = 64 * 1024
_MAX_FILENAME: Final = 255


class UploadError(Exception):
    """The request body is not something we can take images from. ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Upload:
    data: bytes
    filename: str | None = None
    content_type: str | None = None


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
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
    return UploadError(
        413, "image_too_large", f"An image is larger than the limit of {limit / 1_000_000:.1f} MB. Send a smaller one."
    )


async def read_uploads(
    content_type: str | None,
    content_length: int | None,
    body: AsyncIterator[bytes],
    *,
    max_files: int,
    max_image_bytes: int,
    max_body_bytes: int,
) -> list[Upload]:
    """The images in a request body, in the order they were sent."""
    if content_length is not None and content_length > max_body_bytes:
        raise UploadError(
            413,
            "request_too_large",
            f"The request is {content_length / 1_000_000:.1f} MB; the limit is {max_body_bytes / 1_000_000:.1f} MB "
            f"({max_files} images of at most {max_image_bytes / 1_000_000:.1f} MB each).",
        )
    mime, params = parse_options_header(content_type or "")
    if mime == b"multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise UploadError(
                400, "invalid_multipart", "The multipart body has no boundary in its Content-Type header."
            )
        return await _read_multipart(boundary, body, max_files=max_files, max_image_bytes=max_image_bytes)
    if mime.startswith(b"multipart/"):
        raise UploadError(
            415, "unsupported_media_type", "Send images as multipart/form-data 'file' parts or as a raw image body."
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in body:
        size += len(chunk)
        if size > max_image_bytes:
            raise _too_large(max_image_bytes)
        chunks.append(chunk)
    if not size:
        raise UploadError(
            400,
            "no_image",
            "The request has no image. Send it as a form field (curl -F file=@cat.jpg ...) "
            "or as the body (curl --data-binary @cat.jpg -H 'Content-Type: image/jpeg' ...).",
        )
    return [Upload(b"".join(chunks), None, mime.decode("latin-1") or None)]


async def _read_multipart(
    boundary: bytes, body: AsyncIterator[bytes], *, max_files: int, max_image_bytes: int
) -> list[Upload]:
    parts: list[_Part] = []
    header_field = bytearray()
    header_value = bytearray()
    error: list[UploadError] = []  # raised from callbacks, which the parser would otherwise swallow

    def fail(exc: UploadError) -> None:
        if not error:
            error.append(exc)

    def on_part_begin() -> None:
        parts.append(_Part())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        # Latin-1 keeps the raw bytes (one character per byte): parse_options_header needs that, and
        # browsers send UTF-8 file names unencoded, so names are decoded as UTF-8 only once parsed.
        parts[-1].headers[header_field.decode("latin-1").lower()] = header_value.decode("latin-1")
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        part = parts[-1]
        _, disposition = parse_options_header(part.headers.get("content-disposition", ""))
        part.name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in disposition:
            part.filename = disposition[b"filename"].decode("utf-8", "replace")
        part.is_image = part.name in IMAGE_FIELDS or (part.filename is not None and not part.name)
        images = sum(p.is_image for p in parts)
        if images > max_files:
            fail(UploadError(413, "too_many_files", f"Too many images: at most {max_files} per request."))
        if len(parts) - images > _MAX_OTHER_PARTS:
            fail(UploadError(413, "too_many_parts", f"Too many form fields: send at most {max_files} 'file' parts."))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part = parts[-1]
        part.size += end - start
        limit = max_image_bytes if part.is_image else _MAX_OTHER_PART_BYTES
        if part.size > limit:
            fail(
                _too_large(limit)
                if part.is_image
                else UploadError(413, "field_too_large", "A form field is too large.")
            )
        elif part.is_image:
            part.chunks.append(data[start:end])

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
        },
    )
    try:
        async for chunk in body:
            parser.write(chunk)
            if error:
                raise error[0]
        parser.finalize()
    except MultipartParseError as exc:
        raise UploadError(400, "invalid_multipart", f"The multipart body is malformed: {exc}") from None
    if error:
        raise error[0]
    return _uploads_from(parts)


def _uploads_from(parts: list[_Part]) -> list[Upload]:
    uploads = [
        Upload(b"".join(p.chunks), clean_filename(p.filename), p.headers.get("content-type"))
        for p in parts
        if p.is_image
    ]
    if not uploads:
        names = sorted({p.name for p in parts if p.name})
        sent = f" (the form had: {', '.join(names)})" if names else ""
        raise UploadError(
            400, "no_image", f"The form has no 'file' part{sent}. Send images as: curl -F file=@cat.jpg ..."
        )
    for upload in uploads:
        if not upload.data:
            raise UploadError(400, "empty_file", f"The file {upload.filename or '(unnamed)'} is empty (0 bytes).")
    return uploads
