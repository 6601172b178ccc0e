"""Finding the backend: BACKEND_URL if set, else the Cloud Run Admin API's record of the backend service.

The lookup uses Google's own SDK (``google-cloud-run``, ``run_v2.ServicesClient``) over its REST
transport; the service's ``uri`` field is the backend URL. Every failure becomes a DiscoveryError whose
message tells the person reading the page what to change. ``LocationCache`` keeps what was found, and
looks again when that address stops answering. The instance's metadata server (``MetadataServer``) is
asked here too: on Cloud Run it knows the project, region and service account.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import requests

from frontend.config import DEFAULT_REGION, FrontendSettings

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

__all__ = [
    "DEFAULT_METADATA_HOST",
    "FAILED_LOOKUP_REUSE_S",
    "METADATA",
    "METADATA_FAILURE_REUSE_S",
    "METADATA_TIMEOUT_S",
    "REDISCOVER_MIN_INTERVAL_S",
    "BackendLocation",
    "BackendLocator",
    "DiscoveryError",
    "LocationCache",
    "MetadataServer",
    "MetadataUnreachable",
    "cloud_run_instance_region",
    "cloud_run_project",
    "google_default_project",
    "on_cloud_run",
]

logger = logging.getLogger(__name__)

Source = Literal["BACKEND_URL", "cloud_run"]
ProjectLookup = Callable[[], str | None]
RegionLookup = Callable[[], str | None]

DEFAULT_METADATA_HOST = "metadata.google.internal"
# One attempt, this long: on Cloud Run the metadata server answers in milliseconds. google-auth's own
# detection waits 3 s three times (with back-off) before it gives up, which a page cannot afford.
METADATA_TIMEOUT_S = 2.0
METADATA_FAILURE_REUSE_S = 5.0  # an unreachable metadata server is reported again (not asked again) this long
REDISCOVER_MIN_INTERVAL_S = 2.0  # a backend that is down does not make every request look it up again
FAILED_LOOKUP_REUSE_S = 5.0  # a failed lookup is reported again, not redone, for this long


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


def on_cloud_run() -> bool:
    """Cloud Run sets K_SERVICE (with K_REVISION and K_CONFIGURATION) in every container it runs."""
    return bool(os.environ.get("K_SERVICE"))


class MetadataUnreachable(Exception):
    """On Cloud Run, the metadata server did not answer: no identity tokens, access tokens, project or region.

    ``title`` is the headline for the page, the message says what that means and what to check.
    """

    title = "The metadata server could not be reached."

    def __init__(self, url: str, reason: str) -> None:
        service = os.environ.get("K_SERVICE", "")
        super().__init__(
            f"The frontend asked it at {url} and {reason}. On Cloud Run (K_SERVICE={service} is set) the metadata "
            "server gives the frontend its service account's identity tokens (to call a private backend) and "
            "access tokens (to look the backend up in the Cloud Run Admin API), and its project and region: "
            "without it the frontend can do neither. If GCE_METADATA_HOST is set, it must name a metadata "
            "server; otherwise check the instance's network (the metadata server is at "
            f"{DEFAULT_METADATA_HOST}, 169.254.169.254). If this is not Cloud Run, unset K_SERVICE and set "
            "BACKEND_URL (and GOOGLE_APPLICATION_CREDENTIALS to a service-account key for a private backend)."
        )
        self.url = url
        self.reason = reason


class MetadataServer:
    """The metadata server of the instance the frontend runs on (Cloud Run's, or a stand-in named by
    ``GCE_METADATA_HOST``, as google-auth reads it), asked once with a short timeout.

    A failure is remembered for ``failure_reuse_s``, so that the requests of one page run, and the page
    runs right after it, do not each wait for it again.
    """

    def __init__(
        self,
        host: str | None = None,
        timeout_s: float = METADATA_TIMEOUT_S,
        failure_reuse_s: float = METADATA_FAILURE_REUSE_S,
    ) -> None:
        self._host = host
        self.timeout_s = timeout_s
        self.failure_reuse_s = failure_reuse_s
        self._lock = threading.Lock()
        self._failed: tuple[float, MetadataUnreachable] | None = None
        self._email: str | None = None

    @property
    def url(self) -> str:
        host = (
            self._host
            or os.environ.get("GCE_METADATA_HOST")
            or os.environ.get("GCE_METADATA_ROOT")
            or DEFAULT_METADATA_HOST
        )
        return f"http://{host}"

    def get(self, path: str) -> str:
        """``GET /computeMetadata/v1/<path>``: its text; MetadataUnreachable if no metadata server answers,
        ``requests.HTTPError`` if it answers with an error."""
        with self._lock:
            if self._failed is not None:
                failed_at, error = self._failed
                if time.monotonic() - failed_at < self.failure_reuse_s:
                    raise error
                self._failed = None
        url = self.url
        try:
            response = requests.get(
                f"{url}/computeMetadata/v1/{path}",
                headers={"Metadata-Flavor": "Google"},
                timeout=self.timeout_s,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise self._unreachable(url, _metadata_failure(exc, self.timeout_s)) from exc
        if response.headers.get("Metadata-Flavor") != "Google":
            raise self._unreachable(
                url, f"what answered (HTTP {response.status_code}) is not a metadata server (no Metadata-Flavor header)"
            )
        response.raise_for_status()
        return response.text.strip()

    def check(self) -> None:
        """Raise MetadataUnreachable unless the metadata server answers (it is asked every time)."""
        self.service_account_email(cached=False)

    def service_account_email(self, *, cached: bool = True) -> str | None:
        """The email of the service account the instance runs as (None if the server does not say)."""
        if cached and self._email is not None:
            return self._email
        try:
            email = self.get("instance/service-accounts/default/email")
        except requests.HTTPError:
            return None
        self._email = email or None
        return self._email

    def _unreachable(self, url: str, reason: str) -> MetadataUnreachable:
        error = MetadataUnreachable(url, reason)
        logger.warning("the metadata server could not be reached", extra={"url": url, "reason": reason})
        with self._lock:
            self._failed = (time.monotonic(), error)
        return error


def _metadata_failure(exc: requests.RequestException, timeout_s: float) -> str:
    if isinstance(exc, requests.Timeout):
        return f"had no answer within {timeout_s:g} s"
    if isinstance(exc, requests.ConnectionError):
        text = str(exc)
        if "Connection refused" in text:
            return "the connection was refused"
        if "Name or service not known" in text or "NameResolutionError" in text or "getaddrinfo" in text:
            return "the name does not resolve"
        return "could not connect"
    return f"the request failed ({type(exc).__name__})"


# The instance's own metadata server, shared by every lookup and token of this process.
METADATA = MetadataServer()


def google_default_project() -> str | None:
    """The project Application Default Credentials know (on Cloud Run the metadata server's: see BackendLocator)."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        _, project = google.auth.default()
    except DefaultCredentialsError as exc:
        logger.info("no Google credentials to find the project with", extra={"reason": str(exc)})
        return None
    return project if isinstance(project, str) and project else None


def cloud_run_instance_region(metadata: MetadataServer | None = None) -> str | None:
    """On Cloud Run (K_SERVICE is set), the region this instance runs in, from the metadata server.

    Raises MetadataUnreachable when the metadata server does not answer.
    """
    if not on_cloud_run():
        return None
    try:
        answer = (metadata or METADATA).get("instance/region")
    except requests.HTTPError as exc:
        logger.warning("the metadata server did not say this instance's region", extra={"reason": str(exc)})
        return None
    region = answer.rsplit("/", 1)[-1]  # "projects/123456/regions/europe-west1"
    return region or None


def cloud_run_project(metadata: MetadataServer | None = None) -> str | None:
    """The project: on Cloud Run the metadata server's (asked directly, with its short timeout), elsewhere
    the one Application Default Credentials know."""
    if not on_cloud_run():
        return google_default_project()
    try:
        return (metadata or METADATA).get("project/project-id") or None
    except requests.HTTPError as exc:
        logger.warning("the metadata server did not say the project", extra={"reason": str(exc)})
        return None


class BackendLocator:
    """Locates the backend each time ``locate()`` is called (callers decide when to cache and re-locate)."""

    def __init__(
        self,
        settings: FrontendSettings,
        *,
        credentials: Credentials | None = None,
        project_lookup: ProjectLookup | None = None,
        region_lookup: RegionLookup | None = None,
        metadata: MetadataServer | None = None,
    ) -> None:
        self.settings = settings
        self._credentials = credentials
        self._metadata = metadata or METADATA
        self._project_lookup = project_lookup or (lambda: cloud_run_project(self._metadata))
        self._region_lookup = region_lookup or (lambda: cloud_run_instance_region(self._metadata))
        self._client: Any = None  # run_v2.ServicesClient, made on first use

    def locate(self) -> BackendLocation:
        if self.settings.backend_url:
            return BackendLocation(self.settings.backend_url, "BACKEND_URL", "BACKEND_URL")
        try:
            if on_cloud_run() and self._credentials is None:
                # The lookup's credentials (and the project and region, unless set) come from the metadata
                # server: ask it first, with a short timeout, rather than let google-auth wait for it.
                self._metadata.check()
            project = self.settings.project or self._project_lookup()
            region = self.settings.region or self._region_lookup() or DEFAULT_REGION
        except MetadataUnreachable as exc:
            raise DiscoveryError("metadata_unreachable", str(exc)) from exc
        if not project:
            raise DiscoveryError(
                "not_configured",
                "No backend configured. Set BACKEND_URL to the backend's address (for example "
                "http://127.0.0.1:8000 when both run locally), or give the frontend Google credentials and "
                "GOOGLE_CLOUD_PROJECT so it can look up the Cloud Run service "
                f"{self.settings.backend_service!r} (on Cloud Run both are automatic).",
            )
        return self._lookup(project, region)

    def service_account(self) -> str | None:
        """On Cloud Run, the email of the frontend's own service account (None elsewhere, or if unknown)."""
        if not on_cloud_run():
            return None
        try:
            return self._metadata.service_account_email()
        except MetadataUnreachable:
            return None

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
        except api_exceptions.Forbidden as exc:  # 403: these credentials may not read the service
            email = self.service_account()
            who = f"the frontend's service account ({email})" if email else "the frontend's service account"
            member = email or "FRONTEND_SA@PROJECT.iam.gserviceaccount.com"
            raise DiscoveryError(
                "permission_denied",
                f"Not allowed to read the {where} ({_google_message(exc)}). Grant roles/run.viewer on the backend "
                f"service to {who}: `gcloud run services add-iam-policy-binding {service} --region={region} "
                f"--member=serviceAccount:{member} --role=roles/run.viewer` (or grant it on the project), "
                "or set BACKEND_URL.",
            ) from exc
        except api_exceptions.Unauthorized as exc:  # 401: the credentials themselves were not accepted
            raise DiscoveryError(
                "unauthenticated",
                f"The Cloud Run Admin API did not accept the frontend's credentials to read the {where} "
                f"({_google_message(exc)}). On Cloud Run they come from the metadata server; elsewhere run "
                "`gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS, or set BACKEND_URL.",
            ) from exc
        except api_exceptions.GoogleAPICallError as exc:
            raise DiscoveryError(
                "api_error",
                f"The Cloud Run Admin API could not look up the {where} ({exc.code}: {_google_message(exc)}). "
                "Retry in a moment.",
            ) from exc
        except (requests.RequestException, auth_exceptions.TransportError, auth_exceptions.RefreshError) as exc:
            if on_cloud_run() and self._credentials is None:
                try:  # an access token could not be had: is it the metadata server that went away?
                    self._metadata.check()
                except MetadataUnreachable as unreachable:
                    raise DiscoveryError("metadata_unreachable", str(unreachable)) from exc
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
            if credentials is None and endpoint and endpoint.startswith("http://") and not on_cloud_run():
                # A plain-HTTP endpoint is a local emulator or a test's fake API: send it no Google credentials.
                # On Cloud Run (K_SERVICE set) the instance's own are sent, as to the real API: that is what a
                # stand-in such as tests/cloudrun's checks, with access tokens from its metadata server.
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


class LocationCache:
    """Where the backend is, as the page uses it: looked up on first use and kept while it answers.

    When the address stops answering, ``relocate`` looks it up again, so a backend redeployed under a new URL
    is found without restarting the frontend (at most every ``rediscover_min_interval_s``: a backend that is
    down does not make every request ask the Admin API). A failed lookup is reported again, not redone, for
    ``failed_lookup_reuse_s``: page reruns must not each wait for (or spend API quota on) the same failure.
    """

    def __init__(
        self,
        locator: BackendLocator,
        *,
        rediscover_min_interval_s: float = REDISCOVER_MIN_INTERVAL_S,
        failed_lookup_reuse_s: float = FAILED_LOOKUP_REUSE_S,
    ) -> None:
        self.locator = locator
        self._rediscover_min_interval_s = rediscover_min_interval_s
        self._failed_lookup_reuse_s = failed_lookup_reuse_s
        self._lock = threading.Lock()
        self._location: BackendLocation | None = None
        self._relocated_at = float("-inf")
        self._failed: tuple[float, DiscoveryError] | None = None

    @property
    def known(self) -> BackendLocation | None:
        """The address last found (None before the first successful lookup)."""
        return self._location

    def current(self) -> BackendLocation:
        """The backend's address, looked up on first use (and again, every few seconds, while that fails)."""
        with self._lock:
            if self._location is not None:
                return self._location
            if self._failed is not None:
                failed_at, error = self._failed
                if time.monotonic() - failed_at < self._failed_lookup_reuse_s:
                    raise DiscoveryError(error.code, error.message)
            return self._locate_locked()

    def relocate(self, stale: BackendLocation) -> BackendLocation:
        """``stale`` stopped answering: look the backend up again, unless another request just did."""
        with self._lock:
            if self._location is not None and self._location != stale:
                return self._location  # another thread already found the new address
            now = time.monotonic()
            if now - self._relocated_at < self._rediscover_min_interval_s and self._location is not None:
                return self._location  # looked up moments ago: a backend that is down does not flood the API
            self._relocated_at = now
            location = self._locate_locked()
            if location != stale:
                logger.warning("the backend moved", extra={"old_url": stale.url, "new_url": location.url})
            return location

    def _locate_locked(self) -> BackendLocation:
        try:
            location = self.locator.locate()
        except DiscoveryError as exc:
            logger.warning("could not locate the backend", extra={"code": exc.code, "reason": exc.message})
            self._failed = (time.monotonic(), exc)
            raise
        self._failed = None
        self._location = location
        return location
