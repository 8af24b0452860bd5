"""The ports the announcement protocol runs over: small Protocols, one per dependency.

The Google adapters (``adapters``) and the in-memory doubles (``memory``) both implement them, so
the protocol is unit- and model-tested without servers and run for real behind the same calls.
Every Storage call counts itself in the ``StorageOps`` it is given (the event row reports them).
"""

from __future__ import annotations

from typing import Any, Protocol

from tally_handler.completeness import Entry, ListRequest
from tally_handler.rows import StorageOps


class Storage(Protocol):
    """Cloud Storage as tally uses it: reads, ordered list pages, precondition-guarded writes.

    ``write`` and ``delete`` raise ``errors.PreconditionFailed`` when ``if_generation_match`` does
    not hold (0: the object must not exist); failures worth a retry raise ``TransientError``.
    """

    def exists(self, bucket: str, name: str, ops: StorageOps) -> bool: ...

    def download(
        self, bucket: str, name: str, ops: StorageOps, max_bytes: int | None = None
    ) -> tuple[bytes, int] | None: ...

    def list_page(
        self, bucket: str, prefix: str, request: ListRequest, ops: StorageOps
    ) -> tuple[list[Entry], str | None]: ...

    def list_prefixes(
        self, bucket: str, prefix: str, page_token: str | None, ops: StorageOps, page_size: int
    ) -> tuple[list[str], str | None]: ...

    def write(
        self,
        bucket: str,
        name: str,
        data: bytes,
        ops: StorageOps,
        if_generation_match: int | None = None,
    ) -> int: ...

    def delete(
        self, bucket: str, name: str, ops: StorageOps, if_generation_match: int | None = None
    ) -> bool: ...


class Publisher(Protocol):
    """A Pub/Sub topic: returns the message id; raises TransientError when it could not."""

    def publish(self, data: bytes, attributes: dict[str, str]) -> str: ...


class EventLog(Protocol):
    """The BigQuery tables: rows with deterministic insert ids; raises LogWriteFailed."""

    def write_event(self, row: dict[str, Any]) -> None: ...

    def write_run(self, row: dict[str, Any]) -> None: ...
