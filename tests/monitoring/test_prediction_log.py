"""The prediction log (backend/predictions.py): records in Parquet with common.prediction_log's schema and layout,
right for real photos and for each route; the image statistics; a slow, broken or closing sink; off = nothing."""

from __future__ import annotations

import base64
import datetime
import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as ds  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from backend.app import create_app
from backend.classifier import Classifier, ImageLimits
from backend.config import Settings
from common.image_statistics import image_statistics
from common.prediction_log import IMAGE_STATISTICS, PARTITION, SCHEMA
from tests.backend.conftest import wait_ready
from tests.helpers import CAT, COFFEE, SKIMAGE_DATA, jpeg_bytes


def definitions(crop: np.ndarray) -> tuple[float, float, float, float]:
    """The four statistics as common.prediction_log defines them, in float64 arrays (independent of the code)."""
    rgb = crop.astype(np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    rg, yb = r - g, (r + g) / 2 - b
    laplacian = luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4 * luma[1:-1, 1:-1]
    colourfulness = np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    return float(luma.mean()), float(luma.std()), float(colourfulness), float(laplacian.var())


# --- the statistics


@pytest.mark.parametrize("shape", [(224, 224, 3), (3, 3, 3), (5, 17, 3), (300, 199, 3)])
def test_statistics_match_the_definitions_on_random_crops(shape: tuple[int, int, int]) -> None:
    crop = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    assert image_statistics(crop) == pytest.approx(definitions(crop), rel=1e-9, abs=1e-9)


def test_statistics_match_the_definitions_on_real_photos(classifier: Classifier) -> None:
    for path in (CAT, COFFEE, SKIMAGE_DATA / "astronaut.png"):
        crop = classifier.prepare(jpeg_bytes(path), ImageLimits()).pixels
        assert image_statistics(crop) == pytest.approx(definitions(crop), rel=1e-9)


def test_statistics_of_known_images() -> None:
    flat = np.full((224, 224, 3), 77, np.uint8)
    assert image_statistics(flat) == pytest.approx((77.0, 0.0, 0.0, 0.0), abs=1e-9)
    grey = np.repeat(np.random.default_rng(1).integers(0, 256, (224, 224, 1), dtype=np.uint8), 3, axis=2)
    stats = image_statistics(grey)
    assert stats.colourfulness == pytest.approx(0.0, abs=1e-9)
    assert stats.contrast > 50
    assert stats.sharpness > 1000
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255  # rg = 255, yb = 127.5, no spread: 0.3 * hypot(255, 127.5)
    assert image_statistics(red).colourfulness == pytest.approx(0.3 * np.hypot(255, 127.5))
    stripes = np.zeros((6, 6, 3), np.uint8)
    stripes[:, ::2] = 255  # every interior pixel: luma differs from its left and right by 255 -> |lap| = 510
    assert image_statistics(stripes).sharpness == pytest.approx(510.0**2, rel=1e-9)


def test_statistics_refuse_what_is_not_a_uint8_rgb_crop() -> None:
    with pytest.raises(ValueError, match="uint8"):
        image_statistics(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        image_statistics(np.zeros((4, 4), np.uint8))


# --- the app


@pytest.fixture
def make_client(model_cache: Path, classifier: Classifier) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = Settings(_env_file=None, model_cache_dir=model_cache, access_log=False, **overrides)
        client = TestClient(create_app(settings, lambda _: classifier), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        wait_ready(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def read_log(folder: Path) -> list[dict[str, Any]]:
    if not folder.exists():
        return []
    dataset = ds.dataset(folder, format="parquet", partitioning="hive")
    return sorted(dataset.to_table().to_pylist(), key=lambda row: row["time"])


def files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.parquet")) if folder.exists() else []


def metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def pixels_request(crop: np.ndarray, facts: Any) -> dict[str, Any]:
    """An Open Inference Protocol v2 PIXELS request (FP32, normalized, NCHW) for a uint8 crop."""
    mean, std = np.array(facts.mean), np.array(facts.std)
    values = ((crop / 255.0 - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
    return {
        "inputs": [{"name": "PIXELS", "shape": list(values.shape), "datatype": "FP32", "data": values.ravel().tolist()}]
    }


def test_every_route_writes_records_with_the_schema_and_the_layout(
    make_client: Callable[..., TestClient], classifier: Classifier, tmp_path: Path
) -> None:
    folder = tmp_path / "log"
    client = make_client(prediction_log_dir=folder, prediction_log_flush_s=3600)
    name = classifier.info.name
    cat, coffee = jpeg_bytes(CAT), jpeg_bytes(COFFEE, size=(300, 200))
    began = datetime.datetime.now(datetime.UTC)
    answer = client.post("/predict", files=[("file", ("c.jpg", cat)), ("file", ("x.jpg", coffee))]).json()
    assert client.post(f"/predictions/{name}", content=coffee).status_code == 200
    image = {"inputs": [{"name": "IMAGE", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(cat).decode()]}]}
    assert client.post(f"/v2/models/{name}/infer", json=image).status_code == 200
    crop = classifier.prepare(coffee, ImageLimits()).pixels
    from backend.routes.v2 import model_facts

    facts = model_facts(classifier, client.app.state.settings)  # type: ignore[attr-defined]
    assert client.post(f"/v2/models/{name}/infer", json=pixels_request(crop, facts)).status_code == 200
    assert files(folder) == []  # an hour until the first file: the records are queued
    client.__exit__(None, None, None)  # shutdown writes what is queued

    written = files(folder)
    day = began.strftime("%Y-%m-%d")
    assert [f.parent.name for f in written] == [f"{PARTITION}={day}"]
    assert not [p for p in folder.rglob("*") if p.name.startswith(".")]  # no temporary file left
    assert pq.read_schema(written[0]) == SCHEMA
    assert pq.read_schema(written[0]).metadata == SCHEMA.metadata
    assert pq.ParquetFile(written[0]).metadata.row_group(0).column(0).compression == "ZSTD"

    rows = read_log(folder)
    assert [r["route"] for r in rows] == ["predict", "predict", "torchserve", "v2", "v2"]
    for row in rows:
        assert row["model"] == name
        assert row["model_version"] == classifier.version
        assert began <= row["time"] <= datetime.datetime.now(datetime.UTC)
        assert str(row[PARTITION]) == day
        assert 0 < row["latency_ms"] < 60_000
        assert 0 < row["probability"] <= 1
        assert 0 <= row["margin"] <= row["probability"]
        assert 0 <= row["entropy"] <= np.log(classifier.info.num_classes) + 1e-3
    first = answer["results"][0]
    top = first["predictions"][0]
    assert (rows[0]["label"], rows[0]["class_index"]) == (top["label"], top["index"])
    assert rows[0]["probability"] == pytest.approx(top["probability"], rel=1e-6)
    assert (rows[0]["width"], rows[0]["height"], rows[0]["format"]) == (first["width"], first["height"], "JPEG")
    assert (rows[1]["width"], rows[1]["height"]) == (300, 200)
    assert (rows[4]["width"], rows[4]["height"], rows[4]["format"]) == (224, 224, "tensor")
    # The probability row: entropy and margin of the whole row, as the model gave it.
    probabilities = classifier.probabilities(crop[None])[0].astype(np.float64)
    ordered = np.sort(probabilities)[::-1]
    for row in (rows[1], rows[4]):  # the coffee photo, decoded by the server and sent as a tensor
        assert row["entropy"] == pytest.approx(-(probabilities * np.log(probabilities)).sum(), rel=1e-4)
        assert row["margin"] == pytest.approx(ordered[0] - ordered[1], rel=1e-4, abs=1e-6)
        assert row["label"] == classifier.top_k(probabilities, 1)[0].label
    # The statistics of the crop the model saw, as the definitions read.
    cat_crop = classifier.prepare(cat, ImageLimits()).pixels
    for row, image_crop in (
        (rows[0], cat_crop),
        (rows[1], crop),
        (rows[2], crop),
        (rows[3], cat_crop),
        (rows[4], crop),
    ):
        assert [row[c] for c in IMAGE_STATISTICS] == pytest.approx(definitions(image_crop), rel=1e-5)


def test_files_come_every_max_rows_or_flush_seconds(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    folder = tmp_path / "log"
    client = make_client(prediction_log_dir=folder, prediction_log_flush_s=0.3, prediction_log_max_rows=2)
    cat = jpeg_bytes(CAT, size=(256, 256))
    for _ in range(5):
        assert client.post("/predict", content=cat, headers={"content-type": "image/jpeg"}).status_code == 200
    deadline = time.monotonic() + 10
    while len(read_log(folder)) < 5:
        assert time.monotonic() < deadline, files(folder)
        time.sleep(0.05)
    assert sorted(pq.read_metadata(f).num_rows for f in files(folder))[-1] <= 2
    assert metric(client, "prediction_log_records_total") == 5
    assert metric(client, "prediction_log_files_total") == len(files(folder)) >= 3
    assert [f.name for f in files(folder)] == sorted({f.name for f in files(folder)})  # names unique, ordered


def test_off_means_no_thread_no_queue_no_statistics(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    service = client.app.state.service  # type: ignore[attr-defined]
    assert service.prediction_log is None
    assert "prediction-log" not in [t.name for t in threading.enumerate()]
    assert service.decoders.settings.statistics is False
    assert client.post("/predict", content=jpeg_bytes(CAT), headers={"content-type": "image/jpeg"}).status_code == 200


def test_an_unwritable_folder_never_fails_a_prediction_and_logs_once(
    make_client: Callable[..., TestClient], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    client = make_client(prediction_log_dir=blocker / "log", prediction_log_flush_s=0.05, prediction_log_max_rows=1)
    cat = jpeg_bytes(CAT, size=(256, 256))
    with caplog.at_level(logging.WARNING, logger="backend.predictions"):
        for _ in range(4):
            assert client.post("/predict", content=cat, headers={"content-type": "image/jpeg"}).status_code == 200
        deadline = time.monotonic() + 10
        while metric(client, "prediction_log_write_failures_total") < 4:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert metric(client, 'prediction_log_dropped_total{reason="write_failed"}') == 4
    assert metric(client, "prediction_log_records_total") == 0
    warnings = [r for r in caplog.records if r.name == "backend.predictions"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # once per interval, not once per file
    assert "NotADirectoryError" in warnings[0].getMessage()


def test_a_folder_removed_while_serving_is_counted_and_then_written_again(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    folder = tmp_path / "log"
    client = make_client(prediction_log_dir=folder, prediction_log_flush_s=0.05, prediction_log_max_rows=1)
    log = client.app.state.service.prediction_log  # type: ignore[attr-defined]
    cat = jpeg_bytes(CAT, size=(256, 256))
    real_write = log._write_file
    broken = threading.Event()
    broken.set()

    def write(table: Any, day: str) -> None:
        if broken.is_set():
            raise OSError(28, "No space left on device")
        real_write(table, day)

    log._write_file = write
    assert client.post("/predict", content=cat, headers={"content-type": "image/jpeg"}).status_code == 200
    deadline = time.monotonic() + 10
    while metric(client, "prediction_log_write_failures_total") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    broken.clear()
    assert client.post("/predict", content=cat, headers={"content-type": "image/jpeg"}).status_code == 200
    while len(read_log(folder)) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert metric(client, "prediction_log_records_total") == 1


def test_a_slow_sink_drops_and_counts_while_clients_keep_being_served(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    """The writer blocks on its first file (a hung bucket mount) for the whole test: requests go on being
    answered as fast as before, the queue stays at its bound, the rest is dropped and counted."""
    folder = tmp_path / "log"
    client = make_client(
        prediction_log_dir=folder, prediction_log_flush_s=0.01, prediction_log_max_rows=1, prediction_log_queue=4
    )
    log = client.app.state.service.prediction_log  # type: ignore[attr-defined]
    cat = jpeg_bytes(CAT, size=(256, 256))

    def latencies(n: int) -> list[float]:
        out = []
        for _ in range(n):
            started = time.perf_counter()
            assert client.post("/predict", content=cat, headers={"content-type": "image/jpeg"}).status_code == 200
            out.append(time.perf_counter() - started)
            assert out[-1] < 5, out  # a request waiting for the sink would wait for the hung write (20 s)
        return out

    before = latencies(10)  # the sink is fine: written
    deadline = time.monotonic() + 10
    while metric(client, "prediction_log_records_total") < 10:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    hung, entered = threading.Event(), threading.Event()
    real_write = log._write_file

    def write(table: Any, day: str) -> None:
        entered.set()
        hung.wait(20)
        real_write(table, day)

    log._write_file = write
    try:
        during = latencies(1)
        assert entered.wait(10)  # the writer is stuck in a write from now on
        during += latencies(30)
        assert metric(client, 'prediction_log_dropped_total{reason="queue_full"}') >= 30 - 4
        assert log._queue.qsize() <= 4
        # Served as before (generous bounds: a busy CI machine; a request blocked on the sink would take 20 s)
        assert statistics.median(during) < 3 * statistics.median(before) + 0.1
    finally:
        hung.set()


def test_shutdown_writes_the_queue_within_its_grace(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    folder = tmp_path / "log"
    client = make_client(prediction_log_dir=folder, prediction_log_flush_s=3600)
    grey = Image.new("RGB", (300, 300), (128, 128, 128))
    for size in ((300, 300), (400, 300), (300, 500)):
        path = tmp_path / f"{size[0]}x{size[1]}.png"
        grey.resize(size).save(path)
        assert client.post("/predict", files={"file": ("g.png", path.read_bytes())}).status_code == 200
    started = time.monotonic()
    client.__exit__(None, None, None)
    assert time.monotonic() - started < 8
    rows = read_log(folder)
    assert [(r["width"], r["height"], r["format"]) for r in rows] == [
        (300, 300, "PNG"),
        (400, 300, "PNG"),
        (300, 500, "PNG"),
    ]
    for row in rows:  # a flat grey image: no contrast, no colour, no edges
        assert (row["brightness"], row["contrast"], row["colourfulness"], row["sharpness"]) == pytest.approx(
            (128.0, 0.0, 0.0, 0.0), abs=1e-3
        )
    assert "prediction-log" not in [t.name for t in threading.enumerate()]
