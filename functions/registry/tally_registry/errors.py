"""Typed errors: API errors carry their HTTP status; store errors stay storage-agnostic."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answered as `{"error": {"code", "message", "details"}}` with `status`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers or {}

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class ConfigError(Exception):
    """A required environment variable is missing or malformed (the message names it)."""


class StoreError(Exception):
    """Storage failed in a way a retry may fix (the API answers 503)."""


class PreconditionFailed(Exception):
    """A generation-conditional write lost: with generation 0 (create-if-absent) the object
    already exists; otherwise a concurrent writer replaced it first."""


class VersionConflict(Exception):
    """Different content is already registered under this workflow version (immutable)."""


class DefaultConflict(Exception):
    """The default pointer kept changing under concurrent writers; the caller may retry."""


class InvalidStoredDocument(Exception):
    """A registry bucket object is not a valid spec or pointer (written around the API)."""

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
