"""The connection budgets of the real server (uvicorn + ``backend.server``), with small limits to be quick.

Header size (431), header timeout (408), idle connections (closed, and evicted to make room), a connection
limit answered with a JSON 503, early answers a client can read (lingering close), and the process-wide
budget for request bodies (503 at once, given back when a stalled upload times out).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import requests

from tests.helpers import CAT, jpeg_bytes
from tests.hostile import attacks
from tests.reliability.harness import Server, running_server

PHOTO = jpeg_bytes(CAT)
MAX_CONNECTIONS = 40
KEEP_ALIVE_S = 2.0
HEADER_TIMEOUT_S = 1.0
MAX_HEADER_BYTES = 8192
MAX_REQUEST_BYTES = 1_000_000
REQUEST_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def server(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "MODEL_CACHE_DIR": str(model_cache),
        "ACCESS_LOG": "false",
        "MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "KEEP_ALIVE_TIMEOUT_S": str(KEEP_ALIVE_S),
        "HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
        "MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        "MAX_IMAGE_BYTES": str(MAX_REQUEST_BYTES),
        "UPLOAD_MEMORY_BYTES": str(2 * MAX_REQUEST_BYTES),
        "REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
    }
    with running_server(env, tmp_path_factory.mktemp("connections") / "backend.log") as server:
        yield server


def _address(server: Server) -> tuple[str, int]:
    parts = urlsplit(server.url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


def _metric(server: Server, name: str, labels: str = "") -> float:
    text = httpx.get(f"{server.url}/metrics").text
    match = re.search(rf"^{re.escape(name + labels)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _served(server: Server) -> None:
    response = httpx.post(f"{server.url}/predict", content=PHOTO, headers={"Content-Type": "image/jpeg"}, timeout=30)
    assert response.status_code == 200, response.text


def _closed_after(sock: socket.socket, limit: float) -> float:
    """Seconds until the server closes ``sock`` (reading what it sends meanwhile), at most ``limit``."""
    started = time.monotonic()
    sock.settimeout(limit)
    with contextlib.suppress(ConnectionResetError):
        while sock.recv(65536):
            pass
    return time.monotonic() - started


@pytest.mark.slow
def test_a_connection_that_never_sends_a_request_is_closed_after_the_idle_timeout(server: Server) -> None:
    with socket.create_connection(_address(server)) as silent:
        waited = _closed_after(silent, 20)
    assert KEEP_ALIVE_S - 0.5 <= waited <= KEEP_ALIVE_S + 2, waited


@pytest.mark.slow
def test_headers_slower_than_the_header_timeout_get_408(server: Server) -> None:
    host, port = _address(server)
    result = asyncio.run(attacks.slow_headers(host, port, interval=0.2, max_seconds=10))
    assert result.status == 408, result
    assert result.json()["code"] == "header_timeout"
    assert HEADER_TIMEOUT_S - 0.2 <= result.seconds <= HEADER_TIMEOUT_S + 2, result.seconds
    _served(server)


@pytest.mark.slow
def test_headers_over_the_limit_get_431_before_the_server_reads_on(server: Server) -> None:
    host, port = _address(server)
    result = asyncio.run(attacks.huge_header(host, port, total_bytes=10 * 1024 * 1024, chunk=4096))
    assert result.status == 431, result
    assert result.json()["code"] == "headers_too_large"
    assert result.sent < 1024 * 1024  # answered long before the 10 MB were sent
    just_under = httpx.get(f"{server.url}/health", headers={"X-Pad": "a" * (MAX_HEADER_BYTES - 500)})
    assert just_under.status_code == 200


@pytest.mark.slow
def test_idle_sockets_beyond_the_connection_limit_make_room_for_real_clients(server: Server) -> None:
    host, port = _address(server)
    evicted_before = _metric(server, "http_connections_refused", '{reason="evicted_waiting"}')

    async def flood_then_request() -> tuple[int, int, list[int]]:
        async with attacks.idle_connections(host, port, 3 * MAX_CONNECTIONS) as idle:
            statuses = []
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                for _ in range(5):
                    response = await client.post("/predict", content=PHOTO, headers={"Content-Type": "image/jpeg"})
                    statuses.append(response.status_code)
            return idle.opened, await idle.still_open(), statuses

    opened, still_open, statuses = asyncio.run(flood_then_request())
    assert opened == 3 * MAX_CONNECTIONS
    assert statuses == [200] * 5
    assert still_open <= MAX_CONNECTIONS
    assert _metric(server, "http_connections_refused", '{reason="evicted_waiting"}') > evicted_before


@pytest.mark.slow
def test_when_every_connection_is_busy_a_new_one_gets_a_json_503(server: Server) -> None:
    host, port = _address(server)

    async def scenario() -> tuple[attacks.WireResult, list[attacks.WireResult]]:
        # Requests in progress (headers done, body pending) cannot be evicted.
        stalled = [
            asyncio.ensure_future(
                attacks.stalled_body(host, port, declared=100, sent=10, max_wait_s=REQUEST_TIMEOUT_S + 5)
            )
            for _ in range(MAX_CONNECTIONS)
        ]
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            refused = await client.get("/health")
        result = attacks.WireResult(refused.status_code, 0, 0, 0.0, "closed", body=refused.content)
        assert refused.headers.get("retry-after") == "1"
        return result, list(await asyncio.gather(*stalled))

    refused, stalled = asyncio.run(scenario())
    assert refused.status == 503
    assert refused.json()["code"] == "too_many_connections"
    assert {r.status for r in stalled} == {504}  # REQUEST_TIMEOUT_S ends the stalled requests
    _served(server)


@pytest.mark.slow
@pytest.mark.parametrize("client", ["raw socket", "requests", "httpx"])
def test_an_early_413_is_readable_by_clients_that_send_the_whole_body_first(server: Server, client: str) -> None:
    size = 12 * MAX_REQUEST_BYTES  # within the bounded drain (2 x MAX_REQUEST_BYTES is read at most... then close)
    host, port = _address(server)
    body = b"\xff\xd8" + b"\0" * (size - 2)
    if client == "raw socket":
        result = asyncio.run(attacks.early_413_read(host, port, body_bytes=size))
        status, payload = result.status, result.json()
    elif client == "requests":
        response = requests.post(f"{server.url}/predict", data=body, headers={"Content-Type": "image/jpeg"}, timeout=30)
        status, payload = response.status_code, response.json()
    else:
        with httpx.Client(timeout=30) as http:
            answer = http.post(f"{server.url}/predict", content=body, headers={"Content-Type": "image/jpeg"})
        status, payload = answer.status_code, answer.json()
    assert status == 413
    assert payload["code"] == "request_too_large"


@pytest.mark.slow
def test_a_body_beyond_the_drain_bound_is_not_read_to_its_end(server: Server) -> None:
    host, port = _address(server)
    before = _metric(server, "http_connections_refused", '{reason="drain_limit"}')
    result = asyncio.run(attacks.early_413_read(host, port, body_bytes=400 * MAX_REQUEST_BYTES, max_wait_s=15))
    assert result.sent < 400 * MAX_REQUEST_BYTES  # the server stopped reading and closed
    assert _metric(server, "http_connections_refused", '{reason="drain_limit"}') > before
    _served(server)


@pytest.mark.slow
def test_request_bodies_share_one_memory_budget_and_give_it_back(server: Server) -> None:
    host, port = _address(server)
    declared = MAX_REQUEST_BYTES - 1000

    async def scenario() -> tuple[list[attacks.WireResult], httpx.Response, float]:
        stalled = [
            asyncio.ensure_future(
                attacks.stalled_body(
                    host, port, declared=declared, sent=declared - 100, max_wait_s=REQUEST_TIMEOUT_S + 5
                )
            )
            for _ in range(2)
        ]
        await asyncio.sleep(1.0)  # both uploads are held: the budget (2 x MAX_REQUEST_BYTES) is nearly spent
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            started = time.monotonic()
            refused = await client.post("/predict", content=PHOTO, headers={"Content-Type": "image/jpeg"})
            elapsed = time.monotonic() - started
        return list(await asyncio.gather(*stalled)), refused, elapsed

    stalled, refused, elapsed = asyncio.run(scenario())
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "server_busy"
    assert refused.headers["retry-after"] == "1"
    assert elapsed < 1.0
    assert [r.status for r in stalled] == [504, 504]
    assert _metric(server, "upload_memory_bytes") == 0
    _served(server)
