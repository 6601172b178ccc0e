"""The HTTP client: what each backend answer becomes, timeouts, concurrency and the JSON log lines."""

from __future__ import annotations

import gzip
import itertools
import json
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from frontend import backend_client
from frontend.backend_client import Backend, BackendError, Classification, ImageInput
from frontend.config import FrontendSettings
from frontend.logs import configure_logging
from tests.helpers import free_port
from tests.helpers.fakes import (
    FAKE_VERSION,
    MODEL_INFO,
    BackendBehaviour,
    FakeServer,
    Reply,
    fake_backend,
    prediction,
    running,
)

IMAGE = ImageInput("cat.jpg", b"\xff\xd8\xff fake jpeg", "image/jpeg")


def client(server: FakeServer | str, **settings: object) -> Backend:
    url = server.url if isinstance(server, FakeServer) else server
    return Backend(FrontendSettings(backend_url=url, **settings))  # type: ignore[arg-type]


def failure(backend: Backend, image: ImageInput = IMAGE) -> BackendError:
    with pytest.raises(BackendError) as caught:
        backend.predict(image, top_k=3)
    return caught.value


def test_a_prediction_is_parsed(backend: FakeServer) -> None:
    result = client(backend).predict(IMAGE, top_k=4)

    assert isinstance(result, Classification)
    assert [p.label for p in result.predictions] == ["tabby", "tiger cat", "Egyptian cat", "lynx"]
    assert result.predictions[0].probability == pytest.approx(0.62)
    assert (result.width, result.height, result.format, result.model) == (451, 300, "JPEG", "efficientnet_lite0")
    assert result.backend_ms == pytest.approx(12.5)
    assert result.model_version == FAKE_VERSION
    assert result.round_trip_ms > 0
    sent = backend.requests[-1]
    assert sent.path == "/predict?top_k=4"
    assert sent.headers["Content-Type"].startswith("multipart/form-data")
    assert b'name="file"; filename="cat.jpg"' in sent.body


def test_a_loading_model_is_a_start_with_retry_after(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    behaviour.predict_status = 503
    behaviour.predict_error = {"detail": "The model is loading. Retry in a few seconds.", "code": "model_loading"}
    behaviour.predict_headers = {"Retry-After": "5"}

    error = failure(client(backend))

    assert error.kind == "starting"  # a cold start: the page shows it as neutral, not as an error
    assert error.title == "The backend is starting. Retry in 5 s."
    assert error.detail == "The model is loading. Retry in a few seconds."
    assert not error.affects_one_image


def test_not_ready_is_reported_with_retry_after(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    behaviour.predict_status = 503
    behaviour.predict_error = {"detail": "The server is shutting down.", "code": "model_stopping"}
    behaviour.predict_headers = {"Retry-After": "5"}

    error = failure(client(backend))

    assert (error.kind, error.title) == ("not_ready", "The backend is not ready yet. Retry in 5 s.")


def test_overloaded_is_reported_as_busy(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    behaviour.predict_status = 503
    behaviour.predict_error = {"detail": "The server is at capacity (64 images queued).", "code": "overloaded"}
    behaviour.predict_headers = {"Retry-After": "1"}

    error = failure(client(backend))

    assert (error.kind, error.title) == ("not_ready", "The backend is busy. Retry in 1 s.")
    assert "at capacity" in error.detail


def test_the_backends_own_timeout(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    behaviour.predict_status = 504
    behaviour.predict_error = {"detail": "The request took too long. Retry, or send fewer images.", "code": "timeout"}

    error = failure(client(backend))

    assert (error.kind, error.title, error.code) == ("timeout", "The backend took too long.", "timeout")
    assert error.detail.startswith("The request took too long.")


def test_a_rejected_image_carries_the_backends_explanation(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    behaviour.reject = {"notes.jpg"}

    error = failure(client(backend), ImageInput("notes.jpg", b"just text", "image/jpeg"))

    assert (error.kind, error.status, error.code) == ("rejected", 415, "unsupported_image")
    assert error.detail.startswith("notes.jpg: not an image")
    assert error.affects_one_image


def test_an_html_error_page_becomes_a_short_message(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    behaviour.predict_status = 502
    behaviour.predict_error = b"<!DOCTYPE html><html><body><h1>502 Server Error</h1>...</body></html>"
    behaviour.predict_headers = {"Content-Type": "text/html; charset=UTF-8"}

    error = failure(client(backend))

    assert (error.kind, error.title, error.detail) == (
        "server_error",
        "The backend failed (502).",
        "HTTP 502 Bad Gateway",
    )


def test_a_malformed_answer_is_not_a_crash(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    behaviour.predict_body = {"results": []}

    error = failure(client(backend))

    assert error.kind == "server_error"
    assert "not the expected JSON" in error.title


def test_a_slow_backend_hits_the_timeout(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    behaviour.predict_delay_s = 5.0

    error = failure(client(backend, backend_timeout_s=0.5))

    assert error.kind == "timeout"
    assert error.title == "The backend did not answer within 0.5 s."
    assert "BACKEND_TIMEOUT_S" in error.detail


def test_nothing_listening_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    backend = client(url)

    first = failure(backend)
    assert first.kind == "starting"  # never answered, and the frontend only just began: it may be starting
    assert first.title == "The backend is starting."
    assert first.detail.startswith(f"Nothing accepts connections at {url} yet.")

    monkeypatch.setattr(backend_client, "STARTING_GRACE_S", 0.0)  # ... but not for ever
    error = failure(backend)
    assert error.kind == "unreachable"
    assert error.title == f"The backend at {url} is not answering."
    assert "Retry" in error.detail


def test_a_backend_that_answered_and_now_refuses_is_unreachable_at_once() -> None:
    with running(fake_backend(BackendBehaviour())) as server:
        backend = client(server)
        assert backend.status().ready
    assert backend.status().state == "unreachable"
    assert failure(backend).kind == "unreachable"


def test_images_are_sent_concurrently_and_answered_in_order(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    """Two requests must be in flight at once to pass the barrier: sent one by one, both would fail."""
    behaviour.barrier = threading.Barrier(2, timeout=20)
    behaviour.reject = {"bad.jpg"}
    images = [ImageInput(name, b"\xff\xd8\xff", "image/jpeg") for name in ("a.jpg", "bad.jpg", "c.jpg", "d.jpg")]

    outcomes = client(backend, predict_concurrency=2).predict_many(images, top_k=2)

    assert [type(o).__name__ for o in outcomes] == [
        "Classification",
        "BackendError",
        "Classification",
        "Classification",
    ]
    assert [o.filename for o in outcomes if isinstance(o, Classification)] == ["a.jpg", "c.jpg", "d.jpg"]
    rejected = outcomes[1]
    assert isinstance(rejected, BackendError)
    assert rejected.detail.startswith("bad.jpg: not an image")
    assert len(backend.paths("POST")) == 4  # one request per image


def test_status_reports_ready_and_the_model(backend: FakeServer) -> None:
    status = client(backend).status()

    assert status.ready
    assert status.location is not None
    assert status.location.url == backend.url
    assert status.model is not None
    assert (status.model.name, status.model.num_classes, status.model.input_size) == (
        MODEL_INFO["name"],
        1000,
        (224, 224, 3),
    )


def test_status_while_loading(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    behaviour.ready = False

    status = client(backend).status()

    assert (status.ready, status.starting, status.state, status.model) == (False, True, "starting", None)
    assert status.problem is not None
    assert (status.problem.title, status.problem.detail) == (
        "The backend is starting.",
        "It is loading its model. The page asks again each time it runs: click Retry in a few seconds.",
    )


def test_status_when_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    backend = client(url)
    assert backend.status().state == "starting"  # connection refused, before it ever answered

    monkeypatch.setattr(backend_client, "STARTING_GRACE_S", 0.0)
    status = backend.status()

    assert status.state == "unreachable"
    assert "not answering" in status.detail


def test_status_when_too_slow_is_a_cold_start(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    """Cloud Run holds a request to a backend scaled to zero until an instance has started: longer than
    STATUS_TIMEOUT_S is a start, not an error (the next page run asks again)."""
    behaviour.ready_delay_s = 5.0

    status = client(backend, status_timeout_s=0.3).status()

    assert (status.state, status.starting) == ("starting", True)
    assert status.detail.startswith("The backend is starting. It did not answer within 0.3 s (STATUS_TIMEOUT_S)")
    assert "--min-instances=1" in status.detail
    behaviour.ready_delay_s = 0
    assert client(backend, status_timeout_s=0.3).status().ready


@pytest.mark.parametrize(
    ("status_code", "code", "says", "remedy"),
    [
        (401, "missing_token", "The frontend sent no identity token", "Set BACKEND_AUTH=id_token"),
        (401, "wrong_audience", "the backend expects another audience", "Set BACKEND_AUDIENCE"),
        (401, "wrong_issuer", "not issued by Google", "GOOGLE_APPLICATION_CREDENTIALS"),
        (403, "forbidden_identity", "The backend does not accept the frontend's service account.", "roles/run.invoker"),
        (403, None, "", "roles/run.invoker"),  # Cloud Run's own refusal names no cause: the likeliest remedy
    ],
)
def test_status_is_not_ready_when_the_backend_refuses_the_frontend(
    backend: FakeServer, behaviour: BackendBehaviour, status_code: int, code: str | None, says: str, remedy: str
) -> None:
    """/ready needs no token, /model and /predict do: a backend refusing the frontend is not "Ready"."""
    body = {"detail": "Refused by the backend's token check.", **({"code": code} if code else {})}
    behaviour.refusal = Reply(status_code, body)

    status = client(backend).status()

    assert not status.ready
    assert status.state == "unauthorized"
    assert status.problem is not None
    assert status.problem.title == f"The backend at {backend.url} refused the request ({status_code})."
    assert status.problem.detail.startswith("Refused by the backend's token check. ")
    assert says in status.problem.detail
    assert remedy in status.problem.detail
    assert backend.paths("GET") == ["/ready", "/model"]
    behaviour.refusal = None
    assert client(backend).status().ready


def test_the_model_is_asked_at_every_status_check(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    """A refusal that starts later (a role revoked) is seen by the next status check, not hidden by a cache."""
    checked = client(backend)
    assert checked.status().ready
    behaviour.refusal = Reply(403, {"detail": "This identity may not call the service.", "code": "forbidden_identity"})
    assert checked.status().state == "unauthorized"
    assert checked.max_image_bytes() == MODEL_INFO["max_image_bytes"]  # what /model said is still known


def test_status_when_not_configured() -> None:
    status = Backend(FrontendSettings()).status()  # no BACKEND_URL, no credentials (fixture)

    assert status.state == "not_configured"
    assert status.location is None
    assert "BACKEND_URL" in status.detail


def test_log_lines_are_json_for_cloud_logging(backend: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    configure_logging("INFO")  # configuring twice must not log twice
    capsys.readouterr()
    started = time.time()

    client(backend).predict(IMAGE, top_k=3)
    client(f"http://127.0.0.1:{free_port()}").status()

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    classified = [line for line in lines if line["message"] == "classified an image"]
    assert len(classified) == 1
    assert classified[0]["severity"] == "INFO"
    assert classified[0]["image"] == "cat.jpg"
    assert classified[0]["label"] == "tabby"
    assert classified[0]["time"] >= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started - 1))
    unreachable = [line for line in lines if line["message"] == "the backend is unreachable"]
    assert unreachable
    assert unreachable[0]["severity"] == "WARNING"


# --- a hostile backend: answers too large, too slow, or not what they claim


HUGE = 10 * 1024 * 1024  # 10 MB: what took the page from 190 MB to 621 MB before answers were capped


def huge_json() -> bytes:
    return json.dumps({"detail": "x" * HUGE}).encode()


def test_a_huge_answer_is_refused_without_reading_it(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    behaviour.replies["/predict"] = Reply(200, huge_json())
    tracemalloc.start()
    try:
        started = time.perf_counter()
        error = failure(client(backend))
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert (error.kind, error.title) == ("server_error", "The backend's answer was too large.")
    assert "10.0 MB" in error.detail
    assert peak < 2 * 1024 * 1024  # the 10 MB were never held (reading them whole took 30 MB and more)
    assert seconds < 5


@pytest.mark.parametrize("status", [200, 415, 503])
def test_a_huge_answer_without_a_length_is_cut_at_the_limit(
    backend: FakeServer, behaviour: BackendBehaviour, status: int
) -> None:
    """Chunked, so its size is unknown until read: reading stops just past MAX_ANSWER_BYTES."""
    sent = itertools.repeat(b"x" * 65536, HUGE // 65536)
    behaviour.replies["/predict"] = Reply(status, chunks=sent)
    tracemalloc.start()
    try:
        error = failure(client(backend))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert (error.kind, error.title) == ("server_error", "The backend's answer was too large.")
    assert peak < 4 * 1024 * 1024


def test_a_compressed_answer_cannot_unpack_to_gigabytes(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    bomb = gzip.compress(b" " * (200 * 1024 * 1024), compresslevel=9)  # 200 MB of spaces in 200 kB
    behaviour.replies["/predict"] = Reply(200, bomb, {"Content-Encoding": "gzip", "Content-Type": "application/json"})

    error = failure(client(backend))

    assert (error.kind, error.title) == ("server_error", "The backend's answer was too large.")
    assert "unpacked" in error.detail
    assert backend.requests[-1].headers["Accept-Encoding"] == "identity"  # we asked for no compression


def test_a_small_compressed_answer_is_read(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    body = gzip.compress(json.dumps(prediction("cat.jpg")).encode())
    behaviour.replies["/predict"] = Reply(200, body, {"Content-Encoding": "gzip", "Content-Type": "application/json"})

    assert client(backend).predict(IMAGE, top_k=3).predictions[0].label == "tabby"


def test_status_and_model_survive_huge_answers(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    behaviour.replies["/ready"] = Reply(503, chunks=itertools.repeat(b"{" * 65536, HUGE // 65536))
    status = client(backend).status()
    assert status.state == "server_error"
    assert status.detail.startswith("The backend's answer was too large.")

    del behaviour.replies["/ready"]
    behaviour.replies["/model"] = Reply(200, huge_json())
    status = client(backend).status()
    assert status.ready
    assert status.model is None  # no model details, and no crash


@pytest.mark.slow  # waits out a timeout
def test_an_endless_trickle_is_cut_at_the_timeout(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    """A body that never ends, a byte every 50 ms: each read is quick, so only a deadline stops it."""
    behaviour.replies["/predict"] = Reply(200, chunks=itertools.repeat(b" "), chunk_delay_s=0.05)

    started = time.perf_counter()
    error = failure(client(backend, backend_timeout_s=1.0))
    seconds = time.perf_counter() - started

    assert error.kind == "timeout"
    assert error.title == "The backend did not answer within 1 s."
    assert 0.9 < seconds < 2.0


@pytest.fixture
def trickling_headers() -> Iterator[str]:
    """A server that sends its status line and headers a byte every 50 ms, for ever."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)
                for byte in itertools.cycle(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000):
                    if stop.wait(0.05):
                        break
                    try:
                        connection.sendall(bytes([byte]))
                    except OSError:
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    listener.close()
    thread.join(timeout=5)


@pytest.mark.slow  # waits out a timeout
def test_headers_that_trickle_in_are_cut_at_the_timeout(trickling_headers: str) -> None:
    started = time.perf_counter()
    error = failure(client(trickling_headers, backend_timeout_s=1.0))
    seconds = time.perf_counter() - started
    status = client(trickling_headers, status_timeout_s=0.5).status()

    assert error.kind == "timeout"
    assert 0.9 < seconds < 2.0
    assert status.state == "starting"  # no answer within STATUS_TIMEOUT_S: taken for a cold start


def test_deeply_nested_json_is_not_a_crash(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    behaviour.replies["/predict"] = Reply(200, b"[" * 500_000)

    error = failure(client(backend))

    assert (error.kind, error.title) == ("server_error", "The backend's answer was not the expected JSON.")


@pytest.mark.parametrize(
    "body",
    [
        {**prediction("cat.jpg"), "results": [{**prediction("cat.jpg")["results"][0], "width": float("inf")}]},
        {
            **prediction("cat.jpg"),
            "results": [
                {
                    **prediction("cat.jpg")["results"][0],
                    "predictions": [{"index": 1, "label": "x", "probability": "NaN"}],
                }
            ],
        },
    ],
)
def test_answers_of_the_wrong_shape_are_errors(
    backend: FakeServer, behaviour: BackendBehaviour, body: dict[str, object]
) -> None:
    behaviour.predict_body = body

    error = failure(client(backend))

    assert (error.kind, error.title) == ("server_error", "The backend's answer was not the expected JSON.")


def test_no_more_classes_than_asked_for(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    many = prediction("cat.jpg", 3)
    many["results"][0]["predictions"] = [
        {"index": i, "label": f"class {i}", "probability": 0.001} for i in range(10_000)
    ]
    behaviour.predict_body = many

    result = client(backend).predict(IMAGE, top_k=3)

    assert [p.label for p in result.predictions] == ["class 0", "class 1", "class 2"]


def test_a_model_answer_of_the_wrong_shape_is_no_model(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    behaviour.model_info = {**MODEL_INFO, "num_classes": "a thousand", "input_size": 224}

    status = client(backend).status()

    assert status.ready
    assert status.model is None


def test_redirects_are_not_followed(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    with running(FakeServer(lambda request: Reply(200, prediction("cat.jpg")))) as elsewhere:
        behaviour.replies["/predict"] = Reply(307, b"", {"Location": f"{elsewhere.url}/predict"})

        error = failure(client(backend))

        assert error.kind == "server_error"
        assert elsewhere.requests == []


def test_an_odd_retry_after_is_not_repeated(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    behaviour.predict_status = 503
    behaviour.predict_error = {"detail": "loading", "code": "model_loading"}
    behaviour.predict_headers = {"Retry-After": "![x](http://127.0.0.1:9/pixel.png)"}

    error = failure(client(backend))

    assert error.title == "The backend is starting. Retry in a few seconds."


def test_an_image_over_the_backends_limit_is_not_sent(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    behaviour.model_info = {**MODEL_INFO, "max_image_bytes": 1000}
    backend_client = client(backend)
    assert backend_client.status().ready  # the page asks /model first, as the sidebar does

    error = failure(backend_client, ImageInput("big.png", b"\x89PNG" + b"\0" * 2000, "image/png"))

    assert (error.kind, error.code, error.title) == ("rejected", "too_large", "This image is too large.")
    assert error.detail == "big.png is 0.0 MB; the backend accepts images up to 0.0 MB."
    assert error.affects_one_image
    assert backend.paths("POST") == []
