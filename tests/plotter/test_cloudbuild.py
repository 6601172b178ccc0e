"""cloudbuild.yaml's optional plotter steps: bash scripts that do nothing unless ``_PLOTTER=on``, run here for
real with stand-ins for docker and gcloud that record what they are asked; the commands they would run checked
against Cloud Run's limits and, offline, by the installed gcloud's own parser."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from frontend.config import FrontendSettings
from frontend.plotter_client import plotter_configured
from tests.containers import cloudbuild
from tests.containers.cloudrun_limits import check_command
from tests.helpers import need_executable

PLOTTER_STEPS = ("build-plotter", "deploy-plotter", "plotter-frontend")


@dataclass(frozen=True)
class Ran:
    code: int
    output: str
    calls: list[list[str]]  # each docker or gcloud call: the program, then its arguments


def run_step(step_id: str, tmp_path: Path, **overrides: str) -> Ran:
    """The step's script, substituted as Cloud Build would with ``overrides``, run by bash with docker and
    gcloud replaced by recorders."""
    config = cloudbuild.load()
    values = cloudbuild.substitution_values(config, **overrides)
    script = cloudbuild.script(cloudbuild.steps(config)[step_id], values)
    assert script is not None, f"{step_id} is not a bash -c script"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    record = tmp_path / "calls"
    record.write_bytes(b"")
    for program in ("docker", "gcloud"):
        fake = bin_dir / program
        fake.write_text(
            f"#!/usr/bin/env bash\nprintf '%s\\0' {program} \"$@\" >> {record}\nprintf '\\n\\0' >> {record}\n"
        )
        fake.chmod(0o755)
    result = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    calls = [call.split("\0")[:-1] for call in record.read_text().split("\n\0")[:-1]]
    return Ran(result.returncode, result.stdout + result.stderr, calls)


def flag(call: list[str], name: str) -> str:
    return cloudbuild.flag_value(call, name)


@pytest.mark.parametrize("step_id", PLOTTER_STEPS)
def test_off_by_default_and_then_each_step_does_nothing(step_id: str, tmp_path: Path) -> None:
    assert cloudbuild.load()["substitutions"]["_PLOTTER"] == "off"
    ran = run_step(step_id, tmp_path)
    assert (ran.code, ran.calls) == (0, [])
    assert "_PLOTTER=off" in ran.output


@pytest.mark.parametrize("step_id", PLOTTER_STEPS)
def test_a_value_other_than_on_or_off_fails_the_build(step_id: str, tmp_path: Path) -> None:
    ran = run_step(step_id, tmp_path, _PLOTTER="yes")
    assert ran.code != 0
    assert ran.calls == []
    assert "_PLOTTER must be on or off, not 'yes'" in ran.output


def test_on_it_is_built_pushed_deployed_private_and_opened_to_the_frontend(tmp_path: Path) -> None:
    config = cloudbuild.load()
    values = cloudbuild.substitution_values(config)
    registry = f"{values['_REGION']}-docker.pkg.dev/{values['PROJECT_ID']}/{values['_REPOSITORY']}"
    image = f"{registry}/{values['_PLOTTER_SERVICE']}"
    frontend_sa = f"serviceAccount:{values['_FRONTEND_SA']}@{values['PROJECT_ID']}.iam.gserviceaccount.com"

    build = run_step("build-plotter", tmp_path / "build", _PLOTTER="on")
    assert build.code == 0, build.output
    (docker_build, docker_push) = build.calls
    assert docker_build[:2] == ["docker", "build"]
    assert flag(docker_build, "--file") == "plotter.dockerfile"
    assert flag(docker_build, "--platform") == "linux/amd64"
    assert cloudbuild.flag_values(docker_build, "--tag") == [f"{image}:{values['COMMIT_SHA']}", f"{image}:latest"]
    assert flag(docker_build, "--cache-from") == f"{image}:latest"
    assert docker_build[-1] == "."
    assert docker_push == ["docker", "push", "--all-tags", image]

    deploy = run_step("deploy-plotter", tmp_path / "deploy", _PLOTTER="on")
    assert deploy.code == 0, deploy.output
    (run_deploy, invoker, viewer) = deploy.calls
    assert run_deploy[:4] == ["gcloud", "run", "deploy", values["_PLOTTER_SERVICE"]]
    assert flag(run_deploy, "--image") == f"{image}:{values['COMMIT_SHA']}"  # as built
    assert "--no-allow-unauthenticated" in run_deploy
    assert "--allow-unauthenticated" not in run_deploy
    plotter_sa = f"{values['_PLOTTER_SA']}@{values['PROJECT_ID']}.iam.gserviceaccount.com"
    assert flag(run_deploy, "--service-account") == plotter_sa
    probe = cloudbuild.key_values(flag(run_deploy, "--startup-probe"))
    assert (probe["httpGet.path"], probe["httpGet.port"]) == ("/health", flag(run_deploy, "--port"))
    for grant, role in ((invoker, "roles/run.invoker"), (viewer, "roles/run.viewer")):
        assert grant[:5] == ["gcloud", "run", "services", "add-iam-policy-binding", values["_PLOTTER_SERVICE"]]
        assert (flag(grant, "--member"), flag(grant, "--role")) == (frontend_sa, role)
        assert flag(grant, "--region") == values["_REGION"]

    frontend = run_step("plotter-frontend", tmp_path / "frontend", _PLOTTER="on")
    assert frontend.code == 0, frontend.output
    (update,) = frontend.calls
    assert update[:5] == ["gcloud", "run", "services", "update", values["_FRONTEND_SERVICE"]]
    added = cloudbuild.key_values(flag(update, "--update-env-vars"))
    assert added == {"PLOTTER_SERVICE": values["_PLOTTER_SERVICE"]}
    # the frontend, configured as deploy-frontend and this step leave it, looks the plotter up by that name
    deployed = cloudbuild.step_args(cloudbuild.steps(config)["deploy-frontend"], values)
    env = cloudbuild.key_values(cloudbuild.flag_value(deployed, "--set-env-vars")) | added
    settings = FrontendSettings.from_env(env)
    assert plotter_configured(settings)
    assert (settings.plotter_service, settings.plotter_url) == (values["_PLOTTER_SERVICE"], None)
    # ...and without the plotter, as deploy-frontend alone leaves it, not at all
    assert not plotter_configured(FrontendSettings.from_env(cloudbuild.key_values(flag(deployed, "--set-env-vars"))))


def test_the_plotter_steps_run_in_the_right_order() -> None:
    by_id = cloudbuild.steps(cloudbuild.load())
    after = cloudbuild.dependencies(by_id)
    assert by_id["build-plotter"]["waitFor"] == ["-"]  # beside the other builds
    assert after["build-plotter"] == set()
    assert "build-plotter" in after["deploy-plotter"]
    assert {"deploy-plotter", "deploy-frontend"} <= after["plotter-frontend"]
    assert set(PLOTTER_STEPS) <= after["verify"]
    # nothing of the two services waits for the plotter
    for step_id in ("deploy-backend", "deploy-frontend", "push-backend", "push-frontend"):
        assert not set(PLOTTER_STEPS) & after[step_id], step_id


def plotter_commands(values: dict[str, str]) -> list[list[str]]:
    by_id = cloudbuild.steps(cloudbuild.load())
    return [args for step_id in PLOTTER_STEPS for args in cloudbuild.script_commands(by_id[step_id], values)]


def test_the_plotter_deploy_is_within_cloud_runs_limits() -> None:
    config = cloudbuild.load()
    commands = plotter_commands(cloudbuild.substitution_values(config, _PLOTTER="on"))
    assert [args[:3] for args in commands] == [
        ["run", "deploy", "classifier-plotter"],
        ["run", "services", "add-iam-policy-binding"],
        ["run", "services", "add-iam-policy-binding"],
        ["run", "services", "update"],
    ]
    problems = {" ".join(args[:3]): check_command(args) for args in commands}
    assert not any(problems.values()), problems
    bad = plotter_commands(cloudbuild.substitution_values(config, _PLOTTER="on", _PLOTTER_MAX_INSTANCES="0"))
    assert any("--max-instances=0" in problem for args in bad for problem in check_command(args))


@pytest.mark.slow
def test_gcloud_accepts_every_plotter_command(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The installed gcloud (offline, no account) parses each command the plotter steps would run."""
    import shlex

    gcloud = cloudbuild.offline_gcloud(need_executable("gcloud"), tmp_path_factory.mktemp("gcloud"))
    values = cloudbuild.substitution_values(cloudbuild.load(), _PLOTTER="on")
    commands = [shlex.join(["gcloud", *args, f"--project={values['PROJECT_ID']}"]) for args in plotter_commands(values)]
    assert len(commands) == 4
    with ThreadPoolExecutor(4) as pool:
        results: dict[str, Any] = dict(
            zip(commands, pool.map(lambda c: cloudbuild.run_gcloud(gcloud, c), commands), strict=True)
        )
    refused = cloudbuild.rejected(results)
    assert not refused, refused
