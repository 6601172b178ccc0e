"""Finding the backend with the real ``google-cloud-run`` client (REST) against a fake Admin API on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from google.auth.credentials import AnonymousCredentials

from frontend.backend_client import Backend, BackendError, ImageInput
from frontend.config import FrontendSettings
from frontend.discovery import METADATA_TIMEOUT_S, BackendLocator, DiscoveryError, MetadataServer
from tests.cloudrun.metadata import MetadataState, point_google_auth_at
from tests.cloudrun.metadata import metadata_server as metadata_server_for
from tests.helpers import free_port
from tests.helpers.fakes import (
    BackendBehaviour,
    CloudRunState,
    FakeServer,
    Reply,
    fake_backend,
    running,
)
from tests.helpers.tokens import SigningKey

SIGNING_KEY = SigningKey.generate("discovery-tests")

PROJECT = "demo-project"
REGION = "europe-west1"
SERVICE_PATH = f"/v2/projects/{PROJECT}/locations/{REGION}/services/classifier-backend"
IMAGE = ImageInput("cat.jpg", b"\xff\xd8\xff fake jpeg", "image/jpeg")


def locator_for(api: FakeServer | str, **overrides: object) -> BackendLocator:
    endpoint = api.url if isinstance(api, FakeServer) else api
    settings = FrontendSettings(
        **{
            "google_cloud_project": PROJECT,
            "google_cloud_region": REGION,
            "cloud_run_api_endpoint": endpoint,
            **overrides,
        }  # type: ignore[arg-type]
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

    location = locator_for(cloud_run_api, backend_service="my-classifier", google_cloud_region="us-central1").locate()

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
    settings = FrontendSettings(google_cloud_region=REGION, cloud_run_api_endpoint=cloud_run_api.url)

    error = discovery_error(BackendLocator(settings))

    assert error.code == "not_configured"
    assert "BACKEND_URL" in error.message
    assert "GOOGLE_CLOUD_PROJECT" in error.message
    assert cloud_run_api.requests == []


def test_plain_http_endpoint_needs_no_credentials(cloud_run_api: FakeServer, cloud_run_state: CloudRunState) -> None:
    """An emulator endpoint (http://) is called without Google credentials, as the page does in tests."""
    cloud_run_state.services["classifier-backend"] = "https://classifier-backend-x2b4qk7fva-ew.a.run.app"
    settings = FrontendSettings(
        google_cloud_project=PROJECT, google_cloud_region=REGION, cloud_run_api_endpoint=cloud_run_api.url
    )

    assert BackendLocator(settings).locate().url == "https://classifier-backend-x2b4qk7fva-ew.a.run.app"
    assert "Authorization" not in cloud_run_api.requests[0].headers


def test_backend_url_wins_over_the_lookup(cloud_run_api: FakeServer, cloud_run_state: CloudRunState) -> None:
    cloud_run_state.services["classifier-backend"] = "https://elsewhere.a.run.app"

    location = locator_for(cloud_run_api, backend_url="http://127.0.0.1:8000").locate()

    assert (location.url, location.source) == ("http://127.0.0.1:8000", "BACKEND_URL")
    assert cloud_run_api.requests == []


@pytest.fixture
def metadata_state() -> MetadataState:
    return MetadataState(key=SIGNING_KEY, region="us-east4")


@pytest.fixture
def metadata_server(metadata_state: MetadataState) -> Iterator[FakeServer]:
    """A Cloud Run instance's metadata server (tests/cloudrun's stand-in)."""
    with running(metadata_server_for(metadata_state)) as server:
        yield server


@pytest.fixture
def on_cloud_run(monkeypatch: pytest.MonkeyPatch, metadata_server: FakeServer) -> FakeServer:
    """K_SERVICE set, as Cloud Run does in every container, and google-auth sent to the metadata server."""
    monkeypatch.setenv("K_SERVICE", "classifier-frontend")
    point_google_auth_at(monkeypatch, metadata_server)
    return metadata_server


def test_on_cloud_run_the_region_defaults_to_its_own(
    on_cloud_run: FakeServer,
    cloud_run_api: FakeServer,
    cloud_run_state: CloudRunState,
) -> None:
    cloud_run_state.services["classifier-backend"] = "https://classifier-backend-abc-uk.a.run.app"

    location = locator_for(cloud_run_api, google_cloud_region=None).locate()

    assert "us-east4" in location.description
    assert cloud_run_api.paths()[0].startswith(f"/v2/projects/{PROJECT}/locations/us-east4/services/")
    # An explicit region wins over the instance's own.
    locator_for(cloud_run_api, google_cloud_region="asia-northeast1").locate()
    assert "/locations/asia-northeast1/" in cloud_run_api.paths()[-1]


def test_off_cloud_run_the_region_defaults_to_europe_west1(
    cloud_run_api: FakeServer, cloud_run_state: CloudRunState
) -> None:
    cloud_run_state.services["classifier-backend"] = "https://classifier-backend-abc-ew.a.run.app"

    locator_for(cloud_run_api, google_cloud_region=None).locate()

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


# --- on Cloud Run: everything the frontend knows about itself comes from the metadata server


def test_on_cloud_run_project_region_and_credentials_come_from_the_metadata_server(
    on_cloud_run: FakeServer,
    metadata_state: MetadataState,
    cloud_run_api: FakeServer,
    cloud_run_state: CloudRunState,
) -> None:
    """No GOOGLE_CLOUD_PROJECT, no region, no credentials given: the lookup asks the metadata server for
    them, and the Admin API gets one of its access tokens, as Google's does (http:// endpoint or not)."""
    cloud_run_state.services["classifier-backend"] = "https://classifier-backend-abc-uk.a.run.app"
    cloud_run_state.access_tokens = metadata_state.access_tokens
    settings = FrontendSettings(cloud_run_api_endpoint=cloud_run_api.url)

    location = BackendLocator(settings, metadata=MetadataServer()).locate()

    assert location.url == "https://classifier-backend-abc-uk.a.run.app"
    assert location.description == "Cloud Run service 'classifier-backend' (project example-project, region us-east4)"
    (lookup,) = cloud_run_api.requests
    assert lookup.path.startswith("/v2/projects/example-project/locations/us-east4/services/classifier-backend")
    assert lookup.headers["authorization"].removeprefix("Bearer ") in metadata_state.access_tokens


def test_on_cloud_run_permission_denied_names_the_role_the_service_and_the_account(
    on_cloud_run: FakeServer, cloud_run_api: FakeServer, cloud_run_state: CloudRunState
) -> None:
    cloud_run_state.denied = True

    error = discovery_error(BackendLocator(FrontendSettings(cloud_run_api_endpoint=cloud_run_api.url)))

    assert error.code == "permission_denied"
    assert "Permission 'run.services.get' denied" in error.message
    assert (
        "Grant roles/run.viewer on the backend service to the frontend's service account "
        "(classifier-frontend@example-project.iam.gserviceaccount.com): `gcloud run services add-iam-policy-binding "
        "classifier-backend --region=us-east4 --member=serviceAccount:"
        "classifier-frontend@example-project.iam.gserviceaccount.com --role=roles/run.viewer`"
    ) in error.message


def test_an_access_token_the_api_refuses_is_explained(
    on_cloud_run: FakeServer, cloud_run_api: FakeServer, cloud_run_state: CloudRunState
) -> None:
    cloud_run_state.services["classifier-backend"] = "https://classifier-backend-abc-uk.a.run.app"
    cloud_run_state.access_tokens = {"not-one-the-metadata-server-gave"}

    error = discovery_error(BackendLocator(FrontendSettings(cloud_run_api_endpoint=cloud_run_api.url)))

    assert error.code == "unauthenticated"
    assert "did not accept the frontend's credentials" in error.message


def test_on_cloud_run_without_a_metadata_server_it_says_so_at_once(
    on_cloud_run: FakeServer, cloud_run_api: FakeServer
) -> None:
    """Not "on Cloud Run both are automatic", and not after google-auth's retries: one clear message."""
    on_cloud_run.stop()  # its port closed: connections refused
    settings = FrontendSettings(cloud_run_api_endpoint=cloud_run_api.url)

    started = time.monotonic()
    error = discovery_error(BackendLocator(settings, metadata=MetadataServer()))
    seconds = time.monotonic() - started

    assert seconds < 1.0
    assert error.code == "metadata_unreachable"
    assert f"asked it at http://127.0.0.1:{on_cloud_run.port} and the connection was refused" in error.message
    for advice in ("K_SERVICE=classifier-frontend is set", "GCE_METADATA_HOST", "network", "set BACKEND_URL"):
        assert advice in error.message
    assert "both are automatic" not in error.message
    assert cloud_run_api.requests == []


@pytest.mark.slow  # waits out a timeout
def test_a_metadata_server_that_never_answers_costs_one_short_timeout(
    monkeypatch: pytest.MonkeyPatch, cloud_run_api: FakeServer
) -> None:
    """Accepts connections, answers nothing (google-auth would wait 3 s three times, then more)."""
    with running(FakeServer(lambda request: Reply(200, b"", delay_s=30))) as silent:
        monkeypatch.setenv("K_SERVICE", "classifier-frontend")
        monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{silent.port}")
        metadata = MetadataServer()
        locator = BackendLocator(FrontendSettings(cloud_run_api_endpoint=cloud_run_api.url), metadata=metadata)

        started = time.monotonic()
        error = discovery_error(locator)
        first = time.monotonic() - started
        started = time.monotonic()
        again = discovery_error(locator)  # within METADATA_FAILURE_REUSE_S: reported again, not asked again
        second = time.monotonic() - started

    assert METADATA_TIMEOUT_S - 0.1 < first < METADATA_TIMEOUT_S + 1.0
    assert second < 0.1
    assert (error.code, again.code) == ("metadata_unreachable", "metadata_unreachable")
    assert f"had no answer within {METADATA_TIMEOUT_S:g} s" in error.message
    assert len(silent.requests) == 1


def test_something_else_at_gce_metadata_host_is_no_metadata_server(
    monkeypatch: pytest.MonkeyPatch, backend: FakeServer, cloud_run_api: FakeServer
) -> None:
    monkeypatch.setenv("K_SERVICE", "classifier-frontend")
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{backend.port}")  # the backend, say: wrong address

    error = discovery_error(BackendLocator(FrontendSettings(cloud_run_api_endpoint=cloud_run_api.url)))

    assert error.code == "metadata_unreachable"
    assert "is not a metadata server (no Metadata-Flavor header)" in error.message


def test_the_page_says_the_metadata_server_is_down_once(
    on_cloud_run: FakeServer, cloud_run_api: FakeServer, cloud_run_state: CloudRunState
) -> None:
    """Through Backend, as the page uses it: the status and every image report the same, prompt error."""
    cloud_run_state.services["classifier-backend"] = "https://classifier-backend-abc-uk.a.run.app"
    on_cloud_run.stop()
    backend = Backend(
        FrontendSettings(cloud_run_api_endpoint=cloud_run_api.url),
        locator=BackendLocator(FrontendSettings(cloud_run_api_endpoint=cloud_run_api.url), metadata=MetadataServer()),
    )

    status = backend.status()
    results = backend.predict_many([IMAGE, IMAGE], top_k=3)

    assert status.state == "metadata"
    assert status.problem is not None
    assert status.problem.title == "The metadata server could not be reached."
    assert all(isinstance(r, BackendError) and r.kind == "metadata" for r in results)
