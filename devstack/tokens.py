"""A local stand-in for Google's ID-token signing: an RSA key, its certificate served over HTTP in
the format of https://www.googleapis.com/oauth2/v1/certs, and a minter of RS256 ID tokens.

The registry verifies tokens with google-auth exactly as in the cloud, only against this
certificate URL (TALLY_REGISTRY_CERTS_URL), so tests exercise the real verification code."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

ISSUER = "https://accounts.google.com"


class _Key:
    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tally-local-signer")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(self.private, hashes.SHA256())
        )
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        pem = self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.signer = crypt.RSASigner.from_string(pem, key_id=key_id)


class TokenIssuer:
    """Mints ID tokens; serves the certificate of `local` only (`other` is an unknown signer)."""

    def __init__(self) -> None:
        self.keys = {"local": _Key("tally-local-1"), "other": _Key("tally-other-1")}
        body = json.dumps({self.keys["local"].key_id: self.keys["local"].cert_pem}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.certs_url = f"http://127.0.0.1:{self._server.server_address[1]}/oauth2/v1/certs"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def mint(
        self,
        email: str,
        audience: str,
        expires_in: int = 3600,
        signer: str = "local",
        email_verified: bool = True,
    ) -> str:
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": audience,
            "sub": str(abs(hash(email))),
            "email": email,
            "email_verified": email_verified,
            "iat": now - 10 if expires_in > 0 else now - 7200,
            "exp": now + expires_in,
        }
        return jwt.encode(self.keys[signer].signer, payload).decode()
