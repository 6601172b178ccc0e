"""Reading images out of a request body (``backend.uploads``), without a server: every shape, every limit
at its bound and one byte past it, and where reading stops."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from backend import uploads
from backend.uploads import MemoryBudget, Upload, UploadError, clean_filename, read_uploads

BOUNDARY = "x" * 24
CHUNK = 1024


@dataclass
class Body:
    """A request body handed over in chunks; counts what the reader asked for."""

    chunks: Sequence[bytes]
    pulled: int = 0
    calls: int = field(default=0)

    async def stream(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.calls += 1
            self.pulled += len(chunk)
            yield chunk


def _chunked(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def _read(
    data: bytes | Body,
    content_type: str | None = "image/jpeg",
    *,
    content_length: int | None = None,
    max_files: int = 4,
    max_image_bytes: int = 10_000,
    max_request_bytes: int = 100_000,
    budget: MemoryBudget | None = None,
) -> list[Upload]:
    body = data if isinstance(data, Body) else Body(_chunked(data))
    budget = budget or MemoryBudget(1 << 30)

    async def read() -> list[Upload]:
        with budget.lease() as lease:
            uploads = await read_uploads(
                content_type,
                content_length,
                body.stream(),
                lease,
                max_files=max_files,
                max_image_bytes=max_image_bytes,
                max_request_bytes=max_request_bytes,
            )
            return [Upload(bytearray(u.data), u.filename, u.content_type) for u in uploads]  # outlive the lease

    return asyncio.run(read())


def _refused(code: str, data: bytes | Body, content_type: str | None = "image/jpeg", **options: object) -> str:
    with pytest.raises(UploadError) as caught:
        _read(data, content_type, **options)  # type: ignore[arg-type]
    assert caught.value.code == code, caught.value.message
    assert len(caught.value.message) > 20
    return caught.value.message


def _part(
    content: bytes, name: str | None = "file", filename: str | None = "a.jpg", ctype: str = "image/jpeg"
) -> bytes:
    disposition = "form-data" + (f'; name="{name}"' if name is not None else "")
    disposition += f'; filename="{filename}"' if filename is not None else ""
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\nContent-Type: {ctype}\r\n\r\n".encode() + content


def _form(*parts: bytes, boundary: str = BOUNDARY) -> bytes:
    return b"".join(p + b"\r\n" for p in parts) + f"--{boundary}--\r\n".encode()


MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def test_a_raw_body_is_one_image_with_its_content_type() -> None:
    (upload,) = _read(b"\xff\xd8" + b"j" * 5000, "image/jpeg")
    assert bytes(upload.data) == b"\xff\xd8" + b"j" * 5000
    assert (upload.filename, upload.content_type) == (None, "image/jpeg")
    (untyped,) = _read(b"data", None)
    assert untyped.content_type is None


def test_an_empty_raw_body_says_how_to_send_an_image() -> None:
    assert "curl" in _refused("no_image", b"")


def test_a_raw_image_at_the_byte_limit_is_taken_and_one_byte_more_is_refused_as_it_arrives() -> None:
    assert len(_read(b"i" * 10_000, max_image_bytes=10_000)[0].data) == 10_000
    body = Body(_chunked(b"i" * 10_001 + b"j" * 90_000))
    assert "limit" in _refused("image_too_large", body, max_image_bytes=10_000)
    assert body.pulled <= 10_000 + CHUNK  # not read to the end


def test_a_declared_length_over_the_request_limit_is_refused_before_reading() -> None:
    body = Body(_chunked(b"i" * 5000))
    message = _refused("request_too_large", body, content_length=100_001, max_request_bytes=100_000)
    assert body.calls == 0
    assert "0.1 MB per request" in message
    assert len(_read(b"i" * 5000, content_length=100_000, max_request_bytes=100_000)[0].data) == 5000


@pytest.mark.parametrize("content_type", ["image/jpeg", MULTIPART])
def test_a_body_over_the_request_limit_is_refused_as_it_arrives(content_type: str) -> None:
    at_limit = _form(_part(b"i" * 9000)) if content_type == MULTIPART else b"i" * 9000
    assert _read(at_limit, content_type, max_request_bytes=len(at_limit), max_image_bytes=100_000)
    over = Body(_chunked(at_limit[:-2] + b"i" * 3 + at_limit[-2:] + b"j" * 50_000))
    _refused("request_too_large", over, content_type, max_request_bytes=len(at_limit), max_image_bytes=100_000)
    assert over.pulled <= len(at_limit) + CHUNK


def test_parts_keep_their_order_names_and_content_types() -> None:
    body = _form(
        _part(b"one", filename="1.jpg"),
        _part(b"two", name="files", filename="2.png", ctype="image/png"),
        _part(b"three", name=None, filename="3.gif"),  # no field name, but a file: an image
    )
    uploads = _read(body, MULTIPART)
    assert [(bytes(u.data), u.filename, u.content_type) for u in uploads] == [
        (b"one", "1.jpg", "image/jpeg"),
        (b"two", "2.png", "image/png"),
        (b"three", "3.gif", "image/jpeg"),
    ]


def test_other_form_fields_are_ignored_and_a_form_without_images_names_them() -> None:
    uploads = _read(_form(_part(b"note", name="comment", filename=None), _part(b"img")), MULTIPART)
    assert [bytes(u.data) for u in uploads] == [b"img"]
    message = _refused(
        "no_image", _form(_part(b"x", name="photo", filename=None), _part(b"y", name="alt", filename=None)), MULTIPART
    )
    assert "(the form had: alt, photo)" in message
    assert "(the form had" not in _refused("no_image", _form(), MULTIPART)


def test_an_empty_file_part_is_named() -> None:
    assert "b.jpg" in _refused("empty_file", _form(_part(b"img"), _part(b"", filename="b.jpg")), MULTIPART)
    assert "(unnamed)" in _refused("empty_file", _form(_part(b"", filename=None)), MULTIPART)


def test_max_files_images_are_taken_and_one_more_is_refused() -> None:
    assert len(_read(_form(*[_part(b"i")] * 4), MULTIPART, max_files=4)) == 4
    assert "at most 4" in _refused("too_many_files", _form(*[_part(b"i")] * 5), MULTIPART, max_files=4)


def test_sixteen_other_fields_are_tolerated_and_a_seventeenth_is_refused() -> None:
    fields = [_part(b"v", name=f"f{i}", filename=None) for i in range(17)]
    assert len(_read(_form(_part(b"img"), *fields[:16]), MULTIPART)) == 1
    _refused("too_many_parts", _form(_part(b"img"), *fields), MULTIPART)


def test_other_fields_are_limited_to_64_kib() -> None:
    field_at_limit = _part(b"v" * 65536, name="note", filename=None)
    assert len(_read(_form(_part(b"img"), field_at_limit), MULTIPART, max_request_bytes=1 << 20)) == 1
    over = _part(b"v" * 65537, name="note", filename=None)
    _refused("field_too_large", _form(_part(b"img"), over), MULTIPART, max_request_bytes=1 << 20)


def test_an_image_part_at_the_byte_limit_is_taken_and_one_byte_more_is_refused_as_it_arrives() -> None:
    assert len(_read(_form(_part(b"i" * 10_000)), MULTIPART, max_image_bytes=10_000)[0].data) == 10_000
    body = Body(_chunked(_form(_part(b"i" * 10_001 + b"j" * 80_000))))
    _refused("image_too_large", body, MULTIPART, max_image_bytes=10_000)
    assert body.pulled <= 10_000 + 200 + CHUNK  # the part's headers, the limit, one chunk


def test_bytes_after_the_closing_boundary_are_not_read() -> None:
    body = Body([_form(_part(b"img")), *[b"junk" * 256] * 50])
    assert len(_read(body, MULTIPART)) == 1
    assert body.calls == 1


@pytest.mark.parametrize("length", [1, 70])
def test_boundaries_of_1_to_70_characters_are_taken(length: int) -> None:
    boundary = "b" * length
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nimg\r\n--{boundary}--\r\n'
    assert len(_read(body.encode(), f"multipart/form-data; boundary={boundary}")) == 1


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", "multipart/form-data; boundary=", f"multipart/form-data; boundary={'b' * 71}"],
)
def test_a_missing_or_over_long_boundary_is_refused(content_type: str) -> None:
    assert "70" in _refused("invalid_multipart", _form(_part(b"img")), content_type)


def test_a_malformed_multipart_body_is_refused() -> None:
    _refused("invalid_multipart", b"this is not multipart at all\r\n", MULTIPART)


def test_other_multipart_types_are_unsupported() -> None:
    _refused("unsupported_media_type", _form(_part(b"img")), f"multipart/mixed; boundary={BOUNDARY}")


def test_file_names_are_sanitised() -> None:
    assert clean_filename(None) is None
    assert clean_filename("..\\..\\etc/\x07pass\twd.jpg") == "passwd.jpg"
    assert clean_filename("C:\\photos\\cat.jpg") == "cat.jpg"
    assert clean_filename(" \x00 ") is None
    assert clean_filename("dir/") is None
    assert clean_filename("é" * 300) == "é" * 255
    (upload,) = _read(_form(_part(b"img", filename="a/b/\x1bc.jpg")), MULTIPART)
    assert upload.filename == "c.jpg"


def test_utf8_file_names_arrive_intact() -> None:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="'.encode()
    body = head + "chat-été.jpg".encode() + b'"\r\n\r\nimg\r\n' + f"--{BOUNDARY}--\r\n".encode()
    assert _read(body, MULTIPART)[0].filename == "chat-été.jpg"


def test_the_memory_budget_refuses_what_would_exceed_it_and_is_given_back() -> None:
    budget = MemoryBudget(10_000)
    assert len(_read(b"i" * 10_000, budget=budget, max_image_bytes=20_000)[0].data) == 10_000
    assert budget.in_use == 0  # given back when the request ended
    budget.in_use = 5000  # other requests hold half of it
    assert "Retry" in _refused("server_busy", b"i" * 5001, budget=budget, max_image_bytes=20_000)
    assert budget.in_use == 5000  # the refused request's bytes were given back too
    assert len(_read(b"i" * 5000, budget=budget)[0].data) == 5000


def test_a_lease_empties_its_buffers_when_the_request_ends() -> None:
    budget = MemoryBudget(1 << 20)
    held: list[bytearray] = []

    async def scenario() -> None:
        with budget.lease() as lease:
            buffer = lease.buffer()
            buffer += b"x" * 1000
            lease.grow(1000)
            held.append(buffer)
            assert budget.in_use == 1000

    asyncio.run(scenario())
    assert held == [bytearray()]
    assert budget.in_use == 0


def _trim_pending(budget: MemoryBudget) -> bool:
    return budget._trim is not None


def test_after_a_large_body_free_memory_goes_back_to_the_os_once(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[str] = []
    monkeypatch.setattr(uploads, "_TRIM_DELAY_S", 0.01)
    budget = MemoryBudget(64 << 20)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        trimmed = asyncio.Event()

        def trim() -> None:
            trims.append(threading.current_thread().name)
            loop.call_soon_threadsafe(trimmed.set)

        monkeypatch.setattr(uploads, "return_free_memory", trim)
        with budget.lease() as lease:
            lease.grow((4 << 20) - 1)  # smaller bodies leave nothing worth returning
        assert not _trim_pending(budget)
        for _ in range(3):  # a burst of large bodies: one trim, after it
            with budget.lease() as lease:
                lease.grow(4 << 20)
        assert _trim_pending(budget)
        await asyncio.wait_for(trimmed.wait(), 5)
        assert not _trim_pending(budget)

    asyncio.run(scenario())
    assert len(trims) == 1
    assert trims[0] != threading.main_thread().name  # in a worker thread, not on the event loop
