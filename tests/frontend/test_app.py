"""The Streamlit page, run by Streamlit's own ``AppTest`` against real and fake backends.

Uploads go through the real ``st.file_uploader`` widget (AppTest supports setting its files), samples
through the ``st.pills`` buttons, the camera through ``st.camera_input``. Every test also checks that
no exception (a traceback on the page) was shown.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from frontend import backend_client
from frontend.presentation import escape_markdown
from frontend.previews import PREVIEW_TIMEOUT_S
from tests.frontend import hostile_files
from tests.frontend.hostile_text import WORD_JOINER, as_shown, hostile_texts, rendered, streamlit_rewrites
from tests.helpers import CAT, CAT_CLASSES, COFFEE, COFFEE_CLASSES, ROOT, free_port, jpeg_bytes
from tests.helpers.fakes import MODEL_INFO, BackendBehaviour, CloudRunState, FakeServer, Reply, fake_backend, running

APP = str(ROOT / "frontend" / "app.py")


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
    """What the elements say, with markdown's backslash escapes and the invisible word joiners that
    escape_markdown adds removed: for the wording only. Escaped or not, a plain name reads the same here,
    so whether text is escaped is checked on the Markdown source (``markdown``, ``captions``)."""
    return [re.sub(r"\\(.)", r"\1", str(e.value)).replace(WORD_JOINER, "") for e in elements]  # type: ignore[attr-defined]


def markdown(elements: object) -> list[str]:
    """The Markdown source of the elements, as the page sends it to the browser (escapes included)."""
    return [str(e.value) for e in elements]  # type: ignore[attr-defined]


def captions(at: AppTest) -> list[str]:
    """The Markdown source of every image's caption (Streamlit renders captions as Markdown too)."""
    return [image.caption for element in at.get("image") for image in element.proto.imgs]


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


def backend_news(at: AppTest) -> list[str]:
    """The neutral messages about the backend (a start), without the page's own hints."""
    return [text for text in texts(at.main.info) if text.startswith("**The backend")]


def uploader(at: AppTest) -> Any:
    """The upload widget: its key is the session's (frontend.app.session_key)."""
    return at.file_uploader(key=f"uploads-{at.session_state['session_generation']}")


def camera(at: AppTest) -> Any:
    return at.camera_input(key=f"camera-{at.session_state['session_generation']}")


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
    # which model version answered each image: the backend's content hash of its export
    assert all(re.search(r"efficientnet_lite0 version [0-9a-f]{16}$", t) for t in timings), timings
    assert len(page.get("image")) == 2
    assert not page.main.error


def test_uploads_with_a_bad_file_among_them(page: AppTest, live_backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_URL", live_backend)
    run(page)
    uploader(page).set_value(
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
    # File names are escaped where the page shows them (a name is whatever the uploader chose).
    assert r"notes\.jpg: no preview (this page cannot display it)." in markdown(page.info)
    assert captions(page) == [r"chelsea\.png", r"coffee\.jpg"]


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
    camera(page).set_value(("shot.jpg", jpeg_bytes(CAT, (640, 480)), "image/jpeg"))
    run(page)

    lines = most_likely(page)
    assert len(lines) == 1
    assert any(name in lines[0] for name in CAT_CLASSES)


# --- what people see when something is wrong


def test_unreachable_backend(page: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_client, "STARTING_GRACE_S", 0.0)  # long past starting
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("BACKEND_URL", url)
    run(page)
    assert texts(page.sidebar.error) == ["Not answering"]  # the headline; the page says the rest, once
    assert texts(page.main.error) == [
        f"**The backend at {url} is not answering.** It may be starting, redeploying or down. Retry in a moment; "
        "if it persists, check that the backend runs and that its address is right."
    ]

    pick_samples(page, "cat", "coffee")

    assert texts(page.main.error)[0].startswith(f"**The backend at {url} is not answering.** It may be starting")
    assert len(page.main.error) == 1  # said once: not again for the images, nor once per image
    assert texts(page.main.warning) == [
        "cat.jpg was not classified: see the message above.",
        "coffee.jpg was not classified: see the message above.",
    ]
    assert [b.label for b in page.button].count("Retry") == 1
    assert most_likely(page) == []


def test_a_backend_that_has_not_started_yet(page: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens yet and the frontend only just began (``make run``, a container starting): a neutral
    "starting", not an error; once it listens, Retry shows the result."""
    port = free_port()
    monkeypatch.setenv("BACKEND_URL", f"http://127.0.0.1:{port}")
    run(page)
    assert texts(page.sidebar.info) == ["The backend is starting"]
    assert not page.sidebar.error
    (message,) = backend_news(page)
    assert message.startswith(f"**The backend is starting.** Nothing accepts connections at http://127.0.0.1:{port}")

    pick_samples(page, "cat")
    assert not page.main.error
    assert backend_news(page) == [message]  # said once
    assert texts(page.main.warning) == ["cat.jpg was not classified: see the message above."]

    with running(fake_backend(BackendBehaviour(), port=port)):
        page.button(key="retry").click()
        run(page)
        assert texts(page.sidebar.success) == ["Ready"]
        assert most_likely(page) == ["Most likely: tabby (62%)"]
        assert backend_news(page) == []


def test_backend_not_ready_yet(
    page: AppTest, backend: FakeServer, behaviour: BackendBehaviour, monkeypatch: pytest.MonkeyPatch
) -> None:
    behaviour.ready = False
    behaviour.predict_status = 503
    behaviour.predict_error = {"detail": "The model is still loading. Retry in a few seconds.", "code": "model_loading"}
    behaviour.predict_headers = {"Retry-After": "5"}
    monkeypatch.setenv("BACKEND_URL", backend.url)
    run(page)
    assert texts(page.sidebar.info) == ["The backend is starting"]  # neutral: a start is no error
    assert backend_news(page) == [
        "**The backend is starting.** It is loading its model. The page asks again each time it runs: click Retry "
        "in a few seconds."
    ]

    pick_samples(page, "cat")

    assert not page.main.error
    assert len(backend_news(page)) == 1  # the images' 503 model_loading is the same news: not said again
    assert texts(page.main.warning) == ["cat.jpg was not classified: see the message above."]
    # Once it is ready, a retry shows the result: no restart, no re-upload.
    behaviour.ready = True
    behaviour.predict_status = 200
    page.button(key="retry").click()
    run(page)
    assert texts(page.sidebar.success) == ["Ready"]
    assert most_likely(page) == ["Most likely: tabby (62%)"]
    assert not page.main.error


@pytest.mark.slow  # waits out a timeout
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


def test_a_backend_refusing_every_request_is_not_ready(
    page: AppTest, backend: FakeServer, behaviour: BackendBehaviour, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/ready is open, /model and /predict are not: the sidebar must not say "Ready"."""
    behaviour.refusal = Reply(403, {"detail": "This identity may not call the service.", "code": "forbidden_identity"})
    monkeypatch.setenv("BACKEND_URL", backend.url)
    run(page)

    assert not page.sidebar.success
    assert texts(page.sidebar.error) == ["Refusing the frontend's requests"]
    (error,) = texts(page.main.error)
    assert error.startswith(
        f"**The backend at {backend.url} refused the request (403).** This identity may not call the service. "
        "The backend does not accept the frontend's service account."
    )
    assert "roles/run.invoker" in error
    assert "BACKEND_AUDIENCE" not in error  # the backend said who was refused, not which audience

    pick_samples(page, "cat")
    assert len(page.main.error) == 1  # the image's 403 is the same refusal: said once
    assert texts(page.main.warning) == ["cat.jpg was not classified: see the message above."]


def test_without_configuration_the_page_says_how_to_configure(page: AppTest) -> None:
    run(page)  # no BACKEND_URL, and no Google credentials to look the backend up with

    (advice,) = texts(page.main.error)
    assert advice.startswith("**The backend could not be found.** No backend configured. Set BACKEND_URL")
    assert texts(page.sidebar.error) == ["Not configured"]

    pick_samples(page, "cat")
    (again,) = texts(page.main.error)  # said once, not again for the image
    assert again == advice


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

    (advice,) = texts(page.main.error)
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


# --- a hostile backend, hostile uploads, too many or too large files

PIXEL = "http://127.0.0.1:9/pixel"  # in a browser nothing may fetch it (see test_browser.py)
LITERAL = frozenset({"paragraph", "inline", "text", "strong", "hardbreak", "softbreak"})


def markdown_sources(at: AppTest) -> list[str]:
    """The Markdown source of every element on the page that Streamlit renders as Markdown."""
    sources = [
        str(element.value)  # type: ignore[union-attr]
        for kind in ("title", "header", "subheader", "markdown", "caption", "error", "warning", "info", "success")
        for element in at.get(kind)
    ]
    sources += [image.caption for element in at.get("image") for image in element.proto.imgs]
    return sources


def assert_all_literal(at: AppTest) -> None:
    for source in markdown_sources(at):
        shown = rendered(source)
        assert shown.kinds <= LITERAL | {"code_inline"}, source  # code: the backend URL in the sidebar
        assert streamlit_rewrites(source) == [], source


@pytest.mark.slow
def test_hostile_labels_model_and_details_are_shown_literally(
    page: AppTest, backend: FakeServer, behaviour: BackendBehaviour, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile = hostile_texts(PIXEL)
    # The first photo's name is hostile too: it is its preview's caption.
    names = [f"![photo]({PIXEL}/caption.png) **0** :material_home:.png"] + [f"{i}.png" for i in range(1, len(hostile))]
    behaviour.labels = dict(zip(names, hostile, strict=True))
    behaviour.model_info = {**MODEL_INFO, "name": f"![model]({PIXEL}/model.png)", "weights": ":red[weights]"}
    bad_name = f"![file]({PIXEL}/file.png) :material_warning:.jpg"
    behaviour.reject = {bad_name}
    behaviour.reject_detail = f"<img src={PIXEL}/detail.png> $x$ is :blue[not an image]"
    monkeypatch.setenv("BACKEND_URL", backend.url)
    monkeypatch.setenv("MAX_FILES", str(len(hostile) + 1))
    run(page)
    uploads = [(name, jpeg_bytes(CAT, (64, 43)), "image/png") for name in names]
    uploader(page).set_value([*uploads, (bad_name, b"not an image", "image/jpeg")])
    run(page)

    assert most_likely(page) == [f"Most likely: {as_shown(text)} (62%)" for text in hostile]
    assert texts(page.main.error) == [f"**{as_shown(bad_name)}**: {as_shown(behaviour.reject_detail)}"]
    model = f"**Model** ![model]({PIXEL}/model.png)  \n:red[weights] · onnx · 1000 classes"
    assert texts(page.sidebar.markdown)[1] == model
    assert [rendered(caption).text for caption in captions(page)] == names
    assert markdown(page.info) == [f"{escape_markdown(bad_name)}: no preview (this page cannot display it)."]
    assert_all_literal(page)


def test_a_hostile_status_is_shown_literally(
    page: AppTest, backend: FakeServer, behaviour: BackendBehaviour, monkeypatch: pytest.MonkeyPatch
) -> None:
    behaviour.replies["/ready"] = Reply(503, {"status": f"![s]({PIXEL}/s.png)", "detail": f"[why]({PIXEL}/why)"})
    monkeypatch.setenv("BACKEND_URL", backend.url)

    run(page)

    assert texts(page.sidebar.error) == [f"Not ready (![s]({PIXEL}/s.png))"]
    assert texts(page.main.error) == [f"**The backend is not ready (![s]({PIXEL}/s.png)).** [why]({PIXEL}/why)"]
    assert_all_literal(page)


@pytest.mark.slow
def test_hostile_uploads_get_no_preview_and_still_their_result(
    page: AppTest, backend: FakeServer, behaviour: BackendBehaviour, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {
        "claims-60000x60000.png": hostile_files.png_claiming(60000, 60000),
        "rle8.bmp": hostile_files.bmp_rle8(20000, 2000),
        "claims-65535x65535.gif": hostile_files.gif_claiming(65535, 65535),
        "drawing.jpg": hostile_files.eps(),  # an EPS file under a name the upload widget accepts
        "1000-scans.jpg": hostile_files.progressive_jpeg(8000, 5000, scans=1000),
    }
    behaviour.reject = {"drawing.jpg"}
    monkeypatch.setenv("BACKEND_URL", backend.url)
    run(page)
    uploader(page).set_value([(name, data, "image/png") for name, data in files.items()])

    started = time.perf_counter()
    run(page)
    seconds = time.perf_counter() - started

    assert most_likely(page) == ["Most likely: tabby (62%)"] * 4  # the backend's answers, for each
    assert texts(page.main.error)[0].startswith("**drawing.jpg**: drawing.jpg: not an image")
    escaped = [
        r"claims\-60000x60000\.png",
        r"rle8\.bmp",
        r"claims\-65535x65535\.gif",
        r"drawing\.jpg",
        r"1000\-scans\.jpg",
    ]
    assert markdown(page.info) == [f"{name}: no preview (this page cannot display it)." for name in escaped]
    assert not page.get("image")
    # The slow JPEG is stopped at the preview time limit, while the backend classifies (side by side).
    assert seconds < PREVIEW_TIMEOUT_S + 3


def test_more_images_than_max_files(
    page: AppTest, backend: FakeServer, behaviour: BackendBehaviour, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKEND_URL", backend.url)
    monkeypatch.setenv("MAX_FILES", "2")
    run(page)
    uploader(page).set_value([(f"{i}.jpg", jpeg_bytes(CAT, (64 + i, 43)), "image/jpeg") for i in range(3)])
    pick_samples(page, "coffee")

    assert texts(page.main.warning) == [
        "4 images were chosen; only the first 2 are classified. Remove some to classify the others (whoever runs "
        "this page can raise the limit with the MAX_FILES setting)."
    ]
    assert len(most_likely(page)) == 2
    assert len(backend.paths("POST")) == 2


def test_an_image_over_the_backends_limit(
    page: AppTest, backend: FakeServer, behaviour: BackendBehaviour, monkeypatch: pytest.MonkeyPatch
) -> None:
    behaviour.model_info = {**MODEL_INFO, "max_image_bytes": 50_000}
    monkeypatch.setenv("BACKEND_URL", backend.url)
    run(page)
    big = jpeg_bytes(CAT, (1200, 800), quality=95)
    assert len(big) > 50_000
    uploader(page).set_value([("big.jpg", big, "image/jpeg")])
    pick_samples(page, "cat")

    assert texts(page.main.error) == [
        f"**big.jpg**: big.jpg is {len(big) / 1024**2:.1f} MB; the backend accepts images up to 0.0 MB."
    ]
    assert len(most_likely(page)) == 1  # the sample
    assert len(backend.paths("POST")) == 1  # the large file was not sent


def test_a_huge_answer_is_a_message(
    page: AppTest, backend: FakeServer, behaviour: BackendBehaviour, monkeypatch: pytest.MonkeyPatch
) -> None:
    behaviour.replies["/predict"] = Reply(200, json.dumps({"results": ["x" * 10_000_000]}).encode())
    monkeypatch.setenv("BACKEND_URL", backend.url)
    run(page)

    pick_samples(page, "cat")

    (error,) = texts(page.main.error)
    assert error.startswith("**The backend's answer was too large.** It sent 9.5 MB (Content-Length);")
    assert texts(page.main.warning) == ["cat.jpg was not classified: see the message above."]
