"""The ports the announcement protocol runs over: small Protocols, one per dependency.

The Google adapters (``adapters``) and the in-memory doubles (``memory``) both implement them, so
the protocol is unit- and model-tested without servers and run for real behind the same calls.
Every Storage call counts itself in the ``StorageOps`` it is given (the event row reports them);
the handler, the announcer and reconciliation call Storage through ``CountedStorage``, which holds
one delivery's counter, so no other signature carries it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from tally_handler.completeness import Entry, ListRequest
from tally_handler.rows import StorageOps

__all__ = ["CountedStorage", "EventLog", "Publisher", "Storage"]


# The adapters and memory repeat these signatures by design (a Protocol and its two
# implementations); tests/unit/test_handler_ports.py keeps the three in step.
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


@dataclass(frozen=True, slots=True)
class CountedStorage:
    """Storage for one delivery: every call counts in ``ops``, the counter of its events row.

    ``counting`` gives the same Storage with another counter (a delivery's own, or one per key
    range listed in parallel, added up afterwards: the counters are not thread-safe)."""

    storage: Storage
    ops: StorageOps = field(default_factory=StorageOps)

    def counting(self, ops: StorageOps) -> CountedStorage:
        return CountedStorage(self.storage, ops)

    def exists(self, bucket: str, name: str) -> bool:
        return self.storage.exists(bucket, name, self.ops)

    def download(
        self, bucket: str, name: str, max_bytes: int | None = None
    ) -> tuple[bytes, int] | None:
        return self.storage.download(bucket, name, self.ops, max_bytes)

    def list_page(
        self, bucket: str, prefix: str, request: ListRequest
    ) -> tuple[list[Entry], str | None]:
        return self.storage.list_page(bucket, prefix, request, self.ops)

    def list_prefixes(
        self, bucket: str, prefix: str, page_token: str | None, page_size: int
    ) -> tuple[list[str], str | None]:
        return self.storage.list_prefixes(bucket, prefix, page_token, self.ops, page_size)

    def write(
        self, bucket: str, name: str, data: bytes, if_generation_match: int | None = None
    ) -> int:
        return self.storage.write(bucket, name, data, self.ops, if_generation_match)

    def delete(self, bucket: str, name: str, if_generation_match: int | None = None) -> bool:
        return self.storage.delete(bucket, name, self.ops, if_generation_match)


class Publisher(Protocol):
    """A Pub/Sub topic: returns the message id; raises TransientError when it could not."""

    def publish(self, data: bytes, attributes: dict[str, str]) -> str: ...


class EventLog(Protocol):
    """The BigQuery tables: rows with deterministic insert ids; raises LogWriteFailed."""

    def write_event(self, row: dict[str, Any]) -> None: ...

    def write_run(self, row: dict[str, Any]) -> None: ...
