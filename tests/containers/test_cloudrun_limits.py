"""The values of every ``gcloud run deploy`` (cloudbuild.yaml, and the README's and docs' commands) against
Cloud Run's documented limits, and every granted ``--role`` against a list of predefined roles that exist
(tests/containers/cloudrun_limits.py cites the pages). gcloud's offline parser (test_cloudbuild.py) only
proves the flags exist: the last test shows it accepting every bad value caught here."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.containers import cloudbuild
from tests.containers.cloudrun_limits import (
    PREDEFINED_ROLES,
    Command,
    check_command,
    check_deploy,
    check_probe,
    check_roles,
    expand,
    split,
)
from tests.helpers import need_executable

GOOD_BACKEND = (
    "gcloud run deploy classifier-backend --image=example --region=europe-west1 --no-allow-unauthenticated "
    "--execution-environment=gen2 --cpu=2 --memory=2Gi --concurrency=16 --cpu-boost --timeout=60 "
    "--min-instances=0 --max-instances=10 --port=8080 "
    "--startup-probe=httpGet.path=/ready,httpGet.port=8080,periodSeconds=2,timeoutSeconds=2,failureThreshold=60 "
    "--liveness-probe=httpGet.path=/health,httpGet.port=8080,periodSeconds=10,timeoutSeconds=5,failureThreshold=3"
)


def deploy_steps(config: dict[str, Any], values: dict[str, str]) -> dict[str, list[str]]:
    return {
        step_id: cloudbuild.step_args(step, values)
        for step_id, step in cloudbuild.steps(config).items()
        if step.get("entrypoint") == "gcloud"
    }


@pytest.fixture(scope="module")
def documented() -> list[Command]:
    """The docs' gcloud commands with the arguments bash would pass (their own variables expanded)."""
    preamble, lines = cloudbuild.documented_commands()
    return expand(lines, cloudbuild.sample_preamble(preamble))


def test_every_command_of_the_build_is_within_cloud_runs_limits() -> None:
    config = cloudbuild.load()
    steps = deploy_steps(config, cloudbuild.substitution_values(config))
    deploys = [args for args in steps.values() if args[:2] == ["run", "deploy"]]
    assert len(deploys) == 2
    problems = {step_id: check_command(args) for step_id, args in steps.items()}
    assert not any(problems.values()), problems


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"_BACKEND_CPU": "3"}, "--cpu=3"),
        ({"_BACKEND_MEMORY": "2GB"}, "--memory='2GB'"),
        ({"_BACKEND_CONCURRENCY": "5000"}, "--concurrency=5000"),
        ({"_FRONTEND_MEMORY": "8Gi"}, "--cpu=1 allows"),
        ({"_BACKEND_MIN_INSTANCES": "20"}, "--min-instances=20 exceeds --max-instances=10"),
        ({"_FRONTEND_CONCURRENCY": "0"}, "--concurrency=0"),
    ],
)
def test_a_bad_substitution_given_to_the_build_is_caught(overrides: dict[str, str], expected: str) -> None:
    """`--substitutions=_BACKEND_CPU=3` reaches the deploy unchecked by gcloud: the same checks catch it."""
    config = cloudbuild.load()
    steps = deploy_steps(config, cloudbuild.substitution_values(config, **overrides))
    problems = [problem for args in steps.values() for problem in check_command(args)]
    assert any(expected in problem for problem in problems), problems


def test_every_documented_gcloud_command_is_within_cloud_runs_limits(documented: list[Command]) -> None:
    deploys = [command for command in documented if command.args[:2] == ["run", "deploy"]]
    assert len(deploys) >= 2, "the docs lost their gcloud run deploy commands"
    for command in deploys:
        assert command.args[2], command.line  # the service name expanded
    problems = {command.line: check_command(command.args) for command in documented}
    assert not any(problems.values()), {line: found for line, found in problems.items() if found}


def test_every_role_granted_anywhere_is_a_predefined_role_that_exists(documented: list[Command]) -> None:
    config = cloudbuild.load()
    granted = [args for args in deploy_steps(config, cloudbuild.substitution_values(config)).values()]
    granted += [command.args for command in documented]
    roles = {role for args in granted for role in cloudbuild.flag_values(args, "--role")}
    assert {"roles/run.invoker", "roles/run.viewer", "roles/run.admin", "roles/iam.serviceAccountUser"} <= roles
    assert roles <= PREDEFINED_ROLES.keys(), roles - PREDEFINED_ROLES.keys()
    for role, page in PREDEFINED_ROLES.items():
        service = role.removeprefix("roles/").split(".", 1)[0]
        assert page.startswith(f"https://cloud.google.com/iam/docs/roles-permissions/{service}#"), (role, page)


def test_the_good_backend_command_passes() -> None:
    assert check_command(split(GOOD_BACKEND)) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # CPU: 1, 2, 4, 6 or 8, or 0.08 to 1 (with concurrency 1, gen1, request-based billing)
        ("--cpu=3", "--cpu=3: above 1 CPU only 1, 2, 4, 6, 8"),
        ("--cpu=16", "--cpu=16: above 1 CPU only"),
        ("--cpu=0.05", "below 1 CPU, 0.08 to 1"),
        ("--cpu=two", "is not a number of vCPUs"),
        ("--cpu=0.5 --memory=1Gi", "needs --concurrency=1"),
        ("--cpu=0.5 --memory=1Gi --concurrency=1", "needs --execution-environment=gen1"),
        ("--cpu=4 --memory=1Gi", "--cpu=4 allows 2048 to 16384 MiB"),
        ("--cpu=1 --memory=8Gi", "--cpu=1 allows any to 4096 MiB"),
        # memory: Mi or Gi, 512 MiB (gen2) to 32 GiB
        ("--memory=2GB", "write it in Mi or Gi"),
        ("--memory=2048M", "write it in Mi or Gi"),
        ("--memory=256Mi", "from 512 MiB (gen2)"),
        ("--memory=64Gi", "to 32 GiB"),
        # concurrency 1..1000, timeout 1..3600 s
        ("--concurrency=5000", "--concurrency=5000 is out of range (1..1000)"),
        ("--concurrency=0", "--concurrency=0 is out of range"),
        ("--concurrency=many", "--concurrency='many' is not a whole number"),
        ("--timeout=7200", "--timeout=7200: a service's requests may take 1 to 3600 s"),
        ("--timeout=2h", "--timeout=2h: a service's requests"),
        ("--timeout=0", "--timeout=0"),
        ("--timeout=soon", "neither seconds nor a duration"),
        # instances
        ("--min-instances=11", "--min-instances=11 exceeds --max-instances=10"),
        ("--max-instances=0", "--max-instances=0 is out of range"),
        ("--max-instances=5000", "--max-instances=5000 is out of range"),
        ("--min-instances=-1", "--min-instances='-1' is not a whole number"),
        ("--port=70000", "--port=70000 is out of range"),
        ("--execution-environment=gen3", "neither gen1 nor gen2"),
    ],
)
def test_each_bad_value_is_caught(change: str, expected: str) -> None:
    problems = check_deploy(split(f"{GOOD_BACKEND} {change}"))
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--startup-probe", "httpGet.path=/ready,periodSeconds=abc", "periodSeconds='abc' is not a whole number"),
        ("--startup-probe", "httpGet.path=/ready,periodSeconds=2.5", "is not a whole number"),
        ("--startup-probe", "httpGet.path=/ready,timeoutSeconds=5,periodSeconds=2", "timeoutSeconds=5 exceeds"),
        ("--startup-probe", "httpGet.path=/ready,periodSeconds=10,failureThreshold=30", "300 s exceeds the 240 s"),
        ("--startup-probe", "httpGet.path=/ready,initialDelaySeconds=300", "initialDelaySeconds=300 is out of range"),
        ("--startup-probe", "httpGet.path=/ready,periodSeconds=300", "periodSeconds=300 is out of range (1..240)"),
        ("--startup-probe", "httpGet.path=/ready,failureThreshold=0", "failureThreshold=0 is out of range"),
        ("--startup-probe", "httpGet.path=ready", "must start with /"),
        ("--startup-probe", "httpGet.path=/ready,httpGet.port=8081", "not the container port --port=8080"),
        ("--startup-probe", "httpGet.path=/ready,tcpSocket.port=8080", "more than one of httpGet, grpc, tcpSocket"),
        ("--startup-probe", "httpGet.path=/ready,periodseconds=2", "unknown key 'periodseconds'"),
        ("--liveness-probe", "httpGet.path=/health,tcpSocket.port=8080", "unknown key 'tcpSocket.port'"),
        ("--liveness-probe", "httpGet.path=/health,periodSeconds=4000", "periodSeconds=4000 is out of range (1..3600)"),
        ("--liveness-probe", "httpGet.path=/health,timeoutSeconds=20", "timeoutSeconds=20 exceeds periodSeconds=10"),
        ("--liveness-probe", "httpGet.path=/health,failureThreshold=x", "failureThreshold='x' is not a whole number"),
        ("--liveness-probe", "httpGet.path", "is not KEY=VALUE"),
    ],
)
def test_each_bad_probe_setting_is_caught(flag: str, value: str, expected: str) -> None:
    problems = check_probe(flag, value, "8080")
    assert any(expected in problem for problem in problems), problems
    # ...and in a whole command too
    assert any(expected in p for p in check_deploy(split(f"{GOOD_BACKEND} {flag}={value}")))


def test_long_liveness_probes_are_allowed_where_startup_probes_are_not() -> None:
    assert check_probe("--liveness-probe", "httpGet.path=/health,periodSeconds=600,timeoutSeconds=30", "8080") == []
    assert check_probe("--startup-probe", "httpGet.path=/ready,periodSeconds=240,failureThreshold=1", "8080") == []


@pytest.mark.parametrize(
    "role",
    ["roles/run.invokers", "roles/run.Invoker", "roles/runinvoker", "run.invoker", "roles/cloudbuild.builder"],
)
def test_a_misspelt_or_unchecked_role_is_caught(role: str) -> None:
    args = split(f"gcloud run services add-iam-policy-binding svc --member=allUsers --role={role}")
    assert check_roles(args), role
    assert check_command(["projects", "add-iam-policy-binding", "p", "--role", role]), role  # either spelling


def test_docs_commands_are_expanded_as_bash_would() -> None:
    commands = expand(
        ['gcloud run deploy "$SERVICE" --memory="${MEMORY}" --set-env-vars="A=1,B=2"'],
        "SERVICE=svc\nMEMORY=2GB",
    )
    assert commands[0].args == ["run", "deploy", "svc", "--memory=2GB", "--set-env-vars=A=1,B=2"]
    assert check_command(commands[0].args)  # 2GB is caught after expansion too


@pytest.mark.slow
def test_gcloud_itself_accepts_the_bad_values_these_checks_catch(tmp_path: Path) -> None:
    """Why these checks exist: gcloud's parser passes every one of these; the server would refuse them."""
    gcloud = cloudbuild.offline_gcloud(need_executable("gcloud"), tmp_path)
    bad = (
        "gcloud run deploy svc --image=example --region=europe-west1 --project=example-project "
        "--cpu=3 --memory=2GB --timeout=7200 --concurrency=5000 "
        "--startup-probe=httpGet.path=/ready,periodSeconds=abc"
    )
    grant = (
        "gcloud run services add-iam-policy-binding svc --region=europe-west1 --project=example-project "
        "--member=allUsers --role=roles/run.invokers"
    )
    for command in (bad, grant):
        code, out = cloudbuild.run_gcloud(gcloud, command)
        assert code != 0
        assert cloudbuild.NO_ACCOUNT in out, out  # parsed, validated, and stopped only for want of an account
        assert check_command(split(command)), command
    problems = "\n".join(check_command(shlex.split(bad)[1:]))
    for flag in ("--cpu=3", "--memory='2GB'", "--timeout=7200", "--concurrency=5000", "periodSeconds='abc'"):
        assert flag in problems
