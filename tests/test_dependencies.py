"""Dependencies are declared once (pyproject.toml), locked once (uv.lock), and everything else follows the lock.

The requirements_*.txt files the images install are generated from the lock by `make requirements`; these
tests regenerate them and fail when anything drifts: the lock from pyproject.toml, the files from the lock,
the torch versions backend.dockerfile installs and the uv version the Makefile bootstraps from the lock's,
the venv from the lock.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import ROOT, need, need_executable

UV = Path(sys.executable).parent / "uv"  # the dev group's uv, which `make venv` bootstraps
REQUIREMENTS = ("backend", "model", "frontend", "dev")
GPU_ONLY = re.compile(r"^(nvidia-.+|cuda-.+|triton)$")


def uv() -> str:
    need(UV.is_file(), f"{UV} is missing: run `make venv`")
    return str(UV)


def locked_versions() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {package["name"]: package["version"] for package in lock["package"] if "version" in package}


def requirement_lines(text: str) -> list[Requirement]:
    """The requirements of an exported file (continuation lines joined, hashes and comments dropped)."""
    joined = re.sub(r"\\\n", " ", text)
    lines = (line.split(" --hash=")[0].strip() for line in joined.splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("#")]


def test_the_lock_is_up_to_date_with_pyproject() -> None:
    result = subprocess.run(
        [uv(), "lock", "--check", "--offline"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"uv.lock is stale: run `make lock`\n{result.stderr}"


def test_requirements_files_are_what_make_requirements_generates(tmp_path: Path) -> None:
    make = need_executable("make")
    result = subprocess.run(
        [make, "--silent", "requirements", f"UV={uv()}", f"REQUIREMENTS_DIR={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for group in REQUIREMENTS:
        name = f"requirements_{group}.txt"
        generated = (tmp_path / name).read_text()
        assert generated.startswith("# Generated from uv.lock by `make requirements`"), generated[:200]
        assert (ROOT / name).read_text() == generated, f"{name} drifted from uv.lock: run `make requirements`"


@pytest.mark.parametrize("group", ["backend", "model", "frontend"])
def test_what_the_images_install_is_pinned_and_hashed(group: str) -> None:
    text = (ROOT / f"requirements_{group}.txt").read_text()
    requirements = requirement_lines(text)
    assert requirements
    locked = locked_versions()
    for requirement in requirements:
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", requirement
        assert locked[canonicalize_name(requirement.name)] == specifier.version, requirement
    # pip --require-hashes needs a hash on every requirement
    assert text.count("--hash=sha256:") >= len(requirements)
    assert len(re.findall(r"^\S+==", text, flags=re.MULTILINE)) == len(requirements)


def test_the_model_stage_takes_only_torch_from_the_pytorch_index() -> None:
    names = {canonicalize_name(r.name) for r in requirement_lines((ROOT / "requirements_model.txt").read_text())}
    assert not names & {"torch", "torchvision"}, "backend.dockerfile installs those from TORCH_INDEX_URL"
    assert not {name for name in names if GPU_ONLY.match(name)}, "only PyPI's CUDA build of torch needs those"
    # torch's own dependencies stay, locked: the CPU build needs them too
    assert {"filelock", "sympy", "networkx", "jinja2", "fsspec", "typing-extensions"} <= names
    for image in ("backend", "frontend"):
        text = (ROOT / f"requirements_{image}.txt").read_text()
        assert not {canonicalize_name(r.name) for r in requirement_lines(text)} & {"torch", "torchvision"}


def test_backend_dockerfile_installs_the_locked_torch_versions() -> None:
    text = (ROOT / "backend.dockerfile").read_text()
    args = dict(re.findall(r"^ARG (TORCH_VERSION|TORCHVISION_VERSION)=(\S+)$", text, flags=re.MULTILINE))
    locked = locked_versions()
    assert args == {"TORCH_VERSION": locked["torch"], "TORCHVISION_VERSION": locked["torchvision"]}


def test_the_makefile_bootstraps_the_locked_uv() -> None:
    (pinned,) = re.findall(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
    assert pinned == locked_versions()["uv"]


def test_the_venv_holds_the_locked_versions() -> None:
    """Every package of the dev group (all groups) installed at the lock's version: `make venv` syncs it."""
    requirements = requirement_lines((ROOT / "requirements_dev.txt").read_text())
    wrong: dict[str, tuple[str, str | None]] = {}
    for requirement in requirements:
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        (specifier,) = requirement.specifier
        try:
            installed: str | None = version(requirement.name)
        except PackageNotFoundError:
            installed = None
        if installed != specifier.version:
            wrong[requirement.name] = (specifier.version, installed)
    assert not wrong, f"(locked, installed) differ: run `make venv`\n{wrong}"
