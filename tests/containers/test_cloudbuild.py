"""cloudbuild.yaml: step order, image tags, deploy flags, substitutions; and gcloud's own parser on every
gcloud command there and in the deploy docs (offline: no credentials, no network; gcloud stops at
"no active account", after it has parsed and validated the arguments)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from frontend.config import FrontendSettings
from tests.containers import cloudbuild
from tests.support import ROOT, free_port, need_executable

IMAGE = re.compile(
    r"^\$\{_REGION\}-docker\.pkg\.dev/\$\{PROJECT_ID\}/\$\{_REPOSITORY\}/(?P<name>[^:]+):\$\{COMMIT_SHA\}$"
)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return cloudbuild.load()


@pytest.fixture(scope="module")
def by_id(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return cloudbuild.steps(config)


@pytest.fixture(scope="module")
def values(config: dict[str, Any]) -> dict[str, str]:
    return cloudbuild.substitution_values(config)


def test_builds_run_in_parallel_and_each_push_follows_its_build(by_id: dict[str, dict[str, Any]]) -> None:
    assert by_id["build-backend"]["waitFor"] == ["-"]
    assert by_id["build-frontend"]["waitFor"] == ["-"]
    after = cloudbuild.dependencies(by_id)
    assert after["build-backend"] == after["build-frontend"] == set()
    assert "build-backend" in after["push-backend"]
    assert "build-frontend" in after["push-frontend"]
    # a slow backend build does not hold up pushing the frontend, nor the other way round
    assert "build-backend" not in after["push-frontend"]
    assert "build-frontend" not in after["push-backend"]


def test_backend_is_deployed_and_opened_to_the_frontend_before_the_frontend_is_deployed(
    by_id: dict[str, dict[str, Any]],
) -> None:
    after = cloudbuild.dependencies(by_id)
    assert "push-backend" in after["deploy-backend"]
    for grant in ("allow-frontend-to-invoke-backend", "allow-frontend-to-view-backend"):
        assert "deploy-backend" in after[grant]
        assert grant in after["deploy-frontend"]
    assert {"deploy-backend", "push-frontend"} <= after["deploy-frontend"]


def test_images_are_tagged_with_the_commit_and_deployed_as_built(
    config: dict[str, Any], by_id: dict[str, dict[str, Any]]
) -> None:
    def image_of(step: str, flag: str) -> str:
        return cloudbuild.flag_value([str(a) for a in by_id[step]["args"]], flag)

    images = {}
    for side in ("backend", "frontend"):
        service, dockerfile = f"_{side.upper()}_SERVICE", f"{side}.dockerfile"
        build = by_id[f"build-{side}"]["args"]
        assert build[0] == "build"
        assert build[-1] == "."  # the repository root is the build context (with .dockerignore)
        assert cloudbuild.flag_value([str(a) for a in build], "--file") == dockerfile
        revision = cloudbuild.flag_value([str(a) for a in build], "--label")
        assert revision == "org.opencontainers.image.revision=${COMMIT_SHA}"
        tag = image_of(f"build-{side}", "--tag")
        match = IMAGE.match(tag)
        assert match, f"{tag} is not <region>-docker.pkg.dev/<project>/<repository>/<name>:<commit>"
        assert match["name"] == "${" + service + "}"
        assert by_id[f"push-{side}"]["args"] == ["push", tag]
        assert image_of(f"deploy-{side}", "--image") == tag
        images[side] = tag
    assert config["images"] == [images["backend"], images["frontend"]]


def test_backend_build_args_are_arguments_of_the_dockerfile(by_id: dict[str, dict[str, Any]]) -> None:
    dockerfile = (ROOT / "backend.dockerfile").read_text()
    declared = set(re.findall(r"^ARG (\w+)", dockerfile, re.MULTILINE))
    passed = {arg.split("=", 1)[0] for arg in cloudbuild.flag_values(by_id["build-backend"]["args"], "--build-arg")}
    assert passed == {"MODEL_NAME", "MODEL_WEIGHTS"}
    assert passed <= declared


def test_backend_is_private_and_ready_only_when_the_model_is(
    by_id: dict[str, dict[str, Any]], values: dict[str, str]
) -> None:
    args = cloudbuild.step_args(by_id["deploy-backend"], values)
    assert args[:3] == ["run", "deploy", values["_BACKEND_SERVICE"]]
    assert "--no-allow-unauthenticated" in args
    assert "--allow-unauthenticated" not in args
    assert "--cpu-boost" in args
    assert cloudbuild.flag_value(args, "--execution-environment") == "gen2"
    assert int(cloudbuild.flag_value(args, "--cpu")) >= 2
    assert cloudbuild.flag_value(args, "--memory").endswith("Gi")
    assert 1 < int(cloudbuild.flag_value(args, "--concurrency")) <= 80
    assert int(cloudbuild.flag_value(args, "--timeout")) >= 30  # the backend's own REQUEST_TIMEOUT_S
    port = cloudbuild.flag_value(args, "--port")
    probe = cloudbuild.key_values(cloudbuild.flag_value(args, "--startup-probe"))
    assert (probe["httpGet.path"], probe["httpGet.port"]) == ("/ready", port)
    # Cloud Run caps a startup probe at 240 s in all; a probe must time out within its period
    assert int(probe["periodSeconds"]) * int(probe["failureThreshold"]) <= 240
    assert int(probe["timeoutSeconds"]) <= int(probe["periodSeconds"])
    liveness = cloudbuild.key_values(cloudbuild.flag_value(args, "--liveness-probe"))
    assert (liveness["httpGet.path"], liveness["httpGet.port"]) == ("/health", port)
    env = cloudbuild.key_values(cloudbuild.flag_value(args, "--set-env-vars"))
    assert env == {"INFERENCE_THREADS": cloudbuild.flag_value(args, "--cpu")}
    backend_sa = f"{values['_BACKEND_SA']}@{values['PROJECT_ID']}.iam.gserviceaccount.com"
    assert cloudbuild.flag_value(args, "--service-account") == backend_sa


def test_frontend_is_public_and_configured_to_find_the_backend(
    by_id: dict[str, dict[str, Any]], values: dict[str, str]
) -> None:
    frontend_sa = f"{values['_FRONTEND_SA']}@{values['PROJECT_ID']}.iam.gserviceaccount.com"
    args = cloudbuild.step_args(by_id["deploy-frontend"], values)
    assert args[:3] == ["run", "deploy", values["_FRONTEND_SERVICE"]]
    assert "--allow-unauthenticated" in args
    assert cloudbuild.flag_value(args, "--service-account") == frontend_sa
    assert "--session-affinity" in args  # a Streamlit session lives in one instance
    probe = cloudbuild.key_values(cloudbuild.flag_value(args, "--startup-probe"))
    assert probe["httpGet.path"] == "/_stcore/health"
    env = cloudbuild.key_values(cloudbuild.flag_value(args, "--set-env-vars"))
    assert env == {
        "BACKEND_SERVICE": values["_BACKEND_SERVICE"],
        "GOOGLE_CLOUD_PROJECT": values["PROJECT_ID"],
        "GOOGLE_CLOUD_REGION": values["_REGION"],
    }
    # the frontend's own configuration reads exactly these: Cloud Run lookup, no hard-coded URL
    settings = FrontendSettings.from_env(env)
    assert settings.backend_url is None
    assert (settings.backend_service, settings.project, settings.region) == (
        values["_BACKEND_SERVICE"],
        values["PROJECT_ID"],
        values["_REGION"],
    )
    # ...and its service account may call the backend and read the backend service's URL
    roles = set()
    for grant in ("allow-frontend-to-invoke-backend", "allow-frontend-to-view-backend"):
        grant_args = cloudbuild.step_args(by_id[grant], values)
        assert grant_args[:4] == ["run", "services", "add-iam-policy-binding", values["_BACKEND_SERVICE"]]
        assert cloudbuild.flag_value(grant_args, "--member") == f"serviceAccount:{frontend_sa}"
        assert cloudbuild.flag_value(grant_args, "--region") == values["_REGION"]
        roles.add(cloudbuild.flag_value(grant_args, "--role"))
    assert roles == {"roles/run.invoker", "roles/run.viewer"}


def test_every_substitution_is_declared_and_every_declared_one_is_used(config: dict[str, Any]) -> None:
    declared = set(config["substitutions"])
    assert all(name.startswith("_") for name in declared), "user substitutions must start with _"
    used = cloudbuild.used_substitutions({k: v for k, v in config.items() if k != "substitutions"})
    assert used - declared <= cloudbuild.BUILTINS, f"undeclared: {used - declared - cloudbuild.BUILTINS}"
    # Cloud Build rejects a build whose substitutions are not all used
    assert declared <= used, f"declared but unused: {declared - used}"
    assert {"_REGION", "_REPOSITORY", "_BACKEND_SERVICE", "_FRONTEND_SERVICE", "_FRONTEND_SA", "_MODEL_NAME"} <= used
    assert config["options"]["logging"] == "CLOUD_LOGGING_ONLY"  # required with a user-managed service account


# --- gcloud's own parser, offline


@pytest.fixture(scope="module")
def gcloud(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str], Path]:
    """The installed gcloud in an empty configuration that has no account and cannot reach any network."""
    executable = need_executable("gcloud")
    home = tmp_path_factory.mktemp("gcloud")
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens here: any request fails at once, locally
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "CLOUDSDK_CONFIG": str(home / "config"),
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
        "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
        "GCE_METADATA_HOST": closed.removeprefix("http://"),
        "GCE_METADATA_IP": closed.removeprefix("http://"),
        "HTTPS_PROXY": closed,
        "HTTP_PROXY": closed,
        "https_proxy": closed,
        "http_proxy": closed,
        "NO_PROXY": "",
        "no_proxy": "",
    }
    workdir = home / "source"  # `gcloud builds submit` runs here: a tiny source, never the repository
    workdir.mkdir()
    shutil.copy(cloudbuild.CLOUDBUILD, workdir / "cloudbuild.yaml")
    return executable, env, workdir


NO_ACCOUNT = "You do not currently have an active account selected"


def run_gcloud(gcloud: tuple[str, dict[str, str], Path], command: str, preamble: str = "") -> tuple[int, str]:
    """Run one gcloud command line through bash (so docs' $VARIABLES expand, and `set -u` catches unset ones)."""
    executable, env, workdir = gcloud
    script = f'set -euo pipefail\n{preamble}\ngcloud() {{ {executable} "$@"; }}\n{command}\n'
    result = subprocess.run(
        ["bash", "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    return result.returncode, result.stdout + result.stderr


def assert_parsed(results: Mapping[str, tuple[int, str]]) -> None:
    """gcloud accepted the arguments: it either finished (local commands) or stopped for want of an account."""
    rejected = {cmd: out for cmd, (code, out) in results.items() if code != 0 and NO_ACCOUNT not in out}
    assert not rejected, "\n\n".join(f"{cmd}\n-> {out.strip()}" for cmd, out in rejected.items())


@pytest.mark.slow
def test_gcloud_accepts_every_command_of_the_build(
    gcloud: tuple[str, dict[str, str], Path], by_id: dict[str, dict[str, Any]], values: dict[str, str]
) -> None:
    commands = []
    for step in by_id.values():
        if step.get("entrypoint") == "gcloud":
            args = cloudbuild.step_args(step, values)
            commands.append(shlex.join(["gcloud", *args, f"--project={values['PROJECT_ID']}"]))
    assert len(commands) == 4
    with ThreadPoolExecutor(4) as pool:
        results = dict(zip(commands, pool.map(lambda c: run_gcloud(gcloud, c), commands), strict=True))
    assert_parsed(results)


@pytest.mark.slow
def test_gcloud_accepts_the_build_config(gcloud: tuple[str, dict[str, str], Path]) -> None:
    """`gcloud builds submit` checks the config's schema (unknown or misspelt fields) before it needs an account."""
    command = "gcloud builds submit --project=example-project --config=cloudbuild.yaml --substitutions=COMMIT_SHA=abc ."
    assert_parsed({command: run_gcloud(gcloud, command)})
    # ...and the same check does reject a config gcloud cannot read
    bad = gcloud[2] / "bad.yaml"
    bad.write_text("steps:\n- name: gcr.io/cloud-builders/docker\n  waitfor: ['-']\n")
    code, out = run_gcloud(gcloud, "gcloud builds submit --project=example-project --config=bad.yaml .")
    assert code != 0
    assert NO_ACCOUNT not in out
    assert "waitfor" in out


DOCS = (ROOT / "docs" / "deploy.md", ROOT / "README.md")
SHELL_BLOCK = re.compile(r"```(?:bash|sh|shell)\n(.*?)```", re.DOTALL)
ASSIGNMENT = re.compile(r"^(?:export )?[A-Z][A-Z0-9_]*=")


def documented_commands() -> tuple[str, list[str]]:
    """Variable assignments and gcloud command lines from the shell blocks of the deploy docs."""
    assignments: list[str] = []
    commands: list[str] = []
    for doc in DOCS:
        if not doc.is_file():
            continue
        for block in SHELL_BLOCK.findall(doc.read_text()):
            for raw in block.replace("\\\n", " ").splitlines():
                line = raw.strip()
                if ASSIGNMENT.match(line):
                    assignments.append(line)
                elif line.startswith("gcloud ") and not line.startswith("gcloud auth login"):
                    commands.append(line)
    return "\n".join(dict.fromkeys(assignments)), list(dict.fromkeys(commands))


@pytest.mark.slow
def test_gcloud_accepts_every_command_in_the_deploy_docs(gcloud: tuple[str, dict[str, str], Path]) -> None:
    preamble, commands = documented_commands()
    assert len(commands) >= 15, "the deploy docs lost their gcloud commands"
    # the docs' own variables; those computed by a command (`git rev-parse`, ...) get a sample value
    preamble = "\n".join(
        f"{line.split('=', 1)[0]}=example-value" if "$(" in line else line for line in preamble.splitlines()
    )
    # `gcloud config ...` changes the configuration the other commands read: run those first, in order
    setup = [c for c in commands if c.startswith("gcloud config ")]
    results = {c: run_gcloud(gcloud, c, preamble) for c in setup}
    rest = [c for c in commands if c not in setup]
    with ThreadPoolExecutor(4) as pool:
        results.update(zip(rest, pool.map(lambda c: run_gcloud(gcloud, c, preamble), rest), strict=True))
    assert_parsed(results)


@pytest.mark.slow
def test_gcloud_uploads_only_what_the_build_uses(gcloud: tuple[str, dict[str, str], Path], tmp_path: Path) -> None:
    """`gcloud builds submit` uploads the source minus .gcloudignore: no secrets, no caches, no virtualenv."""
    from tests.containers.test_dockerfiles import DECOYS, KEPT

    ignore = ROOT / ".gcloudignore"
    if not ignore.is_file():
        pytest.skip("no .gcloudignore: `gcloud builds submit` would upload whatever .gitignore lets through")
    build_inputs = (*KEPT, "backend.dockerfile", "frontend.dockerfile", "cloudbuild.yaml", ".dockerignore")
    for name in (*DECOYS, *build_inputs):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("decoy\n" if name in DECOYS else "kept\n")
    shutil.copy(ignore, tmp_path / ".gcloudignore")
    shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")
    executable, env, _ = gcloud
    listed = subprocess.run(
        [executable, "meta", "list-files-for-upload", "."],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    assert sorted(listed) == sorted(build_inputs)
