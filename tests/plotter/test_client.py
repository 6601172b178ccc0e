"""The frontend's plotter client (``frontend.plotter_client``) against the real service, found through
PLOTTER_URL and through PLOTTER_SERVICE (the fake Cloud Run Admin API the discovery tests use); and against
fakes that are slow, down, or answer something that is not the chart asked for."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from PIL import Image

from frontend import plotter_client
from frontend.backend_client import Classification, _parse_prediction
from frontend.config import FrontendSettings
from frontend.discovery import BackendLocator
from frontend.plotter_client import Plotter, PlotterError, chart_size, check_png, plot_request, plotter_configured
from tests.helpers.fakes import CloudRunState, FakeServer, Reply, fake_cloud_run_api, prediction, running
from tests.plotter.conftest import RunningPlotter

PROJECT = "demo-project"
REGION = "europe-west1"


def classifications(answer: dict[str, Any]) -> list[Classification]:
    """Each image of a real /predict answer as the frontend holds it (one request per image there)."""
    return [
        _parse_prediction({**answer, "results": [result]}, 20.0, len(result["predictions"]))
        for result in answer["results"]
    ]


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def results() -> list[Classification]:
    """Two images in the backend's documented shape (tests.helpers.fakes.prediction): no model needed."""
    return [
        _parse_prediction(prediction("cat.jpg", top_k=5), 20.0, 5),
        _parse_prediction(prediction("espresso.jpg", top_k=5, label="espresso"), 20.0, 5),
    ]


@pytest.fixture
def real_results(predict_answers: dict[str, dict[str, Any]]) -> list[Classification]:
    """The cat and the coffee as the embedded model classifies them."""
    return classifications(predict_answers["both"])


@pytest.fixture
def fake_plotter() -> Iterator[tuple[FakeServer, list[Reply]]]:
    """A stand-in plotter answering ``replies[0]`` (the test sets it) to every request."""
    replies = [Reply(200, png(800, 450), {"Content-Type": "image/png"})]
    with running(FakeServer(lambda _request: replies[0])) as server:
        yield server, replies


def settings(**values: Any) -> FrontendSettings:
    return FrontendSettings(**values)


# --- what is sent


@pytest.mark.slow  # the embedded model classifies real photos
def test_the_request_is_the_backends_predict_answer(predict_answers: dict[str, dict[str, Any]]) -> None:
    answer = predict_answers["both"]
    body = plot_request(classifications(answer))
    assert [r["predictions"] for r in body["results"]] == [r["predictions"] for r in answer["results"]]
    assert [r["filename"] for r in body["results"]] == [r["filename"] for r in answer["results"]]
    assert (body["model"], body["model_version"], body["top_k"]) == (
        answer["model"],
        answer["model_version"],
        answer["top_k"],
    )
    many = plot_request(classifications(answer) * 20)
    assert len(many["results"]) == plotter_client.MAX_RESULTS


def test_only_a_configured_plotter_is_used(frontend_env: None) -> None:
    assert not plotter_configured(settings())
    assert plotter_configured(settings(plotter_url="http://127.0.0.1:1"))
    assert plotter_configured(settings(plotter_service="classifier-plotter"))


@pytest.mark.parametrize("images", [1, 2, 4, 9, 16, 40])
def test_chart_sizes_are_within_what_the_plotter_accepts(images: int) -> None:
    low, high = plotter_client.SIZE_RANGE
    for kind in plotter_client.CHART_KINDS:
        width, height = chart_size(kind, images)
        assert low <= width <= high
        assert low <= height <= high


# --- the real service


@pytest.mark.slow
def test_a_chart_from_the_real_service_through_plotter_url(
    frontend_env: None, plotter: RunningPlotter, real_results: list[Classification]
) -> None:
    client = Plotter(settings(plotter_url=plotter.url, plotter_timeout_s=10))
    try:
        for kind, size in (("bars", (800, 880)), ("compare", (800, 450)), ("auto", (640, 480))):
            chart = client.chart(real_results, kind, *size)  # type: ignore[arg-type]
            check_png(chart.png, *size)
            assert (chart.width, chart.height) == size
        cat_alone = client.chart(real_results[:1], "bars", 800, 400)
        assert cat_alone.png != chart.png
        assert client.locations.known is not None
        assert client.locations.known.url == plotter.url
    finally:
        client.close()


@pytest.mark.slow
def test_a_chart_from_the_real_service_found_through_the_cloud_run_admin_api(
    frontend_env: None, plotter: RunningPlotter, real_results: list[Classification]
) -> None:
    state = CloudRunState(services={"classifier-plotter": plotter.url})
    with running(fake_cloud_run_api(state)) as api:
        configured = settings(
            plotter_service="classifier-plotter",
            google_cloud_project=PROJECT,
            google_cloud_region=REGION,
            cloud_run_api_endpoint=api.url,
            plotter_timeout_s=10,
        )
        client = Plotter(configured)
        try:
            chart = client.chart(real_results, "compare", 800, 450)
            check_png(chart.png, 800, 450)
            assert client.locations.known is not None
            assert client.locations.known.source == "cloud_run"
            assert client.locations.known.url == plotter.url
            # the plotter's service was looked up, not the backend's
            assert [p.split("?")[0] for p in api.paths("GET")] == [
                f"/v2/projects/{PROJECT}/locations/{REGION}/services/classifier-plotter"
            ]
            # and only once: the next chart goes straight to the address found
            client.chart(real_results, "bars", 800, 880)
            assert len(api.paths("GET")) == 1
        finally:
            client.close()


def test_a_missing_plotter_service_is_reported_as_not_found(frontend_env: None, results: list[Classification]) -> None:
    with running(fake_cloud_run_api(CloudRunState())) as api:
        configured = settings(
            plotter_service="classifier-plotter",
            google_cloud_project=PROJECT,
            google_cloud_region=REGION,
            cloud_run_api_endpoint=api.url,
            plotter_timeout_s=10,  # the kind of failure is the point here, not its time (a busy machine)
        )
        locator = BackendLocator(
            plotter_client._lookup_settings(configured),
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        )
        client = Plotter(configured, locator=locator)
        try:
            with pytest.raises(PlotterError) as caught:
                client.chart(results)
            assert caught.value.kind == "not_found"
        finally:
            client.close()


# --- budgets: a slow, down or wrong plotter costs a page run at most PLOTTER_TIMEOUT_S, once


@pytest.mark.slow  # waits out the budget (1 s)
def test_a_slow_plotter_costs_at_most_the_budget_then_nothing(
    frontend_env: None, fake_plotter: tuple[FakeServer, list[Reply]], results: list[Classification]
) -> None:
    server, replies = fake_plotter
    replies[0] = Reply(200, png(800, 450), {"Content-Type": "image/png"}, delay_s=30)
    client = Plotter(settings(plotter_url=server.url, plotter_timeout_s=1))
    try:
        started = time.monotonic()
        with pytest.raises(PlotterError) as caught:
            client.chart(results, "compare", 800, 450)
        waited = time.monotonic() - started
        assert caught.value.kind == "slow"
        assert 0.9 <= waited < 3.0, waited  # the budget, not the plotter's 30 s
        # the page runs after it are not held up again (the plotter is left alone for a while)
        started = time.monotonic()
        with pytest.raises(PlotterError):
            client.chart(results, "compare", 800, 450)
        assert time.monotonic() - started < 0.1
        assert len(server.requests) == 1
    finally:
        client.close()


@pytest.mark.slow  # waits for the late chart
def test_a_chart_that_comes_late_is_shown_at_the_next_page_run(
    frontend_env: None, fake_plotter: tuple[FakeServer, list[Reply]], results: list[Classification]
) -> None:
    server, replies = fake_plotter
    replies[0] = Reply(200, png(800, 450), {"Content-Type": "image/png"}, delay_s=0.8)
    client = Plotter(settings(plotter_url=server.url, plotter_timeout_s=1))
    client.wait_s = 0.3  # the page waits less than the request may take (as when the lookup took the rest)
    try:
        with pytest.raises(PlotterError):
            client.chart(results, "compare", 800, 450)
        time.sleep(1.5)
        assert client.chart(results, "compare", 800, 450).png == replies[0].body
    finally:
        client.close()


def test_a_plotter_that_is_down_fails_at_once(frontend_env: None, results: list[Classification]) -> None:
    from tests.helpers import free_port

    client = Plotter(settings(plotter_url=f"http://127.0.0.1:{free_port()}", plotter_timeout_s=2))
    try:
        started = time.monotonic()
        with pytest.raises(PlotterError) as caught:
            client.chart(results)
        assert caught.value.kind == "unreachable"
        assert time.monotonic() - started < 1.0
    finally:
        client.close()


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (Reply(200, png(801, 450), {"Content-Type": "image/png"}), "bad_answer"),  # not the size asked for
        (Reply(200, b"<html>hello</html>", {"Content-Type": "image/png"}), "bad_answer"),
        (Reply(200, png(800, 450)[:-20], {"Content-Type": "image/png"}), "bad_answer"),  # truncated
        (Reply(200, b"\x89PNG\r\n\x1a\n" + b"\0" * 100, {"Content-Type": "image/png"}), "bad_answer"),
        (Reply(200, png(800, 450), {"Content-Type": "text/html"}), "bad_answer"),
        (Reply(200, b"\x89PNG\r\n\x1a\n" + b"\0" * (2 * 1024 * 1024), {"Content-Type": "image/png"}), "bad_answer"),
        (Reply(400, {"detail": "bad", "code": "bad_json"}), "refused"),
        (Reply(500, b"Internal error"), "refused"),
    ],
)
def test_an_answer_that_is_not_the_chart_asked_for_is_not_shown(
    frontend_env: None,
    fake_plotter: tuple[FakeServer, list[Reply]],
    results: list[Classification],
    reply: Reply,
    kind: str,
) -> None:
    server, replies = fake_plotter
    replies[0] = reply
    client = Plotter(settings(plotter_url=server.url, plotter_timeout_s=5))
    try:
        with pytest.raises(PlotterError) as caught:
            client.chart(results, "compare", 800, 450)
        assert caught.value.kind == kind
    finally:
        client.close()


def test_a_png_whose_header_claims_a_huge_image_is_refused_from_its_header() -> None:
    """A PNG claiming 100000 x 100000 pixels: refused for its size before any pixel is read."""
    from tests.backend.conftest import png_claiming

    with pytest.raises(PlotterError, match="100000x100000"):
        check_png(png_claiming(100_000, 100_000), 800, 450)
