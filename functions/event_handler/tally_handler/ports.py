"""The ports the announcement protocol runs over: small Protocols, one per dependency.

The Google adapters (``adapters``) and the in-memory doubles (``memory``) both implement them, so
the protocol is unit- and model-tested without servers and run for real behind the same calls.
Every Storage call counts itself in the ``StorageOps`` it is given (the event row reports them);
the handler, the announcer and reconciliation call Storage through ``CountedStorage``, which holds
one delivery's counter, so no other signature carries it. ``SharedReads`` lets concurrent
deliveries on an instance share a read of the same object.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from tally_handler.completeness import Entry, ListRequest
from tally_handler.rows import StorageOps

__all__ = ["CountedStorage", "EventLog", "Publisher", "SharedReads", "Storage"]

T = TypeVar("T")


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


@dataclass(slots=True)
class _Flight:
    running: Future[Any]  # the read in flight
    next: Future[Any] | None = None  # the read after it, joined by whoever arrives meanwhile
    joined: int = 0  # callers sharing `next` besides its leader


class SharedReads:
    """Storage whose concurrent ``exists`` and ``download`` calls of one object share a request.

    A caller needs the answer of a read that starts after it asked (an older answer may predate
    its own object's write, or a claim it must see), so it never takes the answer of the read in
    flight: it waits for that one and joins the next, which everyone arriving meanwhile shares.
    Each answer is thus a read made within the caller's own call, as if it had made it itself,
    and K deliveries of a run at once probing the same missing path, or reading the same record,
    cost about two requests instead of K. The request counts in its leader's ``ops`` only.
    Lists and writes pass through."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._lock = threading.Condition()
        self._flights: dict[Hashable, _Flight] = {}

    def exists(self, bucket: str, name: str, ops: StorageOps) -> bool:
        return self._shared(
            ("exists", bucket, name), lambda: self.storage.exists(bucket, name, ops)
        )

    def download(
        self, bucket: str, name: str, ops: StorageOps, max_bytes: int | None = None
    ) -> tuple[bytes, int] | None:
        return self._shared(
            ("download", bucket, name, max_bytes),
            lambda: self.storage.download(bucket, name, ops, max_bytes),
        )

    def list_page(
        self, bucket: str, prefix: str, request: ListRequest, ops: StorageOps
    ) -> tuple[list[Entry], str | None]:
        return self.storage.list_page(bucket, prefix, request, ops)

    def list_prefixes(
        self, bucket: str, prefix: str, page_token: str | None, ops: StorageOps, page_size: int
    ) -> tuple[list[str], str | None]:
        return self.storage.list_prefixes(bucket, prefix, page_token, ops, page_size)

    def write(
        self,
        bucket: str,
        name: str,
        data: bytes,
        ops: StorageOps,
        if_generation_match: int | None = None,
    ) -> int:
        return self.storage.write(bucket, name, data, ops, if_generation_match)

    def delete(
        self, bucket: str, name: str, ops: StorageOps, if_generation_match: int | None = None
    ) -> bool:
        return self.storage.delete(bucket, name, ops, if_generation_match)

    def _shared(self, key: Hashable, read: Callable[[], T]) -> T:
        with self._lock:
            flight = self._flights.get(key)
            if flight is None:  # nothing in flight: read now
                flight = self._flights[key] = _Flight(Future())
                mine, lead = flight.running, True
            elif flight.next is None:  # lead the next read, once the one in flight is done
                mine = flight.next = Future()
                lead = True
                self._lock.wait_for(lambda: flight.running is mine)
            else:  # join the next read: it starts after this call
                mine, lead = flight.next, False
                flight.joined += 1
        if lead:
            try:
                mine.set_result(read())
            except BaseException as exc:
                mine.set_exception(exc)
            finally:
                with self._lock:
                    if flight.next is None:
                        del self._flights[key]
                    else:  # hand over: the next read starts now, after everyone who joined it
                        flight.running, flight.next, flight.joined = flight.next, None, 0
                        self._lock.notify_all()
        return mine.result()  # type: ignore[no-any-return]


class Publisher(Protocol):
    """A Pub/Sub topic: returns the message id; raises TransientError when it could not."""

    def publish(self, data: bytes, attributes: dict[str, str]) -> str: ...


class EventLog(Protocol):
    """The BigQuery tables: rows with deterministic insert ids; raises LogWriteFailed."""

    def write_event(self, row: dict[str, Any]) -> None: ...

    def write_run(self, row: dict[str, Any]) -> None: ...
