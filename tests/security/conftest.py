from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.tokens import CertServer, SigningKey


@pytest.fixture(scope="session")
def google_key() -> SigningKey:
    return SigningKey.generate("key-2024-a")


@pytest.fixture(scope="session")
def other_key() -> SigningKey:
    """Anyone's key: not published at the certificate URL."""
    return SigningKey.generate("key-attacker")


@pytest.fixture
def cert_server(google_key: SigningKey) -> Iterator[CertServer]:
    with CertServer(keys={google_key.kid: google_key.certificate_pem}).running() as server:
        yield server
