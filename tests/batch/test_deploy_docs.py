"""docs/batch.md's gcloud commands: parsed by the installed gcloud offline (no account, no network), the job's
values within Cloud Run's limits for jobs, every role a predefined one (the helpers of tests/containers)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.containers import cloudbuild
from tests.containers.cloudrun_limits import (
    CPU_MEMORY,
    Command,
    check_command,
    cpu_value,
    duration_seconds,
    expand,
    flag_values,
    memory_bytes,
)
from tests.helpers import ROOT, need_executable

DOC = ROOT / "docs" / "batch.md"
DEPLOY_SECTION = "## Deploy it as a Cloud Run job"
# https://cloud.google.com/run/docs/create-jobs: up to 10,000 tasks; task timeout up to 168 hours (7 days).
# https://cloud.google.com/run/docs/configuring/max-retries: 0 to 10. `gcloud run jobs deploy --help`:
# parallelism at most the number of tasks. CPU and memory: the services' table (cloudrun_limits.CPU_MEMORY).
MAX_TASKS = 10_000
MAX_TASK_TIMEOUT_S = 168 * 3600
MAX_RETRIES = 10


def doc_commands(doc: Path = DOC) -> tuple[str, list[str]]:
    """The variable assignments and gcloud command lines of the doc's deploy section, as
    ``cloudbuild.documented_commands`` reads the deploy docs."""
    assignments: list[str] = []
    commands: list[str] = []
    text = doc.read_text()
    section = text[text.index(DEPLOY_SECTION) :]  # the earlier blocks run the job locally
    for block in cloudbuild.SHELL_BLOCK.findall(section):
        for raw in block.replace("\\\n", " ").splitlines():
            line = raw.strip()
            if cloudbuild.ASSIGNMENT.match(line):
                assignments.append(line)
            elif line.startswith("gcloud "):
                commands.append(line)
    return "\n".join(assignments), commands


def _last(args: Sequence[str], flag: str) -> str | None:
    values = flag_values(args, flag)
    return values[-1] if values else None


def check_job(args: Sequence[str]) -> list[str]:
    """Cloud Run's documented limits on the values of ``gcloud run jobs deploy`` (args after ``gcloud``)."""
    problems: list[str] = []
    tasks = int(_last(args, "--tasks") or 1)
    if not 1 <= tasks <= MAX_TASKS:
        problems.append(f"--tasks={tasks} is out of range (1..{MAX_TASKS})")
    if (parallelism := _last(args, "--parallelism")) is not None and not 0 <= int(parallelism) <= tasks:
        problems.append(f"--parallelism={parallelism} exceeds --tasks={tasks}")
    if (retries := _last(args, "--max-retries")) is not None and not 0 <= int(retries) <= MAX_RETRIES:
        problems.append(f"--max-retries={retries} is out of range (0..{MAX_RETRIES})")
    if (timeout := _last(args, "--task-timeout")) is not None:
        seconds = duration_seconds(timeout)
        if seconds is None or not 1 <= seconds <= MAX_TASK_TIMEOUT_S:
            problems.append(f"--task-timeout={timeout}: a task may run 1 s to 168 h")
    cpu = cpu_value(_last(args, "--cpu") or "1")
    memory = memory_bytes(_last(args, "--memory") or "512Mi")
    if cpu is None or cpu != int(cpu) or int(cpu) not in CPU_MEMORY:
        problems.append(f"--cpu={_last(args, '--cpu')}: a job takes 1, 2, 4, 6 or 8 CPUs here")
    elif memory is None:
        problems.append(f"--memory={_last(args, '--memory')}: write it in Mi or Gi")
    else:
        low, high = CPU_MEMORY[int(cpu)]
        if not low <= memory <= high:
            problems.append(f"--memory={_last(args, '--memory')} is outside what --cpu={cpu} allows")
    mounts = {dict(kv.split("=", 1) for kv in m.split(","))["volume"] for m in flag_values(args, "--add-volume-mount")}
    volumes = {dict(kv.split("=", 1) for kv in v.split(","))["name"] for v in flag_values(args, "--add-volume")}
    if mounts - volumes:
        problems.append(f"mounts of volumes that are not added: {sorted(mounts - volumes)}")
    return problems


@pytest.fixture(scope="module")
def documented() -> list[Command]:
    preamble, lines = doc_commands()
    return expand(lines, cloudbuild.sample_preamble(preamble))


def _job(documented: list[Command]) -> list[str]:
    (deploy,) = [c.args for c in documented if c.args[:3] == ["run", "jobs", "deploy"]]
    return deploy


def test_the_job_runs_the_batch_module_of_the_backend_image_on_mounted_buckets(documented: list[Command]) -> None:
    args = _job(documented)
    assert args[3] == "classify-images"
    assert re.fullmatch(
        r"[a-z0-9-]+-docker\.pkg\.dev/[^/]+/[^/]+/classifier-backend:latest", _last(args, "--image") or ""
    )
    assert _last(args, "--command") == "python"
    module_args = (_last(args, "--args") or "").split(",")
    assert module_args[:2] == ["-m", "backend.batch"]
    source, output = module_args[2:]
    volumes = {
        (entry := dict(kv.split("=", 1) for kv in v.split(",")))["name"]: entry
        for v in flag_values(args, "--add-volume")
    }
    mounts = {
        (entry := dict(kv.split("=", 1) for kv in m.split(",")))["mount-path"]: entry["volume"]
        for m in flag_values(args, "--add-volume-mount")
    }
    assert volumes[mounts["/mnt/images"]] == {
        "name": "images",
        "type": "cloud-storage",
        "bucket": "my-photos",
        "readonly": "true",
    }
    assert volumes[mounts["/mnt/results"]]["type"] == "cloud-storage"
    assert "readonly" not in volumes[mounts["/mnt/results"]]
    assert source.startswith("/mnt/images")
    assert output.startswith("/mnt/results/")
    env = cloudbuild.key_values(_last(args, "--set-env-vars") or "")
    assert env == {"INFERENCE_THREADS": _last(args, "--cpu")}
    assert _last(args, "--service-account") == "classify-images@my-project.iam.gserviceaccount.com"


def test_the_jobs_identity_reads_the_input_and_writes_the_output_only(documented: list[Command]) -> None:
    grants = {
        (c.args[3], _last(c.args, "--role"))
        for c in documented
        if c.args[:3] == ["storage", "buckets", "add-iam-policy-binding"]
    }
    assert grants == {
        ("gs://my-photos", "roles/storage.objectViewer"),
        ("gs://my-photo-labels", "roles/storage.objectUser"),
    }
    assert not [c for c in documented if c.args[:2] == ["projects", "add-iam-policy-binding"]]


def test_every_command_is_within_cloud_runs_limits(documented: list[Command]) -> None:
    assert len(documented) >= 7, "docs/batch.md lost its gcloud commands"
    problems = {c.line: check_command(c.args) for c in documented}
    problems[_job(documented).__repr__()] = check_job(_job(documented))
    assert not any(problems.values()), {line: found for line, found in problems.items() if found}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("--tasks=20000", "--tasks=20000 is out of range"),
        ("--parallelism=20", "--parallelism=20 exceeds --tasks=10"),
        ("--max-retries=11", "--max-retries=11 is out of range"),
        ("--task-timeout=200h", "a task may run 1 s to 168 h"),
        ("--cpu=3", "--cpu=3: a job takes"),
        ("--memory=2GB", "write it in Mi or Gi"),
        ("--memory=16Gi", "outside what --cpu=2 allows"),
        ("--add-volume-mount=volume=photos,mount-path=/mnt/x", "mounts of volumes that are not added"),
    ],
)
def test_each_bad_job_value_is_caught(documented: list[Command], change: str, expected: str) -> None:
    args = [*_job(documented), *shlex.split(change)]
    assert any(expected in problem for problem in check_job(args)), check_job(args)


@pytest.mark.slow
def test_gcloud_accepts_every_command_of_the_batch_docs(tmp_path: Path) -> None:
    gcloud = cloudbuild.offline_gcloud(need_executable("gcloud"), tmp_path)
    preamble, commands = doc_commands()
    preamble = cloudbuild.sample_preamble(preamble)
    # `gcloud config ...` changes the configuration the other commands read: those first, in order
    setup = [c for c in commands if c.startswith("gcloud config ")]
    assert setup, "the docs set no project: every other command would stop for want of one"
    results = {c: cloudbuild.run_gcloud(gcloud, c, preamble) for c in setup}
    rest = [c for c in commands if c not in setup]
    with ThreadPoolExecutor(4) as pool:
        results.update(zip(rest, pool.map(lambda c: cloudbuild.run_gcloud(gcloud, c, preamble), rest), strict=True))
    refused = cloudbuild.rejected(results)
    assert not refused, "\n\n".join(f"{cmd}\n-> {out.strip()}" for cmd, out in refused.items())
    # ...and the same check refuses a job flag gcloud does not know
    bad = "gcloud run jobs deploy classify-images --image=x --region=europe-west1 --concurency=4"
    code, out = cloudbuild.run_gcloud(gcloud, bad, preamble)
    assert code != 0
    assert cloudbuild.NO_ACCOUNT not in out
