"""A whole request body read into memory within the limits ``/predict`` has (``backend.uploads``).

The body is counted against ``MAX_REQUEST_BYTES`` (the declared length before anything is read, then every
chunk) and against the process-wide upload memory budget, chunk by chunk, before it is kept: a request
over either is refused (413, or 503 when the budget is in use) without buffering the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from backend.uploads import BodyLease, UnsupportedUpload, UploadTooLarge


def request_too_large(size: int, limit: int) -> UploadTooLarge:
    return UploadTooLarge(
        "request_too_large",
        f"The request is over {size / 1_000_000:.1f} MB; the limit is {limit / 1_000_000:.1f} MB per request. "
        "Send fewer images per request, or smaller ones.",
    )


def declared_length(headers: Mapping[str, str], max_request_bytes: int) -> int | None:
    """The Content-Length, refused at once when over the limit (before the body is read)."""
    length = headers.get("content-length")
    declared = int(length) if length and length.isascii() and length.isdigit() else None
    if declared is not None and declared > max_request_bytes:
        raise request_too_large(declared, max_request_bytes)
    return declared


def check_identity_encoding(headers: Mapping[str, str]) -> None:
    """Compressed bodies are refused: their decompressed size is the sender's choice (a bomb), not ours."""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedUpload(
            "unsupported_encoding",
            f"Content-Encoding {encoding[:40]!r} is not accepted; send the body uncompressed (identity).",
        )


async def read_body(body: AsyncIterator[bytes], lease: BodyLease, max_request_bytes: int) -> bytearray:
    """Every byte of ``body``, held in a buffer of ``lease`` (emptied when the lease ends)."""
    data = lease.buffer()
    async for chunk in body:
        if len(data) + len(chunk) > max_request_bytes:
            raise request_too_large(max_request_bytes, max_request_bytes)
        lease.grow(len(chunk))
        data += chunk
    return data
