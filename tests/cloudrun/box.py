"""Cloud Run in a box: both images, run the way Cloud Run runs a revision, with local stand-ins for Google.

``python -m tests.cloudrun.box`` (or ``make cloud-run-local``) builds the images, starts everything, prints
the page's URL and waits for Ctrl-C; ``--scenario`` starts it broken in one of the ways tests/cloudrun
checks. The tests (``test_box.py``) use the same ``CloudRunBox``.

What runs, all on 127.0.0.1 (the containers share the host's network, ``--network=host``):

- **The two images**, built with podman from the repository's Dockerfiles (``tests.containers.podman``),
  each started with what a Cloud Run revision gets: ``PORT``, ``K_SERVICE``, ``K_REVISION``,
  ``K_CONFIGURATION``, the ``--set-env-vars`` of its ``gcloud run deploy`` step and its ``--cpu`` and
  ``--memory``, all read from cloudbuild.yaml (``read_deployment``), not copied here.
- **The metadata server** (``tests.cloudrun.metadata``): project, region, the frontend's service account
  (cloudbuild.yaml's ``--service-account``), access tokens and identity tokens signed by a local RSA key.
  Both containers reach it through ``GCE_METADATA_HOST`` / ``GCE_METADATA_IP``, as google-auth reads them
  (on Cloud Run it is at 169.254.169.254, which is not ours to answer here).
- **The Cloud Run Admin API** (``tests.helpers.fakes.fake_cloud_run_api``, at the frontend's
  ``CLOUD_RUN_API_ENDPOINT``): the backend service's ``uri`` is the backend container's URL; a lookup must
  carry one of the metadata server's access tokens.
- **Google's certificate endpoint** (``tests.helpers.tokens.CertServer``): the local key's certificate.
- **IAM**: on Cloud Run, the platform refuses calls to a private backend unless they carry a Google-signed
  identity token, for the service's URL, of a member with ``roles/run.invoker``. Here the backend's own
  check stands in for it: ``AUTH_AUDIENCE`` = its URL, ``AUTH_ALLOWED_EMAILS`` = the members cloudbuild.yaml
  grants ``roles/run.invoker`` on it, ``AUTH_CERTS_URL`` = the local certificate endpoint.

One difference is set on purpose: the frontend gets ``BACKEND_AUTH=id_token``. Locally the backend's URL
is ``http://``, and ``auto`` (the default) sends identity tokens to ``https://`` URLs only; on Cloud Run
the URL is ``https://...run.app`` and ``auto`` sends the token. Neither container gets ``BACKEND_URL`` or a
key file: the frontend finds the backend and its identity the way it does on Cloud Run.

The fakes can be switched while everything runs (``CloudRunBox.apply``); the frontend caches its lookup
and tokens, so ``switch`` restarts its container after changing them.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import httpx
import pytest

from tests.cloudrun.metadata import MetadataState, metadata_env, metadata_server
from tests.containers import cloudbuild
from tests.containers.cloudrun_limits import ingress_args
from tests.containers.podman import Container, build_image, container, podman_executable
from tests.helpers import ROOT, free_port
from tests.helpers.fakes import CloudRunState, FakeServer, fake_cloud_run_api
from tests.helpers.tokens import CertServer, SigningKey

BACKEND_TAG = "localhost/image-classifier-backend:cloudrun-box"
FRONTEND_TAG = "localhost/image-classifier-frontend:cloudrun-box"
ARTIFACTS = ROOT / "artifacts" / "cloudrun"
# What Cloud Run knows and cloudbuild.yaml does not: the project's number, and the revisions' names.
PROJECT_NUMBER = "123456789012"
REVISION_SUFFIX = "00001-box"
INVOKER = "roles/run.invoker"
VIEWER = "roles/run.viewer"

SCENARIOS = {
    "working": "everything deployed and granted as cloudbuild.yaml does it",
    "wrong-audience": "the metadata server mints identity tokens for another audience",
    "other-account": "the frontend runs as a service account without roles/run.invoker on the backend",
    "no-metadata-server": "the metadata server is down",
    "no-viewer-role": "the Admin API denies run.services.get (no roles/run.viewer on the backend service)",
}


@dataclass(frozen=True)
class Revision:
    """What cloudbuild.yaml's ``gcloud run deploy`` gives one service."""

    service: str
    service_account: str  # --service-account
    env: Mapping[str, str]  # --set-env-vars
    cpu: str  # --cpu
    memory: str  # --memory, as gcloud takes it (2Gi)

    def environment(self, port: int) -> dict[str, str]:
        """The environment Cloud Run gives the revision's container (PORT: here a free port, not --port)."""
        return {
            "PORT": str(port),
            "K_SERVICE": self.service,
            "K_REVISION": f"{self.service}-{REVISION_SUFFIX}",
            "K_CONFIGURATION": self.service,
            **self.env,
        }

    def limits(self) -> list[str]:
        """podman's options for the revision's --cpu and --memory."""
        memory = self.memory.replace("Gi", "g").replace("Mi", "m")  # podman's g and m are binary units too
        return [f"--cpus={self.cpu}", f"--memory={memory}"]


@dataclass(frozen=True)
class Deployment:
    """Both services as cloudbuild.yaml deploys them, with the roles it grants on the backend service."""

    project: str
    region: str
    backend: Revision
    frontend: Revision
    invokers: tuple[str, ...]  # emails of the members granted roles/run.invoker on the backend service
    viewers: tuple[str, ...]  # ... and roles/run.viewer


def read_deployment(config: Mapping[str, Any] | None = None) -> Deployment:
    """The deploy and IAM steps of cloudbuild.yaml, with its default substitutions (and a sample project).

    The frontend is the service deployed with BACKEND_SERVICE in its environment; the backend, the service
    it names.
    """
    config = config if config is not None else cloudbuild.load()
    values = cloudbuild.substitution_values(config)
    deploys: dict[str, list[str]] = {}
    bindings: list[tuple[str, str, str]] = []  # (service, member, role)
    for step in config["steps"]:
        args = cloudbuild.step_args(step, values)
        if args[:2] == ["run", "deploy"]:
            deploys[args[2]] = args
        elif args[:3] == ["run", "services", "add-iam-policy-binding"]:
            bindings.append((args[3], cloudbuild.flag_value(args, "--member"), cloudbuild.flag_value(args, "--role")))

    def revision(service: str) -> Revision:
        args = ingress_args(deploys[service])  # the service's flags and its ingress container's
        env: dict[str, str] = {}
        for text in cloudbuild.flag_values(args, "--set-env-vars"):
            env.update(cloudbuild.key_values(text))
        return Revision(
            service=service,
            service_account=cloudbuild.flag_value(args, "--service-account"),
            env=env,
            cpu=cloudbuild.flag_value(args, "--cpu"),
            memory=cloudbuild.flag_value(args, "--memory"),
        )

    services = {name: revision(name) for name in deploys}
    (frontend,) = [r for r in services.values() if "BACKEND_SERVICE" in r.env]
    backend = services[frontend.env["BACKEND_SERVICE"]]

    def granted(role: str) -> tuple[str, ...]:
        return tuple(
            member.removeprefix("serviceAccount:")
            for service, member, bound in bindings
            if service == backend.service and bound == role and member.startswith("serviceAccount:")
        )

    region = cloudbuild.flag_value(deploys[backend.service], "--region")
    return Deployment(values["PROJECT_ID"], region, backend, frontend, granted(INVOKER), granted(VIEWER))


@dataclass(frozen=True)
class Images:
    backend: str
    frontend: str


def build_images(podman: str, logs: Path) -> Images:
    """Both images, from the working tree (podman's layer cache makes a rebuild quick)."""
    logs.mkdir(parents=True, exist_ok=True)
    build_image(podman, "backend.dockerfile", BACKEND_TAG, logs / "build-backend.log")
    build_image(podman, "frontend.dockerfile", FRONTEND_TAG, logs / "build-frontend.log")
    return Images(BACKEND_TAG, FRONTEND_TAG)


def wait_for_ready(url: str, timeout: float = 120.0, poll_s: float = 0.02) -> float:
    """Seconds until ``url`` answers 200 (polled every ``poll_s``); TimeoutError past ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return time.monotonic() - started
        time.sleep(poll_s)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:g} s")


class CloudRunBox:
    """Everything above, started by ``with CloudRunBox(...) as box`` and stopped (containers removed) after."""

    def __init__(
        self,
        podman: str,
        images: Images,
        deployment: Deployment | None = None,
        *,
        frontend_port: int | None = None,
        signing_key: SigningKey | None = None,
    ) -> None:
        self.podman = podman
        self.images = images
        self.deployment = deployment or read_deployment()
        self.key = signing_key or SigningKey.generate("cloud-run-in-a-box")
        self.frontend_port = frontend_port or free_port()
        self.backend_port = free_port()
        d = self.deployment
        self.metadata_state = MetadataState(
            key=self.key,
            project_id=d.project,
            project_number=PROJECT_NUMBER,
            region=d.region,
            email=d.frontend.service_account,
        )
        self.metadata: FakeServer = metadata_server(self.metadata_state)
        self.api_state = CloudRunState(
            services={d.backend.service: self.backend_url}, access_tokens=self.metadata_state.access_tokens
        )
        self.api: FakeServer = fake_cloud_run_api(self.api_state)
        self.certs = CertServer(keys={self.key.kid: self.key.certificate_pem})
        self._stack = contextlib.ExitStack()
        self.backend: Container | None = None
        self.frontend: Container | None = None

    @property
    def backend_url(self) -> str:
        return f"http://127.0.0.1:{self.backend_port}"

    @property
    def frontend_url(self) -> str:
        return f"http://127.0.0.1:{self.frontend_port}"

    # --- starting and stopping

    def __enter__(self) -> CloudRunBox:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stack.close()

    def _start(self) -> None:
        d = self.deployment
        self._stack.enter_context(self.certs.running())
        self.metadata.start()
        self._stack.callback(self.metadata.stop)
        self.api.start()
        self._stack.callback(self.api.stop)
        backend_env = {
            **d.backend.environment(self.backend_port),
            **metadata_env(self.metadata),
            # Cloud Run's IAM, played by the backend's own token check:
            "AUTH_AUDIENCE": self.backend_url,  # the audience Cloud Run checks: the service's URL
            "AUTH_ALLOWED_EMAILS": ",".join(d.invokers),  # the members granted roles/run.invoker on it
            "AUTH_CERTS_URL": self.certs.url,  # Google's certificates: here, the local key's
        }
        self.backend = self._run(self.images.backend, backend_env, self.backend_port, d.backend)
        frontend_env = {
            **d.frontend.environment(self.frontend_port),
            **metadata_env(self.metadata),
            "CLOUD_RUN_API_ENDPOINT": self.api.url,
            # Locally the backend's URL is http://, and BACKEND_AUTH=auto sends tokens to https:// URLs only
            # (on Cloud Run it is https://...run.app, and auto sends one): ask for a token always.
            "BACKEND_AUTH": "id_token",
        }
        self.frontend = self._run(self.images.frontend, frontend_env, self.frontend_port, d.frontend)
        self.backend.wait_until_answers("/ready", timeout=180)
        self.frontend.wait_until_answers("/_stcore/health", timeout=120)

    def _run(self, image: str, env: Mapping[str, str], port: int, revision: Revision) -> Container:
        started = self._stack.enter_context(container(self.podman, image, env=env, options=revision.limits()))
        return Container(self.podman, started.name, port)  # PORT is ours (the URLs must be known before)

    # --- the fakes, switched at run time

    def apply(self, scenario: str) -> None:
        """Set the stand-ins for ``scenario`` (one of SCENARIOS), starting from everything working."""
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}: one of {', '.join(SCENARIOS)}")
        state = self.metadata_state
        state.audience_override = None
        state.email = self.deployment.frontend.service_account
        self.api_state.denied = False
        if not self.metadata.is_running:
            self.metadata.start()  # on the same port
        if scenario == "wrong-audience":
            state.audience_override = f"https://another-service-{PROJECT_NUMBER}.{self.deployment.region}.run.app"
        elif scenario == "other-account":
            state.email = f"someone-else@{self.deployment.project}.iam.gserviceaccount.com"
        elif scenario == "no-metadata-server":
            self.metadata.stop()  # its port closed: connections refused
        elif scenario == "no-viewer-role":
            self.api_state.denied = True

    def switch(self, scenario: str) -> None:
        """``apply`` and restart the frontend, whose lookup and tokens are cached in its process."""
        self.apply(scenario)
        self.restart_frontend()

    def restart_frontend(self) -> None:
        assert self.frontend is not None
        result = self.frontend.run("restart", "--time=10", self.frontend.name, timeout=120)
        assert result.returncode == 0, result.stderr
        self.frontend.wait_until_answers("/_stcore/health", timeout=120)

    # --- the backend's container: a cold start

    def stop_backend(self) -> None:
        """Scaled to zero: no instance."""
        assert self.backend is not None
        result = self.backend.run("stop", "--time=10", self.backend.name, timeout=60)
        assert result.returncode == 0, result.stderr

    def start_backend(self) -> float:
        """Start the stopped backend container; seconds from ``podman start`` to ``/ready`` answering 200."""
        assert self.backend is not None
        started = time.monotonic()
        result = self.backend.run("start", self.backend.name, timeout=60)
        assert result.returncode == 0, result.stderr
        wait_for_ready(f"{self.backend_url}/ready")
        return time.monotonic() - started

    def pause_backend(self) -> None:
        """Frozen: connections are accepted (by the kernel) but not answered, as Cloud Run holds a request
        while an instance starts."""
        assert self.backend is not None
        result = self.backend.run("pause", self.backend.name)
        assert result.returncode == 0, result.stderr

    def unpause_backend(self) -> None:
        assert self.backend is not None
        result = self.backend.run("unpause", self.backend.name)
        assert result.returncode == 0, result.stderr

    def describe(self) -> str:
        d = self.deployment
        return "\n".join(
            [
                f"  page:         {self.frontend_url}    <- open this",
                f"  frontend:     {d.frontend.service}, as {self.metadata_state.email}",
                f"  backend:      {self.backend_url}    {d.backend.service}: needs an identity token for its URL"
                f" from one of {', '.join(d.invokers) or 'nobody'}",
                f"  metadata:     {self.metadata.url}    project {d.project} ({PROJECT_NUMBER}), region {d.region}",
                f"  Admin API:    {self.api.url}",
                f"  certificates: {self.certs.url}",
            ]
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.cloudrun.box",
        description="Both images run as Cloud Run runs them, with local stand-ins for Google; Ctrl-C stops.",
    )
    parser.add_argument("--port", type=int, default=8501, help="the page's port (default 8501)")
    parser.add_argument(
        "--scenario",
        choices=list(SCENARIOS),
        default="working",
        help="; ".join(f"{name}: {what}" for name, what in SCENARIOS.items()),
    )
    args = parser.parse_args(argv)
    port = args.port
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))
    except OSError:
        port = free_port()
        print(f"port {args.port} is in use: the page will be on {port}", flush=True)
    try:
        podman = podman_executable()
        print("building the images (podman, cached layers)...", flush=True)
        images = build_images(podman, ARTIFACTS)
        print("starting the stand-ins and both containers...", flush=True)
        with CloudRunBox(podman, images, frontend_port=port) as box:
            if args.scenario != "working":
                box.switch(args.scenario)
            print(f"\nCloud Run in a box: {args.scenario} ({SCENARIOS[args.scenario]})", flush=True)
            print(box.describe(), flush=True)
            print("\nCtrl-C stops everything.", flush=True)
            stop = False

            def stopped(signum: int, frame: FrameType | None) -> None:
                nonlocal stop
                stop = True

            signal.signal(signal.SIGTERM, stopped)
            with contextlib.suppress(KeyboardInterrupt):
                while not stop:
                    time.sleep(0.5)
            print("\nstopping...", flush=True)
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:  # what tests.containers reports through pytest
        print(f"Cloud Run in a box could not start: {exc}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired as exc:
        print(f"Cloud Run in a box could not start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
