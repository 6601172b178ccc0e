"""The HTTP API through FastAPI's TestClient: answers, errors, readiness, docs, metrics."""

from __future__ import annotations

import io
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, get_args

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from backend.classifier import Classifier, RuntimeName
from backend.config import Settings
from backend.routes.v2 import PLATFORMS
from backend.service import default_factory
from tests.backend.conftest import assert_error, png_claiming, post_streamed, wait_ready
from tests.helpers import CAT, CAT_CLASSES, COFFEE, SKIMAGE_DATA, jpeg_bytes

CAT_JPEG = jpeg_bytes(CAT)
COFFEE_JPEG = jpeg_bytes(COFFEE)


def test_multipart_upload_is_classified(client: TestClient) -> None:
    response = client.post("/predict", files={"file": ("cat.jpg", CAT_JPEG, "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "efficientnet_lite0"
    assert body["top_k"] == 5
    (result,) = body["results"]
    assert result["filename"] == "cat.jpg"
    assert (result["format"], result["width"], result["height"]) == ("JPEG", 451, 300)
    predictions = result["predictions"]
    assert len(predictions) == 5
    assert predictions[0]["label"] in CAT_CLASSES
    assert predictions[0]["index"] in {281, 282, 285}
    probabilities = [p["probability"] for p in predictions]
    assert probabilities == sorted(probabilities, reverse=True)
    assert body["elapsed_ms"] > 0


@pytest.mark.parametrize("content_type", ["image/jpeg", "application/octet-stream", None])
def test_raw_body_is_classified(client: TestClient, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/predict", content=COFFEE_JPEG, headers=headers)
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["filename"] is None
    assert result["predictions"][0]["label"] == "espresso"


def test_several_files_keep_their_order_and_names(client: TestClient) -> None:
    files = [
        ("file", ("a-coffee.jpg", COFFEE_JPEG, "image/jpeg")),
        ("file", ("b-cat.png", CAT.read_bytes(), "image/png")),
        ("file", ("c-coffee.png", COFFEE.read_bytes(), "image/png")),
    ]
    response = client.post("/predict", params={"top_k": 3}, files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["filename"] for r in results] == ["a-coffee.jpg", "b-cat.png", "c-coffee.png"]
    assert [r["predictions"][0]["label"] in CAT_CLASSES for r in results] == [False, True, False]
    assert results[0]["predictions"][0]["label"] == "espresso"
    assert all(len(r["predictions"]) == 3 for r in results)


def test_top_k_1000_returns_every_class_summing_to_one(client: TestClient) -> None:
    response = client.post("/predict?top_k=1000", content=CAT_JPEG, headers={"Content-Type": "image/jpeg"})
    predictions = response.json()["results"][0]["predictions"]
    assert len(predictions) == 1000
    assert sum(p["probability"] for p in predictions) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("top_k", ["0", "1001", "-3", "five", "3_0", "+3", "3.0", "%203", "3%20", "%EF%BC%93", "0x3"])
def test_top_k_out_of_range_or_not_a_plain_decimal_is_422(client: TestClient, top_k: str) -> None:
    response = client.post(f"/predict?top_k={top_k}", content=CAT_JPEG, headers={"Content-Type": "image/jpeg"})
    body = assert_error(response, 422, "invalid_request")
    assert "top_k" in body["detail"]


@pytest.mark.parametrize(("top_k", "returned"), [("3", 3), ("03", 3), ("1000", 1000)])
def test_top_k_in_plain_decimal_digits_is_taken(client: TestClient, top_k: str, returned: int) -> None:
    response = client.post(f"/predict?top_k={top_k}", content=CAT_JPEG, headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200, response.text
    assert len(response.json()["results"][0]["predictions"]) == returned


def test_every_answer_forbids_content_sniffing(client: TestClient) -> None:
    for response in (
        client.get("/health"),
        client.get("/ready"),
        client.get("/nowhere"),
        client.post("/predict", content=b"<html><script>alert(1)</script>", headers={"Content-Type": "text/html"}),
        client.post("/predict", content=CAT_JPEG, headers={"Content-Type": "image/jpeg"}),
    ):
        assert response.headers["x-content-type-options"] == "nosniff", response.url


@pytest.mark.parametrize("length", [71, 257, 5000])
def test_a_multipart_boundary_longer_than_rfc_2046_allows_is_400(client: TestClient, length: int) -> None:
    boundary = "b" * length
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'.encode()
    body += CAT_JPEG + f"\r\n--{boundary}--\r\n".encode()
    response = client.post(
        "/predict", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    body_json = assert_error(response, 400, "invalid_multipart")
    assert "70" in body_json["detail"]


def test_bytes_after_the_closing_boundary_are_not_read(client: TestClient) -> None:
    boundary = "x" * 30
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'.encode()
    body += CAT_JPEG + f"\r\n--{boundary}--\r\n".encode() + b"junk that is never parsed " * 100_000
    response = client.post(
        "/predict", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status_code == 200, response.text


def test_a_bmp_with_rle_compression_is_refused_from_its_header(client: TestClient) -> None:
    from tests.hostile.attacks import bmp_rle

    response = client.post("/predict", files={"file": ("rle.bmp", bmp_rle(64, 64), "image/bmp")})
    body = assert_error(response, 415, "unsupported_image")
    assert "RLE" in body["detail"]


@pytest.mark.slow  # spends the decode CPU budget
def test_an_image_over_its_decode_cpu_budget_is_422(make_client: Callable[..., TestClient]) -> None:
    from tests.hostile.attacks import progressive_jpeg_scans

    client = make_client(decode_timeout_s=0.3)
    started = time.monotonic()
    response = client.post("/predict", files={"file": ("scans.jpg", progressive_jpeg_scans(), "image/jpeg")})
    body = assert_error(response, 422, "decode_timeout")
    assert time.monotonic() - started < 5
    assert "0.3 s of CPU" in body["detail"]
    assert client.post("/predict", content=CAT_JPEG).status_code == 200  # the decoder was replaced


def test_empty_body_is_400(client: TestClient) -> None:
    body = assert_error(client.post("/predict"), 400, "no_image")
    assert "curl" in body["detail"]


def test_form_without_a_file_part_is_400(client: TestClient) -> None:
    response = client.post("/predict", files={"image": (None, "not a file")})  # multipart, one text field
    body = assert_error(response, 400, "no_image")
    assert "image" in body["detail"]


def test_text_file_named_jpg_is_415(client: TestClient) -> None:
    files = {"file": ("cat.jpg", b"I am not a cat, I am a text file.\n" * 10, "image/jpeg")}
    body = assert_error(client.post("/predict", files=files), 415, "unsupported_image")
    assert body["filename"] == "cat.jpg"
    assert "JPEG, PNG" in body["detail"]


def test_truncated_jpeg_is_400(client: TestClient) -> None:
    files = {"file": ("cut.jpg", CAT_JPEG[: len(CAT_JPEG) // 2], "image/jpeg")}
    assert_error(client.post("/predict", files=files), 400, "invalid_image")


def test_unsupported_format_is_415(client: TestClient) -> None:
    out = io.BytesIO()
    Image.new("RGB", (32, 32)).save(out, "PCX")
    assert_error(client.post("/predict", content=out.getvalue()), 415, "unsupported_image")


def test_one_bad_file_among_good_ones_names_the_bad_one(client: TestClient) -> None:
    files = [("file", ("good.jpg", CAT_JPEG, "image/jpeg")), ("file", ("bad.jpg", b"garbage" * 50, "image/jpeg"))]
    body = assert_error(client.post("/predict", files=files), 415, "unsupported_image")
    assert (body["filename"], body["index"]) == ("bad.jpg", 1)
    assert body["detail"].startswith("bad.jpg:")


def test_image_over_the_byte_limit_is_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_image_bytes=len(CAT_JPEG) - 1)
    for response in (
        client.post("/predict", files={"file": ("cat.jpg", CAT_JPEG)}),
        client.post("/predict", content=CAT_JPEG),
    ):
        body = assert_error(response, 413, "image_too_large")
        # The upload reader's words ("An image is larger than..."), not the decoder's ("The image is N bytes"):
        # the image was refused while it was read, not handed to a decoder.
        assert body["detail"].startswith("An image is larger than the limit"), body


CHUNK = 64 * 1024


def _multipart(boundary: str, image: bytes, padding: list[bytes]) -> list[bytes]:
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n'.encode()
    return [head, image, *padding, f"\r\n--{boundary}--\r\n".encode()]


@pytest.mark.parametrize("shape", ["raw", "multipart"])
def test_an_image_over_the_byte_limit_is_refused_while_it_arrives_not_read_to_its_end(
    make_client: Callable[..., TestClient], shape: str
) -> None:
    limit = 4 * CHUNK
    client = make_client(max_image_bytes=limit)  # the request limit (32 MB) is far away
    padding = [b"\0" * CHUNK] * 128  # a photo followed by 8 MB
    if shape == "raw":
        sent = post_streamed(client, [CAT_JPEG, *padding], {"Content-Type": "image/jpeg"})
    else:
        boundary = "b" * 30
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        sent = post_streamed(client, _multipart(boundary, CAT_JPEG, padding), headers)
    assert_error(sent.response, 413, "image_too_large")
    assert sent.pulled <= len(CAT_JPEG) + limit + 2 * CHUNK, (sent.pulled, sent.sent)  # stopped at the limit
    assert sent.sent > 10 * sent.pulled


@pytest.mark.parametrize("shape", ["raw", "multipart"])
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_body_over_the_request_limit_is_413_before_reading_it(
    make_client: Callable[..., TestClient], shape: str, declared: bool
) -> None:
    limit = 4 * CHUNK
    client = make_client(max_request_bytes=limit, max_image_bytes=16 * limit)  # only the request limit applies
    padding = [b"\0" * CHUNK] * 128
    boundary = "b" * 30
    if shape == "raw":
        chunks, headers = [CAT_JPEG, *padding], {"Content-Type": "image/jpeg"}
    else:
        chunks = _multipart(boundary, CAT_JPEG, padding)
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    if declared:
        headers["Content-Length"] = str(sum(len(c) for c in chunks))
    sent = post_streamed(client, chunks, headers)
    body = assert_error(sent.response, 413, "request_too_large")
    assert "per request" in body["detail"]
    if declared:
        assert sent.pulled == 0  # refused from its Content-Length: not one byte of the body was read
    else:
        assert sent.pulled <= limit + CHUNK, (sent.pulled, sent.sent)  # counted as it came, refused at the limit


def test_image_over_the_pixel_limit_is_413_from_its_header(make_client: Callable[..., TestClient]) -> None:
    claims_a_megapixel = png_claiming(1000, 1000)  # its pixel data ends after four rows
    body = assert_error(make_client(max_image_pixels=100_000).post("/predict", content=claims_a_megapixel), 413)
    assert body["code"] == "image_too_large"
    assert "megapixels" in body["detail"]
    # Within the limit, the decoder reads the pixels and finds them cut short: had the pixel limit been checked
    # only after decoding, that is the answer the first request would have had.
    within = make_client(max_image_pixels=2_000_000).post("/predict", content=claims_a_megapixel)
    assert_error(within, 400, "invalid_image")


def test_too_many_files_is_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_files=3)
    files = [("file", (f"{i}.jpg", CAT_JPEG, "image/jpeg")) for i in range(4)]
    body = assert_error(client.post("/predict", files=files), 413, "too_many_files")
    assert "at most 3" in body["detail"]
    assert client.post("/predict", files=files[:3]).status_code == 200


def test_uploads_never_touch_the_disk(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an upload was about to be written to a temporary file")

    for name in ("SpooledTemporaryFile", "NamedTemporaryFile", "TemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    big = jpeg_bytes(CAT, size=(3000, 2000), quality=98)
    assert len(big) > 1_000_000  # larger than Starlette's 1 MB in-memory spool
    response = client.post("/predict", files=[("file", ("big.jpg", big, "image/jpeg"))] * 2)
    assert response.status_code == 200, response.text


def test_filenames_are_sanitised_before_being_echoed(client: TestClient) -> None:
    # Written by hand: HTTP clients would percent-encode the control characters.
    body = (
        b"--b0undary\r\n"
        b'Content-Disposition: form-data; name="file"; filename="..\\..\\etc/\x07pass\twd.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + CAT_JPEG + b"\r\n--b0undary--\r\n"
    )
    response = client.post("/predict", content=body, headers={"Content-Type": "multipart/form-data; boundary=b0undary"})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["filename"] == "passwd.jpg"


def test_every_runtime_has_a_v2_platform_name() -> None:
    """The v2 model metadata names the runtime's Triton platform: a runtime without one would answer 500."""
    assert set(PLATFORMS) == set(get_args(RuntimeName))


def test_health_ready_and_model(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json()["status"] == "ready"
    info = client.get("/model").json()
    assert info["name"] == "efficientnet_lite0"
    assert info["source"] == "embedded"
    assert info["runtime"] == "openvino"  # the default (BENCHMARKS.md: the cheapest pass, the same answers)
    assert info["num_classes"] == 1000
    assert info["input_size"] == [224, 224, 3]
    assert info["preprocessing"]["resize_size"] == 256
    assert "efficientnet-lite0" in info["weights"]


@pytest.mark.slow  # OpenVINO compiles the model
def test_runtime_openvino_gives_the_same_answers(client: TestClient, make_client: Callable[..., TestClient]) -> None:
    """RUNTIME=openvino, loaded as the service loads it: the same top-5 as ONNX Runtime on real photos."""
    openvino = make_client(factory=default_factory, runtime="openvino")
    assert openvino.get("/model").json()["runtime"] == "openvino"
    photos = [CAT_JPEG, COFFEE_JPEG, CAT.read_bytes(), jpeg_bytes(SKIMAGE_DATA / "astronaut.png")]
    files = [("file", (f"{i}.img", photo, "application/octet-stream")) for i, photo in enumerate(photos)]
    answers = [c.post("/predict", files=files).json()["results"] for c in (client, openvino)]
    for ours, reference in zip(*answers, strict=True):
        assert [p["index"] for p in ours["predictions"]] == [p["index"] for p in reference["predictions"]]
        for a, b in zip(ours["predictions"], reference["predictions"], strict=True):
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)
    assert answers[1][0]["predictions"][0]["label"] in CAT_CLASSES
    assert answers[1][1]["predictions"][0]["label"] == "espresso"


def test_not_ready_until_the_model_is_loaded(
    make_client: Callable[..., TestClient], onnx_classifier: Classifier
) -> None:
    gate = threading.Event()

    def slow_factory(_: Settings) -> Classifier:
        assert gate.wait(30)
        return onnx_classifier

    client = make_client(factory=slow_factory, wait=False)
    assert client.get("/health").status_code == 200
    ready = client.get("/ready")
    assert (ready.status_code, ready.json()["status"]) == (503, "loading")
    assert ready.headers["retry-after"]
    response = client.post("/predict", content=CAT_JPEG)
    assert_error(response, 503, "model_loading")
    assert response.headers["retry-after"]
    assert_error(client.get("/model"), 503)
    gate.set()
    wait_ready(client)
    assert client.post("/predict", content=CAT_JPEG).status_code == 200


def test_a_model_that_fails_to_load_is_reported(make_client: Callable[..., TestClient]) -> None:
    def broken(_: Settings) -> Classifier:
        raise RuntimeError("weights file is corrupt")

    client = make_client(factory=broken, wait=False)
    deadline = time.monotonic() + 10
    while client.get("/ready").json()["status"] == "loading":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    ready = client.get("/ready")
    assert ready.status_code == 503
    # /ready is open to anyone (probes): it names the kind of failure, never its message (paths, internals)
    assert ready.json() == {"status": "failed", "detail": "RuntimeError; the server's log has the details"}
    body = assert_error(client.post("/predict", content=CAT_JPEG), 503, "model_failed")
    assert "RuntimeError" in body["detail"]
    assert "corrupt" not in body["detail"]


def test_unknown_route_is_json_404(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/predict"), 405, "method_not_allowed")


def test_openapi_documents_every_response_with_a_schema(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/predict"]["post"]
    assert set(predict["requestBody"]["content"]) >= {"multipart/form-data", "image/jpeg", "application/octet-stream"}
    for status in ("200", "400", "413", "415", "422", "503"):
        schema = predict["responses"][status]["content"]["application/json"]["schema"]
        assert "$ref" in schema, (status, schema)
    assert predict["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    for path in ("/health", "/ready", "/model"):
        assert "$ref" in spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]


def test_metrics_count_requests_batches_and_model(client: TestClient) -> None:
    client.post("/predict", content=CAT_JPEG)
    client.post("/predict", content=b"junk" * 100)
    text = client.get("/metrics").text
    assert 'http_requests_total{method="POST",route="/predict",status="200"} 1.0' in text
    assert 'http_requests_total{method="POST",route="/predict",status="415"} 1.0' in text
    assert "inference_batch_size_count 1.0" in text
    assert 'image_errors_total{code="unsupported_image"} 1.0' in text
    assert "images_classified_total 1.0" in text
    assert 'model_info{name="efficientnet_lite0"' in text
    assert "model_ready 1.0" in text
    assert "inference_queue_depth" in text
    assert "http_request_duration_seconds_bucket" in text


class _GatedRuntime:
    """The real model behind a gate: while ``open`` is clear, forward passes wait (images stay admitted)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.parallel_calls = 1
        self.open = threading.Event()
        self.open.set()  # warm-up passes through

    def __call__(self, images: Any) -> Any:
        assert self.open.wait(60), "the test never opened the gate"
        return self.inner(images)


class _Held:
    """Requests posted from threads while the model is held; their responses once it is released."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.responses: list[Any] = []
        self.threads: list[threading.Thread] = []

    def post(self, **kwargs: Any) -> None:
        thread = threading.Thread(target=lambda: self.responses.append(self.client.post("/predict", **kwargs)))
        thread.start()
        self.threads.append(thread)

    def join(self) -> list[int]:
        for thread in self.threads:
            thread.join(60)
        return sorted(r.status_code for r in self.responses)


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.fixture
def held(make_client: Callable[..., TestClient], onnx_classifier: Classifier) -> Iterator[tuple[TestClient, Any]]:
    """A server whose model is held shut once it is ready: images admitted stay admitted until ``open``."""
    runtime = _GatedRuntime(onnx_classifier.runtime)
    gated = Classifier(onnx_classifier.info, runtime)
    client = make_client(factory=lambda _: gated, max_queue_size=7, max_batch_size=1, max_files=2)
    runtime.open.clear()
    try:
        yield client, runtime.open
    finally:
        runtime.open.set()


def test_images_admitted_and_not_answered_are_counted_and_the_next_is_refused_before_decoding(
    held: tuple[TestClient, Any],
) -> None:
    client, gate = held
    service = client.app.state.service  # type: ignore[attr-defined]
    assert service.capacity == 8  # a queue of 7 and one batch of 1 in the model
    requests = _Held(client)
    for _ in range(8):
        requests.post(content=CAT_JPEG, headers={"Content-Type": "image/jpeg"})
    # The batcher's own count, not the one under test: all 8 images are decoded and waiting on the model.
    _until(lambda: service.batcher.in_flight == 8, "8 images never reached the batcher")
    assert service.admitted == 8
    # One more is refused before its body is decoded: not an image, it would be 415 had it been decoded.
    response = client.post("/predict", content=b"not an image " * 100, headers={"Content-Type": "image/jpeg"})
    body = assert_error(response, 503, "overloaded")
    assert "Retry" in body["detail"]
    assert response.headers["retry-after"] == "1"
    gate.set()
    assert requests.join() == [200] * 8
    assert service.admitted == 0  # every admitted image was given back
    assert client.post("/predict", content=CAT_JPEG).status_code == 200
    assert "requests_shed_total 1.0" in client.get("/metrics").text


def test_the_last_quarter_of_the_capacity_is_kept_for_one_image_requests(held: tuple[TestClient, Any]) -> None:
    client, gate = held
    service = client.app.state.service  # type: ignore[attr-defined]
    requests = _Held(client)
    for _ in range(6):  # three quarters of the capacity of 8, filled by real requests
        requests.post(content=CAT_JPEG, headers={"Content-Type": "image/jpeg"})
    _until(lambda: service.batcher.in_flight == 6, "6 images never reached the batcher")
    two = client.post("/predict", files=[("file", ("a.jpg", CAT_JPEG)), ("file", ("b.jpg", CAT_JPEG))])
    assert_error(two, 503, "overloaded")
    requests.post(content=CAT_JPEG, headers={"Content-Type": "image/jpeg"})  # one image: still admitted
    requests.post(content=CAT_JPEG, headers={"Content-Type": "image/jpeg"})  # and the last place
    _until(lambda: service.batcher.in_flight == 8, "the one-image requests were not admitted")
    one_too_many = client.post("/predict", content=b"not an image " * 100, headers={"Content-Type": "image/jpeg"})
    assert_error(one_too_many, 503, "overloaded")
    gate.set()
    assert requests.join() == [200] * 8
    two = client.post("/predict", files=[("file", ("a.jpg", CAT_JPEG)), ("file", ("b.jpg", CAT_JPEG))])
    assert two.status_code == 200, two.text


def test_settings_refuse_more_files_per_request_than_the_queue_holds() -> None:
    with pytest.raises(ValueError, match="MAX_FILES"):
        Settings(_env_file=None, max_files=20, max_queue_size=10)


class _SlowRuntime:
    """An ONNX runtime whose forward passes take ``seconds`` (a wedged model, for the liveness check)."""

    def __init__(self, inner: Any, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds
        self.name, self.parallel_calls = inner.name, inner.parallel_calls

    def __call__(self, images: Any) -> Any:
        time.sleep(self.seconds)
        return self.inner(images)


@pytest.mark.slow  # waits out a wedged forward pass
def test_health_fails_while_a_forward_pass_is_wedged(
    make_client: Callable[..., TestClient], onnx_classifier: Classifier
) -> None:
    wedged = Classifier(onnx_classifier.info, _SlowRuntime(onnx_classifier.runtime, 0.0))
    client = make_client(factory=lambda _: wedged, stall_timeout_s=0.5)
    assert client.get("/health").json() == {"status": "ok"}
    wedged.runtime.seconds = 3.0  # type: ignore[attr-defined]
    worker = threading.Thread(target=lambda: client.post("/predict", content=CAT_JPEG))
    worker.start()
    try:
        deadline = time.monotonic() + 2.5
        while (health := client.get("/health")).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert health.status_code == 503
        assert health.json()["status"] == "wedged"
        assert "forward pass" in health.json()["detail"]
    finally:
        worker.join()
    assert client.get("/health").status_code == 200  # it finished: healthy again
