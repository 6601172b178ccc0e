"""Building and running the project's images with podman: the Dockerfiles users build, for real.

Only build arguments differ from a user's ``docker build``: every stage starts from the local
``python:3.11-slim`` stand-in instead of the digest the Dockerfiles pin, and this machine cannot reach the
PyTorch CPU index, so the backend's toolchain stage takes torch from the local wheel folders instead
(mounted read-only into the build). Every container started here is removed again, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ROOT, free_port, need, need_executable

BASE_IMAGE = "python:3.11-slim"
BACKEND_TAG = "localhost/image-classifier-backend:test"
FRONTEND_TAG = "localhost/image-classifier-frontend:test"
BUILD_TIMEOUT_S = 40 * 60  # a first build on an empty cache, with a slow registry
# Where this machine keeps torch 2.14.1 and its CUDA dependencies (see `pip config list`).
LOCAL_TORCH_INDEX = Path("/opt/pypi-more")
REPORT = ROOT / "artifacts" / "containers" / "images.json"
# Least privilege, as a hardened runtime would run them: nothing written outside tmpfs, no capabilities.
HARDENED = ("--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges")


def podman_executable() -> str:
    """podman, with the local base image the Dockerfiles start FROM (made by shared/containers/setup-podman)."""
    podman = need_executable("podman")
    exists = subprocess.run([podman, "image", "exists", BASE_IMAGE], capture_output=True, check=False)
    need(exists.returncode == 0, f"no {BASE_IMAGE} image: run `bash shared/containers/setup-podman` first")
    return podman


def local_build_args(dockerfile: str) -> list[str]:
    """Build options that point the backend's torch install at this machine's wheels, if it has them."""
    if dockerfile != "backend.dockerfile" or not (LOCAL_TORCH_INDEX / "simple" / "torch").is_dir():
        return []
    return [
        f"--volume={LOCAL_TORCH_INDEX}:{LOCAL_TORCH_INDEX}:ro",
        f"--build-arg=TORCH_INDEX_URL=file://{LOCAL_TORCH_INDEX}/simple",
        # that torch is PyPI's CUDA build: its CUDA dependencies lie there too or come from PyPI (a CPU-only
        # index serves torch's dependencies itself); everything else is hash-checked from the lock as for anyone
        f"--build-arg=PIP_EXTRA_ARGS=--find-links {LOCAL_TORCH_INDEX}/files --extra-index-url https://pypi.org/simple",
    ]


@dataclass(frozen=True)
class Image:
    tag: str
    dockerfile: str
    build_seconds: float
    size_bytes: int
    config: dict[str, Any]  # `podman image inspect` .Config: User, Env, Cmd, ExposedPorts, ...

    @property
    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config.get("Env") or [])

    @property
    def user(self) -> str:
        """The USER the image runs as, checked to be set and not root."""
        user = str(self.config.get("User", ""))
        assert user, "the image has no USER: it would run as root"
        assert user.split(":", maxsplit=1)[0] not in {"0", "root"}, user
        return user


def build_image(podman: str, dockerfile: str, tag: str, log_path: Path, base_arg: str = "PYTHON_IMAGE") -> Image:
    """``podman build -f dockerfile .`` from the repository root (layers cached between runs), the build
    argument ``base_arg`` (the Dockerfile's base image) set to the local stand-in."""
    command = [
        podman,
        "build",
        "--pull=never",
        "--network=host",
        "--layers",
        f"--file={dockerfile}",
        f"--tag={tag}",
        # the Dockerfiles pin python:3.11-slim by digest; this machine has a local stand-in of that tag
        # (Debian bookworm, which plotter.dockerfile's DEBIAN_IMAGE starts from as well)
        f"--build-arg={base_arg}={BASE_IMAGE}",
        *local_build_args(dockerfile),
        ".",
    ]
    started = time.monotonic()
    with log_path.open("wb") as log:
        result = subprocess.run(
            command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S, check=False
        )
    seconds = time.monotonic() - started
    if result.returncode != 0:
        tail = log_path.read_text(errors="replace")[-6000:]
        pytest.fail(f"{' '.join(command)} failed ({result.returncode}); end of {log_path}:\n{tail}")
    info = json.loads(subprocess.run([podman, "image", "inspect", tag], capture_output=True, check=True).stdout)[0]
    return Image(tag, dockerfile, seconds, int(info["Size"]), info["Config"])


def record(section: str, values: Mapping[str, Any]) -> None:
    """Merge measurements into artifacts/containers/images.json (image sizes and timings, for the docs)."""
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = json.loads(REPORT.read_text()) if REPORT.is_file() else {}
    report.setdefault(section, {}).update(values)
    REPORT.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


@dataclass
class Container:
    podman: str
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.podman, *args], capture_output=True, text=True, timeout=timeout, check=False)

    def exec(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``command`` inside the container, as the image's user."""
        return self.run("exec", self.name, *command, timeout=timeout)

    def python(self, code: str, timeout: float = 60) -> str:
        """The stdout of ``python -c code`` inside the container; fails the test if it fails."""
        result = self.exec("python", "-c", code, timeout=timeout)
        assert result.returncode == 0, f"python -c failed in {self.name}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def state(self) -> dict[str, Any]:
        result = self.run("inspect", "--format={{json .State}}", self.name)
        assert result.returncode == 0, result.stderr
        state: dict[str, Any] = json.loads(result.stdout)
        return state

    def logs(self) -> tuple[str, str]:
        """The container's stdout and stderr so far."""
        result = self.run("logs", self.name)
        return result.stdout, result.stderr

    def wait_until_answers(self, path: str, timeout: float = 120) -> httpx.Response:
        """Poll ``path`` until it answers 200; fail early if the container exits or the model fails to load."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.state().get("Running"):
                out, err = self.logs()
                pytest.fail(f"{self.name} exited ({self.state().get('ExitCode')}):\n{out[-3000:]}\n{err[-3000:]}")
            try:
                response = httpx.get(self.url + path, timeout=2.0)
            except httpx.HTTPError as exc:
                last = repr(exc)
            else:
                if response.status_code == 200:
                    return response
                last = f"{response.status_code} {response.text[:300]}"
                if response.status_code == 503 and '"failed"' in response.text:
                    pytest.fail(f"{self.name}: {path} says the service failed: {last}")
            time.sleep(0.2)
        out, err = self.logs()
        pytest.fail(f"{self.url}{path} did not answer 200 within {timeout}s: {last}\n{out[-3000:]}\n{err[-3000:]}")

    def assert_unprivileged(self) -> None:
        """PID 1 (the server) runs with no root uid at all: real, effective, saved and filesystem."""
        status = self.exec("cat", "/proc/1/status").stdout
        uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
        assert len(uids) == 4, status
        assert "0" not in uids, status

    def stop(self, timeout: int = 30) -> tuple[float, int, str]:
        """``podman stop`` (SIGTERM, then SIGKILL after ``timeout`` s): seconds taken, exit code, podman's stderr."""
        started = time.monotonic()
        result = self.run("stop", f"--time={timeout}", self.name, timeout=timeout + 30)
        seconds = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        return seconds, int(self.state()["ExitCode"]), result.stderr


@contextlib.contextmanager
def container(
    podman: str,
    image: str,
    *,
    env: Mapping[str, str] | None = None,
    options: Sequence[str] = (),
    network: str = "host",
) -> Iterator[Container]:
    """``podman run -d`` the image with PORT set to a free port; the container is removed afterwards."""
    port = free_port()
    name = f"classifier-test-{uuid.uuid4().hex[:10]}"
    env_flags = [f"--env={key}={value}" for key, value in {"PORT": str(port), **(env or {})}.items()]
    command = [podman, "run", "--detach", f"--name={name}", f"--network={network}", *env_flags, *options, image]
    started = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    try:
        assert started.returncode == 0, f"{' '.join(command)} failed:\n{started.stderr}"
        yield Container(podman, name, port)
    finally:
        subprocess.run([podman, "rm", "--force", "--time=2", name], capture_output=True, timeout=120, check=False)


@contextlib.contextmanager
def mounted(podman: str, image: str) -> Iterator[Path]:
    """The image's root filesystem, read from the host (``podman image mount``; needs root)."""
    result = subprocess.run([podman, "image", "mount", image], capture_output=True, text=True, timeout=120, check=False)
    need(result.returncode == 0, f"podman image mount failed (rootless podman cannot): {result.stderr.strip()}")
    try:
        yield Path(result.stdout.strip())
    finally:
        subprocess.run([podman, "image", "unmount", image], capture_output=True, timeout=120, check=False)


# Names that hold secrets; a public certificate (PEM without a private key) is allowed under such a name.
SECRET_NAME = re.compile(
    r"(^\.env$|\.env$|^\.env\.|\.pem$|\.key$|\.crt$|\.p12$|\.pfx$|\.jks$|^id_(rsa|dsa|ecdsa|ed25519)"
    r"|credential.*\.json$|service.?account.*\.json$|^\.netrc$|^\.pypirc$|^\.npmrc$|^secrets\.toml$)",
    re.IGNORECASE,
)
PRIVATE_KEY = re.compile(rb"-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY-----")
PSEUDO_FILESYSTEMS = frozenset({"proc", "sys", "dev", "run"})


def secret_like_files(root: Path) -> list[str]:
    """Files in an image's filesystem that are, or are named like, secrets (keys, .env files, credentials)."""
    found: list[str] = []
    for directory, dirs, files in os.walk(root):
        if Path(directory) == root:
            dirs[:] = [d for d in dirs if d not in PSEUDO_FILESYSTEMS]
        for name in files:
            path = Path(directory, name)
            if not SECRET_NAME.search(name) or path.is_symlink():
                continue
            data = path.read_bytes()
            public_certificate = b"-----BEGIN CERTIFICATE-----" in data and not PRIVATE_KEY.search(data)
            if not public_certificate:
                found.append("/" + str(path.relative_to(root)))
    return found


def files_with_private_keys(root: Path, *folders: str) -> list[str]:
    """Files under ``folders`` (of an image's filesystem) holding a PEM private key, whatever their names."""
    found: list[str] = []
    for folder in folders:
        for path in (root / folder.lstrip("/")).rglob("*"):
            if path.is_file() and not path.is_symlink() and PRIVATE_KEY.search(path.read_bytes()):
                found.append("/" + str(path.relative_to(root)))
    return found
