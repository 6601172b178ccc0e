from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cloudrun.metadata import MetadataState, metadata_server
from tests.helpers.fakes import FakeServer, running
from tests.helpers.tokens import CertServer, SigningKey


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    """The local stand-in for Google's token-signing key."""
    return SigningKey.generate("cloudrun-box-key")


@pytest.fixture
def cert_server(signing_key: SigningKey) -> Iterator[CertServer]:
    with CertServer(keys={signing_key.kid: signing_key.certificate_pem}).running() as server:
        yield server


@pytest.fixture
def metadata_state(signing_key: SigningKey) -> MetadataState:
    return MetadataState(key=signing_key)


@pytest.fixture
def metadata(metadata_state: MetadataState) -> Iterator[FakeServer]:
    with running(metadata_server(metadata_state)) as server:
        yield server
