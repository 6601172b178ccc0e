"""The Streamlit page, run by Streamlit's own ``AppTest`` against real and fake backends.

Uploads go through the real ``st.file_uploader`` widget (AppTest supports setting its files), samples
through the ``st.pills`` buttons, the camera through ``st.camera_input``. Every test also checks that
no exception (a traceback on the page) was shown.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.frontend.fakes import BackendBehaviour, CloudRunState, FakeServer, fake_backend, running
from tests.support import CAT, CAT_CLASSES, COFFEE, ROOT, free_port, jpeg_bytes

APP = str(ROOT / "frontend" / "app.py")
COFFEE_CLASSES = frozenset({"espresso", "cup", "coffee mug", "eggnog"})


@pytest.fixture
def page(monkeypatch: pytest.MonkeyPatch) -> Iterator[AppTest]:
    """The page, with Streamlit's caches emptied (they live for the whole process, like a server's)."""
    st.cache_resource.clear()
    st.cache_data.clear()
    yield AppTest.from_file(APP, default_timeout=90)
    st.cache_resource.clear()
    st.cache_data.clear()


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements: object) -> list[str]:
    """What the elements say, with markdown's backslash escapes removed (as a browser shows them)."""
    return [re.sub(r"\\(.)", r"\1", str(e.value)) for e in elements]  # type: ignore[attr-defined]


def most_likely(at: AppTest) -> list[str]:
    return [s for s in texts(at.subheader) if s.startswith("Most likely:")]


def chart_rows(at: AppTest) -> list[list[dict[str, Any]]]:
    """The rows each top-k chart draws (Streamlit sends a chart's data as an Arrow table), in rank order."""
    charts = []
    for chart in at.get("vega_lite_chart"):
        proto = chart.proto
        spec = json.loads(proto.spec)
        assert spec["layer"][0]["encoding"]["y"]["field"] == "label"  # bars are labelled with class names
        rows = pa.ipc.open_stream(proto.data.data).read_all().to_pylist()
        charts.append(sorted(rows, key=lambda row: row["rank"]))
    return charts


def chart_labels(at: AppTest) -> list[list[str]]:
    return [[row["label"] for row in rows] for rows in chart_rows(at)]


def pick_samples(at: AppTest, *keys: str) -> AppTest:
    at.pills(key="samples").set_value(list(keys))
    return run(at)


# --- results from the real backend


def test_sample_photos_show_classes_probabilities_and_timing(page: AppTest, live_backend: str) -> None:
    page.session_state  # noqa: B018  (AppTest needs a first run before widgets exist)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BACKEND_URL", live_backend)
        run(page)
        assert texts(page.sidebar.success) == ["Ready"]
        assert any("efficientnet_lite0" in m for m in texts(page.sidebar.markdown))
        assert "Found through BACKEND_URL." in texts(page.sidebar.caption)
        assert texts(page.info) == ["Upload images, take a photo, or pick a sample photo to classify it."]

        pick_samples(page, "cat", "coffee")

    lines = most_likely(page)
    assert len(lines) == 2
    cat_line, coffee_line = lines
    assert any(f"Most likely: {name} (" in cat_line for name in CAT_CLASSES), cat_line
    assert cat_line.endswith("%)")
    assert any(f"Most likely: {name} (" in coffee_line for name in COFFEE_CLASSES), coffee_line
    charts = chart_labels(page)
    assert [len(c) for c in charts] == [5, 5]  # the default top-k, drawn with class names
    assert charts[0][0] in CAT_CLASSES
    first = chart_rows(page)[0][0]
    assert cat_line == f"Most likely: {first['label']} ({first['text']})"  # the chart and the sentence agree
    assert 0 < first["probability"] <= 1
    timings = [c for c in texts(page.caption) if "backend" in c and "round trip" in c]
    assert len(timings) == 2
    assert all("ms" in t and "efficientnet_lite0" in t for t in timings)
    assert len(page.get("image")) == 2
    assert not page.main.error


def test_uploads_with_a_bad_file_among_them(page: AppTest, live_backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_URL", live_backend)
    run(page)
    page.file_uploader(key="uploads").set_value(
        [
            ("chelsea.png", CAT.read_bytes(), "image/png"),
            ("notes.jpg", b"these are meeting notes, not a photo", "image/jpeg"),
            ("coffee.jpg", jpeg_bytes(COFFEE), "image/jpeg"),
        ]
    )
    run(page)

    lines = most_likely(page)
    assert len(lines) == 2  # both photos still have their results
    assert any(name in lines[0] for name in CAT_CLASSES)
    assert any(name in lines[1] for name in COFFEE_CLASSES)
    errors = texts(page.main.error)
    assert len(errors) == 1  # only the bad file, in its own card
    assert errors[0].startswith("**notes.jpg**: notes.jpg:")  # the backend's own explanation follows
    assert "Retry" not in [b.label for b in page.button]  # nothing wrong with the backend itself
    assert "notes.jpg: no preview (this page cannot display it)." in texts(page.info)


def test_top_k_control(page: AppTest, live_backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_URL", live_backend)
    run(page)
    page.sidebar.slider[0].set_value(2)
    pick_samples(page, "cat")

    assert [len(c) for c in chart_labels(page)] == [2]

    page.sidebar.slider[0].set_value(8)
    run(page)
    assert [len(c) for c in chart_labels(page)] == [8]


def test_camera_photo_behind_a_toggle(page: AppTest, live_backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_URL", live_backend)
    run(page)
    assert len(page.camera_input) == 0  # the browser is not asked for the camera until the toggle is on

    page.toggle(key="use_camera").set_value(True)
    run(page)
    page.camera_input(key="camera").set_value(("shot.jpg", jpeg_bytes(CAT, (640, 480)), "image/jpeg"))
    run(page)

    lines = most_likely(page)
    assert len(lines) == 1
    assert any(name in lines[0] for name in CAT_CLASSES)


# --- what people see when something is wrong


def test_unreachable_backend(page: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("BACKEND_URL", url)
    run(page)
    assert texts(page.sidebar.error)[0].startswith(f"**Not answering**  \nThe backend at {url} is not answering.")

    pick_samples(page, "cat", "coffee")

    assert texts(page.main.error)[0].startswith(f"**The backend at {url} is not answering.** It may be starting")
    assert len(page.main.error) == 1  # said once, not once per image
    assert texts(page.main.warning) == [
        "cat.jpg was not classified: see the message above.",
        "coffee.jpg was not classified: see the message above.",
    ]
    assert "Retry" in [b.label for b in page.button]
    assert most_likely(page) == []


def test_backend_not_ready_yet(
    page: AppTest, backend: FakeServer, behaviour: BackendBehaviour, monkeypatch: pytest.MonkeyPatch
) -> None:
    behaviour.ready = False
    behaviour.predict_status = 503
    behaviour.predict_error = {"detail": "The model is still loading. Retry in a few seconds.", "code": "model_loading"}
    behaviour.predict_headers = {"Retry-After": "5"}
    monkeypatch.setenv("BACKEND_URL", backend.url)
    run(page)
    assert texts(page.sidebar.error) == ["**Loading the model**"]

    pick_samples(page, "cat")

    assert texts(page.main.error) == [
        "**The backend is not ready yet. Retry in 5 s.** The model is still loading. Retry in a few seconds."
    ]
    # Once it is ready, a retry shows the result: no restart, no re-upload.
    behaviour.ready = True
    behaviour.predict_status = 200
    page.button(key="retry").click()
    run(page)
    assert texts(page.sidebar.success) == ["Ready"]
    assert most_likely(page) == ["Most likely: tabby (62%)"]
    assert not page.main.error


def test_slow_backend_hits_the_frontend_timeout(
    page: AppTest, backend: FakeServer, behaviour: BackendBehaviour, monkeypatch: pytest.MonkeyPatch
) -> None:
    behaviour.predict_delay_s = 6.0
    monkeypatch.setenv("BACKEND_URL", backend.url)
    monkeypatch.setenv("BACKEND_TIMEOUT_S", "1")
    run(page)

    pick_samples(page, "cat")

    assert texts(page.main.error) == [
        "**The backend did not answer within 1 s.** It may be overloaded or starting up. Retry, send fewer or "
        "smaller images, or raise BACKEND_TIMEOUT_S."
    ]
    assert texts(page.main.warning) == ["cat.jpg was not classified: see the message above."]


def test_private_backend_refusing_the_frontend(
    page: AppTest, backend: FakeServer, behaviour: BackendBehaviour, monkeypatch: pytest.MonkeyPatch
) -> None:
    behaviour.predict_status = 403
    behaviour.predict_error = b"<html><head><title>403 Forbidden</title></head></html>"
    behaviour.predict_headers = {"Content-Type": "text/html"}
    monkeypatch.setenv("BACKEND_URL", backend.url)
    run(page)

    pick_samples(page, "cat")

    (error,) = texts(page.main.error)
    assert error.startswith(f"**The backend at {backend.url} refused the request (403).**")
    assert "roles/run.invoker" in error
    assert "<html>" not in error


def test_without_configuration_the_page_says_how_to_configure(page: AppTest) -> None:
    run(page)  # no BACKEND_URL, and no Google credentials to look the backend up with

    (advice,) = texts(page.main.warning)
    assert advice.startswith("The backend could not be found. No backend configured. Set BACKEND_URL")
    assert texts(page.sidebar.error)[0].startswith("**Not configured**")

    pick_samples(page, "cat")
    assert texts(page.main.error)[0].startswith("**The backend could not be found.** No backend configured.")


def test_invalid_configuration_is_a_message(page: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_TIMEOUT_S", "soon")

    run(page)

    assert texts(page.main.error) == [
        "The frontend's configuration is invalid: BACKEND_TIMEOUT_S='soon' is not a number."
    ]


# --- finding the backend on Cloud Run


def cloud_run_env(monkeypatch: pytest.MonkeyPatch, api: FakeServer) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "demo-project")
    monkeypatch.setenv("GOOGLE_CLOUD_REGION", "europe-west1")
    monkeypatch.setenv("CLOUD_RUN_API_ENDPOINT", api.url)


def test_backend_found_through_the_cloud_run_api(
    page: AppTest,
    backend: FakeServer,
    cloud_run_api: FakeServer,
    cloud_run_state: CloudRunState,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cloud_run_state.services["classifier-backend"] = backend.url
    cloud_run_env(monkeypatch, cloud_run_api)
    run(page)

    assert texts(page.sidebar.markdown)[0] == f"`{backend.url}`"
    assert texts(page.sidebar.caption)[0] == (
        "Found through Cloud Run service 'classifier-backend' (project demo-project, region europe-west1)."
    )
    pick_samples(page, "cat")
    assert most_likely(page) == ["Most likely: tabby (62%)"]
    assert len(cloud_run_api.requests) == 1  # cached across reruns


def test_missing_cloud_run_service_is_explained(
    page: AppTest, cloud_run_api: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud_run_env(monkeypatch, cloud_run_api)

    run(page)

    (advice,) = texts(page.main.warning)
    assert "Cloud Run service 'classifier-backend' (project demo-project, region europe-west1) does not exist" in (
        advice
    )
    assert "Resource 'classifier-backend' of kind 'SERVICE'" in advice


def test_redeployed_backend_is_found_without_restarting(
    page: AppTest, cloud_run_api: FakeServer, cloud_run_state: CloudRunState, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud_run_env(monkeypatch, cloud_run_api)
    with running(fake_backend(BackendBehaviour())) as old, running(fake_backend(BackendBehaviour())) as new:
        cloud_run_state.services["classifier-backend"] = old.url
        run(page)
        pick_samples(page, "cat")
        assert most_likely(page) == ["Most likely: tabby (62%)"]

        old.stop()  # the old revision is gone; the service now has another URL
        cloud_run_state.services["classifier-backend"] = new.url
        pick_samples(page, "cat", "coffee")

        assert most_likely(page) == ["Most likely: tabby (62%)", "Most likely: tabby (62%)"]
        assert not page.main.error
        assert len(new.paths("POST")) == 2  # both images' results now come from the new backend
        assert texts(page.sidebar.markdown)[0] == f"`{new.url}`"


def test_every_sample_photo_exists() -> None:
    from frontend.samples import SAMPLES

    assert len(SAMPLES) == 4
    for sample in SAMPLES:
        assert sample.read()[:3] == b"\xff\xd8\xff", sample.filename  # a JPEG
        assert sample.path.stat().st_size < 100_000
    assert (Path(APP).parent / "samples" / "README.md").read_text().count("scikit-image") >= 1
