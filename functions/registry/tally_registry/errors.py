"""The registry's exceptions, in one tree; ``ANSWER`` maps each to the HTTP answer it gets.

    RegistryError
     ├── ApiError               answered with its own status: 4xx, the client's to fix
     ├── JsonError (ValueError)  400 invalid-json: the body is not strict UTF-8 JSON
     ├── VersionConflict        409 version-exists: versions are immutable
     ├── DefaultConflict        409 concurrent-update: the default kept changing, retry
     ├── Unavailable            503 unavailable: a dependency failed (token certificates), retry
     │    └── StoreError        503 unavailable: Cloud Storage failed (the log has which call)
     ├── InvalidStoredDocument  500 invalid-stored-document: an object written around the API
     ├── ConfigError            500 misconfigured: the deployment's environment is invalid
     ├── GlobError (ValueError)  never answered: spec validation reports it in details (400)
     ├── PreconditionFailed     never answered: a conditional write lost; the registry retries
     │                          or raises VersionConflict / DefaultConflict
     └── ReconcileError         never answered: the registration stands (Tally-Reconcile:
                                scheduled)

A client's mistake is always a 4xx; a 5xx says the registry, its configuration or Cloud Storage
failed. Any other exception is a bug: logged with its trace, answered 500 internal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "ANSWER",
    "Answer",
    "ApiError",
    "ConfigError",
    "DefaultConflict",
    "GlobError",
    "InvalidStoredDocument",
    "JsonError",
    "PreconditionFailed",
    "ReconcileError",
    "RegistryError",
    "StoreError",
    "Unavailable",
    "VersionConflict",
    "answer_of",
    "api_error",
]


class RegistryError(Exception):
    """Base of every error the registry raises on purpose; the message says what to do."""

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class ApiError(RegistryError):
    """An error answered as `{"error": {"code", "message", "details"}}` with `status`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, details)
        self.status = status
        self.code = code
        self.headers = headers or {}

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class JsonError(RegistryError, ValueError):
    """A body that is not strict JSON (syntax, duplicate keys, NaN/Infinity, not UTF-8)."""


class VersionConflict(RegistryError):
    """Different content is already registered under this workflow version (immutable)."""


class DefaultConflict(RegistryError):
    """The default pointer kept changing under concurrent writers; the caller may retry."""


class Unavailable(RegistryError):
    """A dependency failed in a way a retry may fix; the message says which."""


class StoreError(Unavailable):
    """Storage failed in a way a retry may fix (the message names the object: logged only)."""


class InvalidStoredDocument(RegistryError):
    """A registry bucket object is not a valid spec or pointer (written around the API)."""


class ConfigError(RegistryError):
    """A required environment variable is missing or malformed (the message names it)."""


class GlobError(RegistryError, ValueError):
    """A pattern that is not a valid glob of tally's dialect (spec.compile_glob)."""


class PreconditionFailed(RegistryError):
    """A generation-conditional write lost: with generation 0 (create-if-absent) the object
    already exists; otherwise a concurrent writer replaced it first."""


class ReconcileError(RegistryError):
    """A reconcile request could not be queued (the message says why)."""


@dataclass(frozen=True)
class Answer:
    """How an error is answered: `message` formats the exception's own (`{message}`)."""

    status: int
    code: str
    message: str = "{message}"


# Error type -> its answer, looked up along the type's MRO: the last row answers every exception
# nothing above names (a bug, whose text never reaches a response).
ANSWER: dict[type[BaseException], Answer] = {
    JsonError: Answer(400, "invalid-json"),
    VersionConflict: Answer(409, "version-exists"),
    DefaultConflict: Answer(409, "concurrent-update"),
    Unavailable: Answer(503, "unavailable"),
    StoreError: Answer(503, "unavailable", "Cloud Storage is unavailable: retry shortly"),
    InvalidStoredDocument: Answer(
        500,
        "invalid-stored-document",
        "{message}: fix or remove the object in the registry bucket (specs must be registered "
        "through PUT or Terraform from workflows/)",
    ),
    ConfigError: Answer(500, "misconfigured", "registry misconfigured: {message}"),
    Exception: Answer(500, "internal", "internal error (logged): retry, or report it"),
}


def answer_of(exc: BaseException) -> Answer:
    return next(ANSWER[t] for t in type(exc).__mro__ if t in ANSWER)


def api_error(exc: BaseException) -> ApiError:
    """The answer to an exception: its own if an ApiError, else its row of ``ANSWER``."""
    if isinstance(exc, ApiError):
        return exc
    answer = answer_of(exc)
    if not isinstance(exc, RegistryError):
        return ApiError(answer.status, answer.code, answer.message)
    return ApiError(
        answer.status, answer.code, answer.message.format(message=exc.message), exc.details
    )
