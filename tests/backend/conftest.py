"""The backend's app under test: ``make_client`` builds one (lifespan run, model ready) per set of settings."""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from backend.classifier import Classifier
from backend.config import Settings


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, client.get("/ready").json()
        time.sleep(0.02)


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """``response`` is the JSON error the API promises: ``status``, a sentence in ``detail``, ``code``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert isinstance(body["detail"], str)
    assert len(body["detail"]) > 10
    if code is not None:
        assert body["code"] == code
    return body


def png_claiming(width: int, height: int) -> bytes:
    """A greyscale PNG whose header says ``width`` x ``height`` but whose pixel data stops after a few rows.

    Refused from its header, it is refused for its size; decoded, it fails as truncated (and a full decode
    of a large claim would take time and memory): which answer comes back shows which happened first.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    deflate = zlib.compressobj()
    # Four rows of width + 1 bytes (filter byte, pixels), and the file ends there: no end of stream, no IEND.
    rows = deflate.compress(b"\0" * (width + 1) * 4) + deflate.flush(zlib.Z_SYNC_FLUSH)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows)


@dataclass
class Streamed:
    response: httpx.Response
    pulled: int  # body bytes the app asked for before it answered
    sent: int  # body bytes the client had to send


def post_streamed(
    client: TestClient, chunks: list[bytes], headers: dict[str, str] | None = None, path: str = "/predict"
) -> Streamed:
    """POST ``chunks`` to ``client``'s app one ASGI message at a time, counting how many the app read.

    ``TestClient`` reads a request's whole body before the app sees it; httpx's ``ASGITransport`` hands
    it over chunk by chunk, as a server does, so this shows where the app stopped reading. It runs on the
    ``TestClient``'s event loop, where the app's lifespan started the model. Without a Content-Length in
    ``headers`` the body goes as ``Transfer-Encoding: chunked``.
    """
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        for chunk in chunks:
            pulled += len(chunk)
            yield chunk

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            return await http.post(path, content=body(), headers=headers or {})

    assert client.portal is not None, "the client's lifespan is not running"
    response = client.portal.call(post)
    return Streamed(response, pulled, sum(len(c) for c in chunks))


@pytest.fixture
def make_client(model_cache: Path, classifier: Classifier) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(
        factory: Callable[[Settings], Classifier] | None = None, wait: bool = True, **overrides: Any
    ) -> TestClient:
        settings = Settings(_env_file=None, model_cache_dir=model_cache, access_log=False, **overrides)
        app = create_app(settings, factory or (lambda _: classifier))
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        if wait:
            wait_ready(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()
