"""cloudbuild.yaml: step order, image tags, layer cache, deploy flags, the closing verification step,
substitutions; and gcloud's own parser on every gcloud command there and in the deploy docs (offline: no
credentials, no network; gcloud stops at "no active account", after it has parsed and validated the
arguments). What gcloud's parser cannot see, the values, is checked in test_cloudrun_limits.py."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from backend.config import Settings
from frontend.config import FrontendSettings
from tests.containers import cloudbuild
from tests.containers.cloudrun_limits import ingress_args
from tests.helpers import ROOT, need_executable

REPOSITORY = r"\$\{_REGION\}-docker\.pkg\.dev/\$\{PROJECT_ID\}/\$\{_REPOSITORY\}/"
IMAGE = re.compile(rf"^{REPOSITORY}(?P<name>[^:]+):\$\{{COMMIT_SHA\}}$")
GOOGLE_CLOUD_CLI = re.compile(r"^gcr\.io/google\.com/cloudsdktool/google-cloud-cli:(?P<version>\d+\.\d+\.\d+)-slim$")
BUILD_STEPS = ("build-backend-toolchain", "build-backend", "build-frontend")


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return cloudbuild.load()


@pytest.fixture(scope="module")
def by_id(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return cloudbuild.steps(config)


@pytest.fixture(scope="module")
def values(config: dict[str, Any]) -> dict[str, str]:
    return cloudbuild.substitution_values(config)


def raw_args(step: Mapping[str, Any]) -> list[str]:
    return [str(arg) for arg in step.get("args", [])]


def test_builds_run_in_parallel_and_each_push_follows_its_build(by_id: dict[str, dict[str, Any]]) -> None:
    assert by_id["build-backend-toolchain"]["waitFor"] == ["-"]
    assert by_id["build-frontend"]["waitFor"] == ["-"]
    after = cloudbuild.dependencies(by_id)
    assert after["build-backend-toolchain"] == after["build-frontend"] == set()
    assert after["build-backend"] == {"build-backend-toolchain"}  # its model stage comes from there, cached
    assert "build-backend" in after["push-backend"]
    assert "build-frontend" in after["push-frontend"]
    # a slow backend build does not hold up pushing the frontend, nor the other way round
    assert not {"build-backend", "build-backend-toolchain"} & after["push-frontend"]
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
    images = {}
    for side in ("backend", "frontend"):
        service, dockerfile = f"_{side.upper()}_SERVICE", f"{side}.dockerfile"
        build = raw_args(by_id[f"build-{side}"])
        assert build[0] == "build"
        assert build[-1] == "."  # the repository root is the build context (with .dockerignore)
        assert cloudbuild.flag_value(build, "--file") == dockerfile
        revision = cloudbuild.flag_value(build, "--label")
        assert revision == "org.opencontainers.image.revision=${COMMIT_SHA}"
        tags = cloudbuild.flag_values(build, "--tag")
        commit = [tag for tag in tags if tag.endswith(":${COMMIT_SHA}")]
        assert len(commit) == 1, tags
        match = IMAGE.match(commit[0])
        assert match, f"{commit[0]} is not <region>-docker.pkg.dev/<project>/<repository>/<name>:<commit>"
        assert match["name"] == "${" + service + "}"
        repository = commit[0].removesuffix(":${COMMIT_SHA}")
        assert sorted(tags) == sorted([commit[0], f"{repository}:latest"])  # :latest is the next build's cache
        # every local tag of the image is pushed: the commit, :latest (and the backend's :model-stage)
        assert raw_args(by_id[f"push-{side}"]) == ["push", "--all-tags", repository]
        assert cloudbuild.flag_value(ingress_args(raw_args(by_id[f"deploy-{side}"])), "--image") == commit[0]
        images[side] = commit[0]
    assert config["images"] == [images["backend"], images["frontend"]]


def test_builds_reuse_the_previous_images_layers(by_id: dict[str, dict[str, Any]]) -> None:
    """BuildKit with inline cache metadata: the pushed images are the next build's layer cache."""
    for step_id in BUILD_STEPS:
        step = by_id[step_id]
        args = raw_args(step)
        assert "DOCKER_BUILDKIT=1" in step.get("env", []), step_id
        assert "BUILDKIT_INLINE_CACHE=1" in cloudbuild.flag_values(args, "--build-arg"), step_id
        # Cloud Run runs linux/amd64 images only; say so even where the worker already is amd64
        assert cloudbuild.flag_value(args, "--platform") == "linux/amd64", step_id
        own = {tag.rsplit(":", 1)[0] for tag in cloudbuild.flag_values(args, "--tag")}
        assert len(own) == 1
        sources = cloudbuild.flag_values(args, "--cache-from")
        assert sources, f"{step_id} has no --cache-from"
        assert {source.rsplit(":", 1)[0] for source in sources} == own, "cache from its own image only"
    toolchain = raw_args(by_id["build-backend-toolchain"])
    assert cloudbuild.flag_value(toolchain, "--target") == "model"
    (stage_tag,) = cloudbuild.flag_values(toolchain, "--tag")
    assert stage_tag.endswith(":model-stage")
    assert cloudbuild.flag_values(toolchain, "--cache-from") == [stage_tag]
    backend = raw_args(by_id["build-backend"])
    assert stage_tag in cloudbuild.flag_values(backend, "--cache-from")
    # both builds of the backend bake in the same model
    model_args = {a for a in cloudbuild.flag_values(backend, "--build-arg") if a.startswith("MODEL_")}
    assert model_args == {a for a in cloudbuild.flag_values(toolchain, "--build-arg") if a.startswith("MODEL_")}
    # the model stage really is named so in the Dockerfile
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\} AS model$", (ROOT / "backend.dockerfile").read_text(), re.MULTILINE)


def test_gcloud_steps_use_one_pinned_google_cloud_cli_image(by_id: dict[str, dict[str, Any]]) -> None:
    """Not the deprecated cloud-sdk builder; a fixed version, the one whose parser the tests below run."""
    names = {
        step["name"]
        for step in by_id.values()
        if step.get("entrypoint") in {"gcloud", "bash"} and step["name"] != "gcr.io/cloud-builders/docker"
    }  # (the optional plotter's build is a bash script in the docker builder: build-plotter)
    assert len(names) == 1, names
    (name,) = names
    match = GOOGLE_CLOUD_CLI.match(name)
    assert match, name  # the -slim variant has bash and curl, which deploy/verify.sh needs
    assert not any("cloud-sdk" in step["name"] for step in by_id.values())


def test_backend_build_args_are_arguments_of_the_dockerfile(by_id: dict[str, dict[str, Any]]) -> None:
    dockerfile = (ROOT / "backend.dockerfile").read_text()
    declared = set(re.findall(r"^ARG (\w+)", dockerfile, re.MULTILINE))
    for step_id in ("build-backend-toolchain", "build-backend"):
        passed = {a.split("=", 1)[0] for a in cloudbuild.flag_values(raw_args(by_id[step_id]), "--build-arg")}
        assert passed == {"MODEL_NAME", "MODEL_WEIGHTS", "BUILDKIT_INLINE_CACHE"}
        assert passed - {"BUILDKIT_INLINE_CACHE"} <= declared


def test_backend_is_private_and_ready_only_when_the_model_is(
    by_id: dict[str, dict[str, Any]], values: dict[str, str]
) -> None:
    args = ingress_args(cloudbuild.step_args(by_id["deploy-backend"], values))  # the service's and the backend's
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
    env = cloudbuild.key_values(cloudbuild.flag_value(args, "--set-env-vars"))
    assert env == {"INFERENCE_THREADS": cloudbuild.flag_value(args, "--cpu")}
    backend_sa = f"{values['_BACKEND_SA']}@{values['PROJECT_ID']}.iam.gserviceaccount.com"
    assert cloudbuild.flag_value(args, "--service-account") == backend_sa


def test_liveness_probe_restarts_a_wedged_backend_and_only_a_wedged_one(
    by_id: dict[str, dict[str, Any]], values: dict[str, str]
) -> None:
    """/health answers 503 once a forward pass or decode has run past STALL_TIMEOUT_S; the probe must act
    on that within about as long again, yet not on one slow answer from a busy instance."""
    args = ingress_args(cloudbuild.step_args(by_id["deploy-backend"], values))
    liveness = cloudbuild.key_values(cloudbuild.flag_value(args, "--liveness-probe"))
    assert (liveness["httpGet.path"], liveness["httpGet.port"]) == ("/health", cloudbuild.flag_value(args, "--port"))
    period, timeout, failures = (int(liveness[k]) for k in ("periodSeconds", "timeoutSeconds", "failureThreshold"))
    stall_timeout_s = Settings.model_fields["stall_timeout_s"].default
    assert period * failures <= stall_timeout_s, "a wedged instance would keep its requests for too long"
    assert failures >= 2, "one slow answer must not restart an instance"
    assert timeout >= 3, "an instance busy with a batch answers /health in well under a second, not always in 1 s"
    assert liveness.get("initialDelaySeconds", "0") == "0"  # the startup probe already waits for /ready


def test_frontend_is_public_and_configured_to_find_the_backend(
    by_id: dict[str, dict[str, Any]], values: dict[str, str]
) -> None:
    frontend_sa = f"{values['_FRONTEND_SA']}@{values['PROJECT_ID']}.iam.gserviceaccount.com"
    args = cloudbuild.step_args(by_id["deploy-frontend"], values)
    assert args[:3] == ["run", "deploy", values["_FRONTEND_SERVICE"]]
    assert "--allow-unauthenticated" in args
    assert cloudbuild.flag_value(args, "--service-account") == frontend_sa
    assert "--session-affinity" in args  # a Streamlit session lives in one instance
    # sized explicitly (test_frontend_sizing.py checks the figures), not left to Cloud Run's defaults
    for flag in ("--cpu", "--memory", "--concurrency"):
        assert cloudbuild.flag_values(args, flag), f"the frontend deploy has no {flag}"
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


def test_the_build_ends_by_checking_the_deployment(
    config: dict[str, Any], by_id: dict[str, dict[str, Any]], values: dict[str, str]
) -> None:
    steps = list(by_id)
    assert steps[-1] == "verify"
    verify = by_id["verify"]
    after = cloudbuild.dependencies(by_id)
    assert set(steps[:-1]) <= after["verify"]  # everything else has happened: both deploys, both grants
    assert verify["entrypoint"] == "bash"
    assert verify["args"] == ["deploy/verify.sh"]
    script = (ROOT / "deploy" / "verify.sh").read_text()
    required = set(re.findall(r': "\$\{(\w+):\?', script))
    env = dict(cloudbuild.substitute(item, values).split("=", 1) for item in verify["env"])
    assert required == {"PROJECT_ID", "REGION", "BACKEND_SERVICE", "FRONTEND_SERVICE", "FRONTEND_SA"}
    assert required <= env.keys()
    assert env["BACKEND_SERVICE"] == values["_BACKEND_SERVICE"]
    assert env["FRONTEND_SERVICE"] == values["_FRONTEND_SERVICE"]
    assert env["FRONTEND_SA"] == f"{values['_FRONTEND_SA']}@{values['PROJECT_ID']}.iam.gserviceaccount.com"
    # it may wait for IAM (typically 2 minutes, 7 or more at times) without running out the build
    wait_s = int(env["VERIFY_TIMEOUT_S"])
    assert 300 <= wait_s <= int(config["timeout"].removesuffix("s")) // 3


def test_every_substitution_is_declared_and_every_declared_one_is_used(config: dict[str, Any]) -> None:
    declared = set(config["substitutions"])
    assert all(name.startswith("_") for name in declared), "user substitutions must start with _"
    used = cloudbuild.used_substitutions({k: v for k, v in config.items() if k != "substitutions"})
    assert used - declared <= cloudbuild.BUILTINS, f"undeclared: {used - declared - cloudbuild.BUILTINS}"
    # Cloud Build rejects a build whose substitutions are not all used
    assert declared <= used, f"declared but unused: {declared - used}"
    assert {"_REGION", "_REPOSITORY", "_BACKEND_SERVICE", "_FRONTEND_SERVICE", "_FRONTEND_SA", "_MODEL_NAME"} <= used
    assert config["options"]["logging"] == "CLOUD_LOGGING_ONLY"  # required with a user-managed service account


def test_hand_built_images_are_built_for_cloud_runs_platform() -> None:
    """An Apple-silicon machine builds arm64 images by default; Cloud Run runs linux/amd64 only."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Deploy to Cloud Run") :]
    section = section[: section.index("\n## ", 1)]
    builds = [
        line.strip()
        for block in cloudbuild.SHELL_BLOCK.findall(section)
        for line in block.replace("\\\n", " ").splitlines()
        if line.strip().startswith("docker build")
    ]
    assert len(builds) == 2, builds
    for line in builds:
        assert "--platform=linux/amd64" in shlex.split(line.split("&&")[0]), line


# --- gcloud's own parser, offline


@pytest.fixture(scope="module")
def gcloud(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str], Path]:
    """The installed gcloud in an empty configuration that has no account and cannot reach any network."""
    return cloudbuild.offline_gcloud(need_executable("gcloud"), tmp_path_factory.mktemp("gcloud"))


def assert_parsed(results: Mapping[str, tuple[int, str]]) -> None:
    refused = cloudbuild.rejected(results)
    assert not refused, "\n\n".join(f"{cmd}\n-> {out.strip()}" for cmd, out in refused.items())


@pytest.mark.slow
def test_gcloud_accepts_every_command_of_the_build(
    gcloud: tuple[str, dict[str, str], Path], by_id: dict[str, dict[str, Any]], values: dict[str, str]
) -> None:
    commands = []
    for step in by_id.values():
        if step.get("entrypoint") == "gcloud":
            args = cloudbuild.step_args(step, values)
            # --project first: after a --container, gcloud takes only that container's flags
            commands.append(shlex.join(["gcloud", f"--project={values['PROJECT_ID']}", *args]))
    assert len(commands) == 4
    with ThreadPoolExecutor(4) as pool:
        results = dict(zip(commands, pool.map(lambda c: cloudbuild.run_gcloud(gcloud, c), commands), strict=True))
    assert_parsed(results)


@pytest.mark.slow
def test_the_pinned_cli_image_is_the_version_whose_parser_checked_the_build(
    gcloud: tuple[str, dict[str, str], Path], by_id: dict[str, dict[str, Any]]
) -> None:
    """The tests parse the build's commands with the installed gcloud: the build should run that version."""
    (name,) = {step["name"] for step in by_id.values() if step.get("entrypoint") == "gcloud"}
    match = GOOGLE_CLOUD_CLI.match(name)
    assert match
    code, out = cloudbuild.run_gcloud(gcloud, "gcloud version --format=json")
    assert code == 0, out
    installed = json.loads(out[out.index("{") :])["Google Cloud SDK"]
    if installed != match["version"]:
        pytest.skip(f"gcloud {installed} is installed here, the build pins {match['version']}: move one of them")


@pytest.mark.slow
def test_gcloud_accepts_the_build_config(gcloud: tuple[str, dict[str, str], Path]) -> None:
    """`gcloud builds submit` checks the config's schema (unknown or misspelt fields) before it needs an account."""
    command = "gcloud builds submit --project=example-project --config=cloudbuild.yaml --substitutions=COMMIT_SHA=abc ."
    assert_parsed({command: cloudbuild.run_gcloud(gcloud, command)})
    # ...and the same check does reject a config gcloud cannot read
    bad = gcloud[2] / "bad.yaml"
    bad.write_text("steps:\n- name: gcr.io/cloud-builders/docker\n  waitfor: ['-']\n")
    code, out = cloudbuild.run_gcloud(gcloud, "gcloud builds submit --project=example-project --config=bad.yaml .")
    assert code != 0
    assert cloudbuild.NO_ACCOUNT not in out
    assert "waitfor" in out


@pytest.mark.slow
def test_gcloud_accepts_every_command_in_the_deploy_docs(gcloud: tuple[str, dict[str, str], Path]) -> None:
    preamble, commands = cloudbuild.documented_commands()
    assert len(commands) >= 20, "the deploy docs lost their gcloud commands"
    preamble = cloudbuild.sample_preamble(preamble)
    # `gcloud config ...` changes the configuration the other commands read: run those first, in order
    setup = [c for c in commands if c.startswith("gcloud config ")]
    results = {c: cloudbuild.run_gcloud(gcloud, c, preamble) for c in setup}
    rest = [c for c in commands if c not in setup]
    with ThreadPoolExecutor(4) as pool:
        results.update(zip(rest, pool.map(lambda c: cloudbuild.run_gcloud(gcloud, c, preamble), rest), strict=True))
    assert_parsed(results)


@pytest.mark.slow
def test_gcloud_uploads_only_what_the_build_uses(gcloud: tuple[str, dict[str, str], Path], tmp_path: Path) -> None:
    """`gcloud builds submit` uploads the source minus .gcloudignore: no secrets, no caches, no virtualenv."""
    from tests.containers.test_dockerfiles import DECOYS, KEPT

    ignore = ROOT / ".gcloudignore"
    if not ignore.is_file():
        pytest.skip("no .gcloudignore: `gcloud builds submit` would upload whatever .gitignore lets through")
    scripts = tuple(str(p.relative_to(ROOT)) for p in sorted((ROOT / "deploy").glob("*.sh")))
    assert "deploy/verify.sh" in scripts  # the build's last step runs it from the uploaded source
    build_inputs = (
        *KEPT,
        "backend.dockerfile",
        "frontend.dockerfile",
        "plotter.dockerfile",
        "cloudbuild.yaml",
        ".dockerignore",
        *scripts,
    )
    for name in (*DECOYS, *build_inputs, "deploy/notes.txt", "deploy/.env"):
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
