"""Finding the backend with the real ``google-cloud-run`` client (REST) against a fake Admin API on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.auth.credentials import AnonymousCredentials

from frontend.backend_client import Backend, BackendError, ImageInput
from frontend.config import FrontendSettings
from frontend.discovery import BackendLocator, DiscoveryError
from tests.frontend.fakes import (
    BackendBehaviour,
    CloudRunState,
    FakeServer,
    Reply,
    Request,
    fake_backend,
    running,
)
from tests.support import free_port

PROJECT = "demo-project"
REGION = "europe-west1"
SERVICE_PATH = f"/v2/projects/{PROJECT}/locations/{REGION}/services/classifier-backend"
IMAGE = ImageInput("cat.jpg", b"\xff\xd8\xff fake jpeg", "image/jpeg")


def locator_for(api: FakeServer | str, **overrides: object) -> BackendLocator:
    endpoint = api.url if isinstance(api, FakeServer) else api
    settings = FrontendSettings(
        **{"project": PROJECT, "region": REGION, "cloud_run_api_endpoint": endpoint, **overrides}  # type: ignore[arg-type]
    )
    return BackendLocator(settings, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]


def discovery_error(locator: BackendLocator) -> DiscoveryError:
    with pytest.raises(DiscoveryError) as caught:
        locator.locate()
    return caught.value


def test_finds_the_service_uri(cloud_run_api: FakeServer, cloud_run_state: CloudRunState) -> None:
    cloud_run_state.services["classifier-backend"] = "https://classifier-backend-x2b4qk7fva-ew.a.run.app/"

    location = locator_for(cloud_run_api).locate()

    assert location.url == "https://classifier-backend-x2b4qk7fva-ew.a.run.app"
    assert location.source == "cloud_run"
    assert "classifier-backend" in location.description
    assert PROJECT in location.description
    assert REGION in location.description
    assert [p.split("?")[0] for p in cloud_run_api.paths("GET")] == [SERVICE_PATH]


def test_looks_up_the_configured_service_name(cloud_run_api: FakeServer, cloud_run_state: CloudRunState) -> None:
    cloud_run_state.services["my-classifier"] = "https://my-classifier-abc-uc.a.run.app"

    location = locator_for(cloud_run_api, backend_service="my-classifier", region="us-central1").locate()

    assert location.url == "https://my-classifier-abc-uc.a.run.app"
    assert cloud_run_api.paths()[0].startswith(f"/v2/projects/{PROJECT}/locations/us-central1/services/my-classifier")


def test_missing_service_says_what_to_set(cloud_run_api: FakeServer) -> None:
    error = discovery_error(locator_for(cloud_run_api))

    assert error.code == "not_found"
    # Google's own explanation, without the client's "GET http://...:" prefix, and what to change.
    assert "Resource 'classifier-backend' of kind 'SERVICE'" in error.message
    assert "GET http" not in error.message
    assert "BACKEND_SERVICE" in error.message
    assert "BACKEND_URL" in error.message


def test_permission_denied_names_the_role(cloud_run_api: FakeServer, cloud_run_state: CloudRunState) -> None:
    cloud_run_state.denied = True

    error = discovery_error(locator_for(cloud_run_api))

    assert error.code == "permission_denied"
    assert "Permission 'run.services.get' denied" in error.message
    assert "roles/run.viewer" in error.message


def test_service_without_url_reports_its_state(cloud_run_api: FakeServer, cloud_run_state: CloudRunState) -> None:
    cloud_run_state.failed["classifier-backend"] = (
        "Revision 'classifier-backend-00001-xyz' is not ready and cannot serve traffic. "
        "The user-provided container failed to start and listen on the port defined by PORT=8080."
    )

    error = discovery_error(locator_for(cloud_run_api))

    assert error.code == "no_url"
    assert "failed to start and listen on the port" in error.message
    assert "gcloud run services describe classifier-backend --region europe-west1" in error.message


def test_unreachable_api_gives_a_message() -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    error = discovery_error(locator_for(closed))  # retry=None: one attempt, no retry loop

    assert error.code == "api_unreachable"
    assert "Could not reach the Cloud Run Admin API" in error.message
    assert "BACKEND_URL" in error.message


def test_without_project_or_credentials_it_asks_for_configuration(cloud_run_api: FakeServer) -> None:
    # The fixture points GOOGLE_APPLICATION_CREDENTIALS at a missing file: google.auth.default() knows no project.
    settings = FrontendSettings(region=REGION, cloud_run_api_endpoint=cloud_run_api.url)

    error = discovery_error(BackendLocator(settings))

    assert error.code == "not_configured"
    assert "BACKEND_URL" in error.message
    assert "GOOGLE_CLOUD_PROJECT" in error.message
    assert cloud_run_api.requests == []


def test_plain_http_endpoint_needs_no_credentials(cloud_run_api: FakeServer, cloud_run_state: CloudRunState) -> None:
    """An emulator endpoint (http://) is called without Google credentials, as the page does in tests."""
    cloud_run_state.services["classifier-backend"] = "https://classifier-backend-x2b4qk7fva-ew.a.run.app"
    settings = FrontendSettings(project=PROJECT, region=REGION, cloud_run_api_endpoint=cloud_run_api.url)

    assert BackendLocator(settings).locate().url == "https://classifier-backend-x2b4qk7fva-ew.a.run.app"
    assert "Authorization" not in cloud_run_api.requests[0].headers


def test_backend_url_wins_over_the_lookup(cloud_run_api: FakeServer, cloud_run_state: CloudRunState) -> None:
    cloud_run_state.services["classifier-backend"] = "https://elsewhere.a.run.app"

    location = locator_for(cloud_run_api, backend_url="http://127.0.0.1:8000").locate()

    assert (location.url, location.source) == ("http://127.0.0.1:8000", "BACKEND_URL")
    assert cloud_run_api.requests == []


@pytest.fixture
def metadata_server() -> Iterator[FakeServer]:
    """The metadata server's one answer the frontend asks for: the region of this Cloud Run instance."""

    def handle(request: Request) -> Reply:
        if request.path == "/computeMetadata/v1/instance/region" and request.headers.get("Metadata-Flavor") == "Google":
            return Reply(200, b"projects/123456789012/regions/us-east4")
        return Reply(403, b"Missing Metadata-Flavor:Google header.")

    with running(FakeServer(handle)) as server:
        yield server


def test_on_cloud_run_the_region_defaults_to_its_own(
    monkeypatch: pytest.MonkeyPatch,
    metadata_server: FakeServer,
    cloud_run_api: FakeServer,
    cloud_run_state: CloudRunState,
) -> None:
    monkeypatch.setenv("K_SERVICE", "classifier-frontend")  # what Cloud Run sets in every container
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{metadata_server.port}")
    cloud_run_state.services["classifier-backend"] = "https://classifier-backend-abc-uk.a.run.app"

    location = locator_for(cloud_run_api, region=None).locate()

    assert "us-east4" in location.description
    assert cloud_run_api.paths()[0].startswith(f"/v2/projects/{PROJECT}/locations/us-east4/services/")
    # An explicit region wins over the instance's own.
    locator_for(cloud_run_api, region="asia-northeast1").locate()
    assert "/locations/asia-northeast1/" in cloud_run_api.paths()[-1]


def test_off_cloud_run_the_region_defaults_to_europe_west1(
    cloud_run_api: FakeServer, cloud_run_state: CloudRunState
) -> None:
    cloud_run_state.services["classifier-backend"] = "https://classifier-backend-abc-ew.a.run.app"

    locator_for(cloud_run_api, region=None).locate()

    assert cloud_run_api.paths()[0].startswith(SERVICE_PATH)


def test_a_backend_that_stops_answering_is_looked_up_again(
    cloud_run_api: FakeServer, cloud_run_state: CloudRunState
) -> None:
    """The backend is redeployed under a new URL: the next request finds it without a frontend restart."""
    with running(fake_backend(BackendBehaviour())) as old, running(fake_backend(BackendBehaviour())) as new:
        cloud_run_state.services["classifier-backend"] = old.url
        backend = Backend(locator_for(cloud_run_api).settings, locator=locator_for(cloud_run_api))

        for _ in range(3):
            backend.predict(IMAGE, top_k=3)
        assert len(cloud_run_api.requests) == 1  # the lookup is cached while the URL answers
        assert len(old.paths("POST")) == 3

        old.stop()
        cloud_run_state.services["classifier-backend"] = new.url
        result = backend.predict(IMAGE, top_k=3)

        assert result.predictions[0].label == "tabby"
        assert len(cloud_run_api.requests) == 2  # looked up again once the old URL stopped answering
        assert len(new.paths("POST")) == 1
        assert backend.location().url == new.url
        assert backend.status().location is not None
        assert backend.status().ready


def test_a_backend_that_is_down_everywhere_is_reported_unreachable(
    cloud_run_api: FakeServer, cloud_run_state: CloudRunState
) -> None:
    with running(fake_backend(BackendBehaviour())) as only:
        cloud_run_state.services["classifier-backend"] = only.url
        backend = Backend(locator_for(cloud_run_api).settings, locator=locator_for(cloud_run_api))
        backend.predict(IMAGE, top_k=3)
    # Stopped, and the Admin API still points at it: a fresh lookup gives the same URL.
    with pytest.raises(BackendError) as caught:
        backend.predict(IMAGE, top_k=3)
    assert caught.value.kind == "unreachable"
    assert only.url in caught.value.title
    assert len(cloud_run_api.requests) == 2


def test_a_failed_lookup_is_reused_for_a_while_then_redone(
    cloud_run_api: FakeServer, cloud_run_state: CloudRunState
) -> None:
    """Page reruns reuse a failed lookup; once the pause is over, a newly deployed backend is found."""
    with running(fake_backend(BackendBehaviour())) as deployed:
        patient = Backend(locator_for(cloud_run_api).settings, locator=locator_for(cloud_run_api))
        assert patient.status().state == "not_configured"  # not deployed yet
        cloud_run_state.services["classifier-backend"] = deployed.url
        assert patient.status().state == "not_configured"  # within the pause: the failure is reported again
        assert len(cloud_run_api.requests) == 1

        eager = Backend(
            locator_for(cloud_run_api).settings, locator=locator_for(cloud_run_api), failed_lookup_reuse_s=0
        )
        cloud_run_state.services.clear()
        first = eager.status()
        assert first.state == "not_configured"
        assert "does not exist" in first.detail
        cloud_run_state.services["classifier-backend"] = deployed.url
        assert eager.status().ready
        assert len(cloud_run_api.requests) == 3
