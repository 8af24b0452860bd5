"""Write authorisation with real RS256 ID tokens verified by google-auth against a local key
(the certificate set is served by a stub transport instead of Google's endpoint)."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt
from tally_registry.auth import CachingRequest, IdTokenAuthorizer
from tally_registry.errors import ApiError, Unavailable, api_error

AUDIENCE = "https://registry.example.test"
CERTS_URL = "https://certs.example.test/oauth2/v1/certs"
WRITER = "writer@tally.test"


class Key:
    def __init__(self, kid: str) -> None:
        self.kid = kid
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, kid)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(private, hashes.SHA256())
        )
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.signer = crypt.RSASigner.from_string(pem, key_id=kid)

    def mint(self, **over: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": "https://accounts.google.com",
            "aud": AUDIENCE,
            "sub": "1",
            "email": WRITER,
            "email_verified": True,
            "iat": now - 10,
            "exp": now + 3600,
        }
        claims.update(over)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(self.signer, claims).decode()


class Resp:
    def __init__(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        self.status, self.data, self.headers = status, data, headers


class StubTransport:
    """Serves the certificate set of `keys`; counts fetches."""

    def __init__(self, *keys: Key, status: int = 200, max_age: int | None = None) -> None:
        self.body = json.dumps({k.kid: k.cert_pem for k in keys}).encode()
        self.status = status
        self.headers = {"cache-control": f"public, max-age={max_age}"} if max_age else {}
        self.calls = 0

    def __call__(self, url: str, method: str = "GET", **_: Any) -> Resp:
        assert url == CERTS_URL
        self.calls += 1
        return Resp(self.status, self.body, self.headers)


@pytest.fixture(scope="module")
def key() -> Key:
    return Key("local-1")


@pytest.fixture(scope="module")
def other() -> Key:
    return Key("other-1")


def authorizer(key: Key, writers: tuple[str, ...] = (WRITER,)) -> IdTokenAuthorizer:
    return IdTokenAuthorizer(AUDIENCE, CERTS_URL, writers, request=StubTransport(key))


def refused(auth: IdTokenAuthorizer, header: str | None) -> ApiError:
    with pytest.raises(ApiError) as info:
        auth.authorize(header)
    return info.value


def test_good_token_from_an_allowlisted_writer(key: Key) -> None:
    assert authorizer(key).authorize(f"Bearer {key.mint()}") == WRITER
    assert authorizer(key).authorize(f"bearer  {key.mint(email='Writer@Tally.test')}")
    # The audience may be spelled with a trailing slash.
    assert authorizer(key).authorize(f"Bearer {key.mint(aud=AUDIENCE + '/')}") == WRITER
    assert authorizer(key).authorize(f"Bearer {key.mint(iss='accounts.google.com')}") == WRITER


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing-token"),
        ("", "missing-token"),
        ("Basic dXNlcjpwYXNz", "malformed-token"),
        ("Bearer", "malformed-token"),
        ("Bearer a b", "malformed-token"),
        ("Bearer " + "x" * 20000, "malformed-token"),
        ("Bearer not-a-jwt", "invalid-token"),
        ("Bearer aaaaaaaa.bbbbbbbb.cccccccc", "invalid-token"),
    ],
)
def test_missing_and_malformed_tokens_are_401(key: Key, header: str | None, code: str) -> None:
    err = refused(authorizer(key), header)
    assert (err.status, err.code) == (401, code)
    assert err.headers["WWW-Authenticate"].startswith("Bearer")
    assert "aaaaaaaa" not in err.message and "not-a-jwt" not in err.message


def test_expired_wrong_audience_wrong_signer_and_issuer_are_401(key: Key, other: Key) -> None:
    now = int(time.time())
    cases = {
        "expired": key.mint(iat=now - 7200, exp=now - 600),
        "audience": key.mint(aud="https://elsewhere.test"),
        "signer": other.mint(),
        "issuer": key.mint(iss="https://evil.test"),
    }
    for name, token in cases.items():
        err = refused(authorizer(key), f"Bearer {token}")
        assert (err.status, err.code) == (401, "invalid-token"), name
        for piece in token.split("."):
            assert piece not in err.message  # tokens are never echoed


def test_tampered_token_is_401(key: Key) -> None:
    head, _payload, sig = key.mint().split(".")
    forged = jwt.encode(key.signer, {"email": "evil@x.test"}).decode().split(".")[1]
    err = refused(authorizer(key), f"Bearer {head}.{forged}.{sig}")
    assert err.status == 401


def test_verified_email_on_the_list_only(key: Key) -> None:
    err = refused(authorizer(key), f"Bearer {key.mint(email='other@tally.test')}")
    assert (err.status, err.code) == (403, "forbidden")
    assert "TALLY_REGISTRY_WRITERS" in err.message
    err = refused(authorizer(key), f"Bearer {key.mint(email_verified=False)}")
    assert err.status == 403 and "not verified" in err.message
    err = refused(authorizer(key), f"Bearer {key.mint(email_verified='true')}")
    assert err.status == 403
    err = refused(authorizer(key), f"Bearer {key.mint(email=None)}")
    assert err.status == 403 and "no email" in err.message
    err = refused(authorizer(key, writers=()), f"Bearer {key.mint()}")
    assert err.status == 403


def test_certificate_fetch_failure_is_503(key: Key) -> None:
    auth = IdTokenAuthorizer(AUDIENCE, CERTS_URL, [WRITER], request=StubTransport(key, status=500))
    with pytest.raises(Unavailable) as info:
        auth.authorize(f"Bearer {key.mint()}")
    err = api_error(info.value)
    assert (err.status, err.code) == (503, "unavailable")
    assert CERTS_URL in err.message


def test_certificates_are_cached_per_cache_control(
    key: Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = StubTransport(key, max_age=60)
    caching = CachingRequest()
    monkeypatch.setattr(caching, "_inner", transport)
    auth = IdTokenAuthorizer(AUDIENCE, CERTS_URL, [WRITER], request=caching)
    for _ in range(5):
        assert auth.authorize(f"Bearer {key.mint()}") == WRITER
    assert transport.calls == 1
    clock = time.monotonic() + 61
    monkeypatch.setattr("tally_registry.auth.time.monotonic", lambda: clock)
    auth.authorize(f"Bearer {key.mint()}")
    assert transport.calls == 2
    failing = StubTransport(key, status=503)
    caching2 = CachingRequest()
    monkeypatch.setattr(caching2, "_inner", failing)
    caching2(CERTS_URL)
    caching2(CERTS_URL)
    assert failing.calls == 2  # failures are not cached
