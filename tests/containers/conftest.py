"""Images built once per session (podman's layer cache makes later sessions fast), containers per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.containers.podman import (
    BACKEND_TAG,
    FRONTEND_TAG,
    HARDENED,
    Container,
    Image,
    build_image,
    container,
    podman_executable,
    record,
)


@pytest.fixture(scope="session")
def podman() -> str:
    return podman_executable()


def _build(podman: str, dockerfile: str, tag: str, tmp_path_factory: pytest.TempPathFactory, name: str) -> Image:
    log = tmp_path_factory.mktemp("builds") / f"{name}.log"
    image = build_image(podman, dockerfile, tag, log)
    record(
        name,
        {
            "image": tag,
            "dockerfile": dockerfile,
            "size_mb": round(image.size_bytes / 1e6),
            "build_seconds": round(image.build_seconds, 1),
        },
    )
    return image


@pytest.fixture(scope="session")
def backend_image(podman: str, tmp_path_factory: pytest.TempPathFactory) -> Image:
    return _build(podman, "backend.dockerfile", BACKEND_TAG, tmp_path_factory, "backend")


@pytest.fixture(scope="session")
def frontend_image(podman: str, tmp_path_factory: pytest.TempPathFactory) -> Image:
    return _build(podman, "frontend.dockerfile", FRONTEND_TAG, tmp_path_factory, "frontend")


@pytest.fixture(scope="module")
def backend(podman: str, backend_image: Image) -> Iterator[Container]:
    """The backend image running (host network, a free PORT, hardened), ready to classify."""
    with container(podman, backend_image.tag, env={"ACCESS_LOG": "true"}, options=HARDENED) as running:
        running.wait_until_answers("/ready")
        yield running
