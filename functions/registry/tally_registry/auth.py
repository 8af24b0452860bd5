"""Authorisation of writes: a Google-signed ID token from an allow-listed, verified email.

google-auth is imported on the first write, never at cold start. Token-signing certificates are
cached (per their Cache-Control, at most an hour) so a write does not refetch them each time.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from typing import Any, Protocol

from tally_registry.errors import ApiError, Unavailable

__all__ = ["GOOGLE_ISSUERS", "MAX_TOKEN_CHARS", "Authorizer", "CachingRequest", "IdTokenAuthorizer"]

GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
MAX_TOKEN_CHARS = 16384
_MAX_AGE = re.compile(r"max-age=(\d+)")


class Authorizer(Protocol):
    def authorize(self, authorization: str | None) -> str:
        """The writer's email; raises ApiError 401 (no or bad token), 403 (not a writer), 503."""


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(
        401, code, message, headers={"WWW-Authenticate": 'Bearer realm="tally-registry"'}
    )


class CachingRequest:
    """A google.auth transport Request that caches successful GETs (the certificate set)."""

    def __init__(self, default_ttl: float = 300.0, max_ttl: float = 3600.0) -> None:
        self._default_ttl = default_ttl
        self._max_ttl = max_ttl
        self._inner: Any = None
        self._cache: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def __call__(
        self, url: str, method: str = "GET", body: Any = None, headers: Any = None, **kw: Any
    ) -> Any:
        cacheable = method == "GET" and body is None
        if cacheable:
            hit = self._cache.get(url)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
        if self._inner is None:
            import google.auth.transport.requests as transport  # lazy: heavy, writes only

            with self._lock:
                self._inner = self._inner or transport.Request()
        kw.setdefault("timeout", 10)
        response = self._inner(url, method=method, body=body, headers=headers, **kw)
        if cacheable and response.status == 200:
            match = _MAX_AGE.search(str(response.headers.get("cache-control", "")))
            ttl = min(float(match.group(1)), self._max_ttl) if match else self._default_ttl
            self._cache[url] = (time.monotonic() + ttl, response)
        return response


class IdTokenAuthorizer:
    def __init__(
        self,
        audience: str,
        certs_url: str,
        writers: Iterable[str],
        request: Any = None,
        clock_skew_seconds: int = 10,
    ) -> None:
        # A trailing slash is the same URL to a person; accept either spelling as audience.
        self.audiences = sorted({audience, audience.rstrip("/"), audience.rstrip("/") + "/"})
        self.certs_url = certs_url
        self.writers = frozenset(w.lower() for w in writers)
        self.request = request or CachingRequest()
        self.clock_skew_seconds = clock_skew_seconds

    def authorize(self, authorization: str | None) -> str:
        if not authorization:
            raise _unauthorized(
                "missing-token",
                "writes need a Google-signed ID token: send 'Authorization: Bearer <token>' "
                f"with audience {self.audiences[0]} "
                f"(e.g. gcloud auth print-identity-token --audiences={self.audiences[0]})",
            )
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise _unauthorized(
                "malformed-token", "the Authorization header must be 'Bearer <ID token>'"
            )
        if len(token) > MAX_TOKEN_CHARS:
            raise _unauthorized("malformed-token", "the bearer token is too long for an ID token")
        claims = self._verify(token)
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise _unauthorized(
                "invalid-token",
                f"the ID token's issuer {claims.get('iss')!r} is not Google "
                "(accounts.google.com): mint a Google-signed ID token",
            )
        email = claims.get("email")
        if not isinstance(email, str) or not email:
            raise ApiError(
                403,
                "forbidden",
                "the ID token carries no email: mint it for a service account or user "
                "(with the email claim, e.g. --include-email)",
            )
        if claims.get("email_verified") is not True:
            raise ApiError(403, "forbidden", f"the email {email} is not verified by Google")
        if email.lower() not in self.writers:
            raise ApiError(
                403,
                "forbidden",
                f"{email} may not register versions: ask an operator to add it to "
                "TALLY_REGISTRY_WRITERS",
            )
        return email

    def _verify(self, token: str) -> dict[str, Any]:
        # Lazy: google-auth costs tens of ms of imports, and only writes need it.
        from google.auth import exceptions
        from google.oauth2 import id_token

        try:
            return dict(
                id_token.verify_token(
                    token,
                    self.request,
                    audience=self.audiences,
                    certs_url=self.certs_url,
                    clock_skew_in_seconds=self.clock_skew_seconds,
                )
            )
        except exceptions.TransportError as exc:
            raise Unavailable(
                f"could not fetch the token-signing certificates from {self.certs_url}: retry"
            ) from exc
        except Exception as exc:  # every other failure is the token's: expired, forged, garbled
            raise _unauthorized(
                "invalid-token",
                f"the ID token was refused ({_safe_reason(exc, token)}): mint a fresh token "
                f"for audience {self.audiences[0]}",
            ) from None


def _safe_reason(exc: Exception, token: str) -> str:
    """The verification error's reason, without any piece of the token (never echo tokens)."""
    reason = str(exc) or type(exc).__name__
    for piece in token.split("."):
        if len(piece) >= 6:
            reason = reason.replace(piece, "...")
    return reason[:200]
