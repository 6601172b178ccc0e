"""A stand-in for Google's token infrastructure: RSA keys, their certificates served over HTTP, signed ID tokens.

The certificate server answers like https://www.googleapis.com/oauth2/v1/certs (a JSON object of key id
to PEM certificate, with Cache-Control: max-age), on 127.0.0.1, and counts how often it is asked.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

AUDIENCE = "https://backend.example.run.app"
ISSUER = "https://accounts.google.com"
CALLER = "frontend@project.iam.gserviceaccount.com"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_pem: bytes
    certificate_pem: str

    @classmethod
    def generate(cls, kid: str) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, kid)])
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cls(kid, private_pem, certificate.public_bytes(serialization.Encoding.PEM).decode())

    def sign(self, claims: dict[str, Any], kid: str | None = None) -> str:
        """A JWT signed RS256 with this key; ``kid`` overrides the key id written in the header."""
        signer = crypt.RSASigner.from_string(self.private_pem, key_id=kid or self.kid)  # type: ignore[no-untyped-call]
        token: bytes = jwt.encode(signer, claims)  # type: ignore[no-untyped-call]
        return token.decode()


def claims(
    audience: str = AUDIENCE,
    email: str = CALLER,
    issued: float | None = None,
    lifetime_s: float = 3600,
    **extra: Any,
) -> dict[str, Any]:
    """Claims shaped like a Google-signed ID token of a service account."""
    now = int(issued if issued is not None else time.time())
    return {
        "iss": ISSUER,
        "aud": audience,
        "sub": "112233445566778899",
        "email": email,
        "email_verified": True,
        "iat": now,
        "exp": now + int(lifetime_s),
        **extra,
    }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(payload: dict[str, Any], kid: str) -> str:
    """``alg: none``: a token anyone can write. Must never be accepted."""
    header = {"alg": "none", "typ": "JWT", "kid": kid}
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}."


def hmac_token(payload: dict[str, Any], secret: bytes, kid: str) -> str:
    """HS256 keyed with the public certificate: the classic algorithm-confusion forgery."""
    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@dataclass
class CertServer:
    """Serves ``{kid: certificate}`` like Google's v1 certs endpoint; mutable between requests."""

    keys: dict[str, str] = field(default_factory=dict)
    max_age_s: int = 3600
    status: int = 200
    body: bytes | None = None  # overrides the JSON (to serve garbage)
    hits: int = 0
    url: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def payload(self) -> tuple[int, bytes]:
        with self._lock:
            self.hits += 1
            return self.status, self.body if self.body is not None else json.dumps(self.keys).encode()

    @contextlib.contextmanager
    def running(self) -> Iterator[CertServer]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = owner.payload()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Cache-Control", f"public, max-age={owner.max_age_s}, must-revalidate")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}/oauth2/v1/certs"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join()
