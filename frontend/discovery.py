"""Finding the backend: BACKEND_URL if set, else the Cloud Run Admin API's record of the backend service.

The lookup uses Google's own SDK (``google-cloud-run``, ``run_v2.ServicesClient``) over its REST
transport; the service's ``uri`` field is the backend URL. Every failure becomes a DiscoveryError whose
message tells the person reading the page what to change.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import requests

from frontend.config import DEFAULT_REGION, FrontendSettings

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

logger = logging.getLogger(__name__)

Source = Literal["BACKEND_URL", "cloud_run"]
ProjectLookup = Callable[[], str | None]
RegionLookup = Callable[[], str | None]

METADATA_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class BackendLocation:
    url: str
    source: Source
    description: str  # how it was found, for people: "BACKEND_URL" or "Cloud Run service x (project p, region r)"


class DiscoveryError(Exception):
    """The backend could not be located. ``code`` says why; the message says what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def google_default_project() -> str | None:
    """The project Application Default Credentials know (on Cloud Run: the metadata server's)."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        _, project = google.auth.default()
    except DefaultCredentialsError as exc:
        logger.info("no Google credentials to find the project with", extra={"reason": str(exc)})
        return None
    return project if isinstance(project, str) and project else None


def cloud_run_instance_region() -> str | None:
    """On Cloud Run (K_SERVICE is set), the region this instance runs in, from the metadata server."""
    if not os.environ.get("K_SERVICE"):
        return None
    host = os.environ.get("GCE_METADATA_HOST", "metadata.google.internal")
    try:
        response = requests.get(
            f"http://{host}/computeMetadata/v1/instance/region",
            headers={"Metadata-Flavor": "Google"},
            timeout=METADATA_TIMEOUT_S,
        )
        response.raise_for_status()
    except requests.RequestException as exc:
        logger.warning("could not read this instance's region from the metadata server", extra={"reason": str(exc)})
        return None
    region = response.text.strip().rsplit("/", 1)[-1]  # "projects/123456/regions/europe-west1"
    return region or None


class BackendLocator:
    """Locates the backend each time ``locate()`` is called (callers decide when to cache and re-locate)."""

    def __init__(
        self,
        settings: FrontendSettings,
        *,
        credentials: Credentials | None = None,
        project_lookup: ProjectLookup = google_default_project,
        region_lookup: RegionLookup = cloud_run_instance_region,
    ) -> None:
        self.settings = settings
        self._credentials = credentials
        self._project_lookup = project_lookup
        self._region_lookup = region_lookup
        self._client: Any = None  # run_v2.ServicesClient, made on first use

    def locate(self) -> BackendLocation:
        if self.settings.backend_url:
            return BackendLocation(self.settings.backend_url, "BACKEND_URL", "BACKEND_URL")
        project = self.settings.project or self._project_lookup()
        if not project:
            raise DiscoveryError(
                "not_configured",
                "No backend configured. Set BACKEND_URL to the backend's address (for example "
                "http://127.0.0.1:8000 when both run locally), or give the frontend Google credentials and "
                "GOOGLE_CLOUD_PROJECT so it can look up the Cloud Run service "
                f"{self.settings.backend_service!r} (on Cloud Run both are automatic).",
            )
        region = self.settings.region or self._region_lookup() or DEFAULT_REGION
        return self._lookup(project, region)

    def _lookup(self, project: str, region: str) -> BackendLocation:
        from google.api_core import exceptions as api_exceptions
        from google.auth import exceptions as auth_exceptions

        service = self.settings.backend_service
        name = f"projects/{project}/locations/{region}/services/{service}"
        where = f"Cloud Run service {service!r} (project {project}, region {region})"
        try:
            record = self._services_client().get_service(
                name=name, retry=None, timeout=self.settings.discovery_timeout_s
            )
        except auth_exceptions.DefaultCredentialsError as exc:
            raise DiscoveryError(
                "not_configured",
                f"No Google credentials to look up the {where} with ({exc}). Run `gcloud auth "
                "application-default login`, or set BACKEND_URL to the backend's address.",
            ) from exc
        except api_exceptions.NotFound as exc:
            raise DiscoveryError(
                "not_found",
                f"The {where} does not exist ({_google_message(exc)}). Deploy the backend under that name, or point "
                "the frontend at it with BACKEND_SERVICE / GOOGLE_CLOUD_PROJECT / GOOGLE_CLOUD_REGION, "
                "or set BACKEND_URL.",
            ) from exc
        except (api_exceptions.Forbidden, api_exceptions.Unauthorized) as exc:  # 403 and 401
            raise DiscoveryError(
                "permission_denied",
                f"Not allowed to read the {where} ({_google_message(exc)}). Grant the frontend's service account "
                "roles/run.viewer on the project (or the service), or set BACKEND_URL.",
            ) from exc
        except api_exceptions.GoogleAPICallError as exc:
            raise DiscoveryError(
                "api_error",
                f"The Cloud Run Admin API could not look up the {where} ({exc.code}: {_google_message(exc)}). "
                "Retry in a moment.",
            ) from exc
        except (requests.RequestException, auth_exceptions.TransportError, auth_exceptions.RefreshError) as exc:
            raise DiscoveryError(
                "api_unreachable",
                f"Could not reach the Cloud Run Admin API to look up the {where} "
                f"({type(exc).__name__}). Check the network, or set BACKEND_URL.",
            ) from exc
        uri: str = record.uri
        if not uri:
            condition = record.terminal_condition
            state = f" Its state: {condition.message}" if condition.message else ""
            raise DiscoveryError(
                "no_url",
                f"The {where} exists but has no URL yet: it is still being deployed, or its latest revision "
                f"failed.{state} See `gcloud run services describe {service} --region {region}`.",
            )
        logger.info("found the backend on Cloud Run", extra={"service": record.name, "uri": uri})
        return BackendLocation(uri.rstrip("/"), "cloud_run", where)

    def _services_client(self) -> Any:
        if self._client is None:
            from google.api_core.client_options import ClientOptions
            from google.cloud import run_v2

            endpoint = self.settings.cloud_run_api_endpoint
            credentials = self._credentials
            if credentials is None and endpoint and endpoint.startswith("http://"):
                # A plain-HTTP endpoint is a local emulator or a test's fake API: send it no Google credentials.
                from google.auth.credentials import AnonymousCredentials

                credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
            # REST rather than gRPC: plain HTTPS, the same transport the tests run against a fake API.
            self._client = run_v2.ServicesClient(
                transport="rest", client_options=ClientOptions(api_endpoint=endpoint), credentials=credentials
            )
        return self._client


def _google_message(exc: Exception) -> str:
    """The API's own message, without the "GET https://...: " prefix the REST client puts before it."""
    message = str(getattr(exc, "message", "") or exc)
    return re.sub(r"^[A-Z]+ \S+: ", "", message).rstrip(".")
