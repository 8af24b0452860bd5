"""In-memory doubles of the ports, for unit and model-based tests (never end to end).

``MemoryStorage`` keeps Cloud Storage's semantics that tally relies on: every write makes a new,
larger generation; ``if_generation_match`` (0: must not exist) on writes and deletes; listings in
lexicographic order with ``startOffset``/``endOffset``, ``maxResults`` and page tokens, strongly
consistent; ``timeCreated``/``updated`` from a clock the test controls.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tally_handler.completeness import Entry, ListRequest
from tally_handler.errors import PreconditionFailed
from tally_handler.rows import StorageOps

__all__ = ["MemoryEventLog", "MemoryPublisher", "MemoryStorage", "StoredObject"]


@dataclass(frozen=True, slots=True)
class StoredObject:
    data: bytes
    generation: int
    time_created: datetime
    content_type: str = "application/octet-stream"

    @property
    def md5(self) -> str:
        digest = hashlib.md5(self.data, usedforsecurity=False).digest()
        return base64.b64encode(digest).decode("ascii")


# ports.Storage's signatures again, by design; tests/unit/test_handler_ports.py keeps them in step.
class MemoryStorage:
    """A bucket namespace in memory (``ports.Storage``)."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.clock = clock
        self.objects: dict[tuple[str, str], StoredObject] = {}
        self._names: dict[str, list[str]] = {}  # per bucket, sorted: listings cost O(page)
        self._generation = 1_700_000_000_000_000
        self._lock = threading.Lock()

    # -- test conveniences: what a workflow or a user does to the bucket -----------------------
    def put(
        self, bucket: str, name: str, data: bytes = b"x", if_generation_match: int | None = None
    ) -> int:
        return self.write(bucket, name, data, StorageOps(), if_generation_match)

    def remove(self, bucket: str, name: str) -> bool:
        return self.delete(bucket, name, StorageOps())

    def get(self, bucket: str, name: str) -> StoredObject | None:
        return self.objects.get((bucket, name))

    # -- ports.Storage --------------------------------------------------------------------------
    def exists(self, bucket: str, name: str, ops: StorageOps) -> bool:
        ops.reads += 1
        return (bucket, name) in self.objects

    def download(
        self, bucket: str, name: str, ops: StorageOps, max_bytes: int | None = None
    ) -> tuple[bytes, int] | None:
        ops.reads += 1
        found = self.objects.get((bucket, name))
        if found is None:
            return None
        data = found.data if max_bytes is None else found.data[:max_bytes]
        return data, found.generation

    def list_page(
        self, bucket: str, prefix: str, request: ListRequest, ops: StorageOps
    ) -> tuple[list[Entry], str | None]:
        ops.lists += 1
        names = self._names.get(bucket, [])
        lo = bisect.bisect_left(names, prefix + (request.start_offset or ""))
        if request.page_token is not None:
            lo = max(lo, bisect.bisect_right(names, request.page_token))
        end = prefix + request.end_offset if request.end_offset is not None else None
        page: list[str] = []
        for name in names[lo:]:
            if not name.startswith(prefix) or (end is not None and name >= end):
                break
            if len(page) == request.max_results:
                entries = [self._entry(bucket, n, prefix) for n in page]
                ops.list_entries += len(entries)
                return entries, page[-1]
            page.append(name)
        entries = [self._entry(bucket, n, prefix) for n in page]
        ops.list_entries += len(entries)
        return entries, None

    def list_prefixes(
        self, bucket: str, prefix: str, page_token: str | None, ops: StorageOps, page_size: int
    ) -> tuple[list[str], str | None]:
        ops.lists += 1
        children = sorted(
            {
                prefix + name[len(prefix) :].split("/", 1)[0] + "/"
                for (b, name) in self.objects
                if b == bucket and name.startswith(prefix) and "/" in name[len(prefix) :]
            }
        )
        if page_token is not None:
            children = [child for child in children if child > page_token]
        page = children[:page_size]
        return page, (page[-1] if len(children) > page_size else None)

    def write(
        self,
        bucket: str,
        name: str,
        data: bytes,
        ops: StorageOps,
        if_generation_match: int | None = None,
    ) -> int:
        ops.writes += 1
        with self._lock:
            current = self.objects.get((bucket, name))
            self._check(current, if_generation_match, name, ops)
            self._generation += 1
            if current is None:
                bisect.insort(self._names.setdefault(bucket, []), name)
            self.objects[(bucket, name)] = StoredObject(data, self._generation, self.clock())
            return self._generation

    def delete(
        self, bucket: str, name: str, ops: StorageOps, if_generation_match: int | None = None
    ) -> bool:
        ops.writes += 1
        with self._lock:
            current = self.objects.get((bucket, name))
            if current is None:
                return False
            self._check(current, if_generation_match, name, ops)
            del self.objects[(bucket, name)]
            names = self._names[bucket]
            del names[bisect.bisect_left(names, name)]
            return True

    @staticmethod
    def _check(
        current: StoredObject | None, if_generation_match: int | None, name: str, ops: StorageOps
    ) -> None:
        if if_generation_match is None:
            return
        generation = 0 if current is None else current.generation
        if generation != if_generation_match:
            ops.precondition_failures += 1
            raise PreconditionFailed(name)

    def _entry(self, bucket: str, name: str, prefix: str) -> Entry:
        found = self.objects[(bucket, name)]
        created = found.time_created.isoformat()
        return Entry(
            path=name[len(prefix) :],
            generation=found.generation,
            size=len(found.data),
            md5=found.md5,
            content_type=found.content_type,
            time_created=created,
            updated=created,  # every write is a new generation: updated = its creation
        )


class MemoryPublisher:
    """A topic that remembers every message (``ports.Publisher``)."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, dict[str, str]]] = []

    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        self.messages.append((data, dict(attributes)))
        return str(len(self.messages))


class MemoryEventLog:
    """Both tables as lists, de-duplicated on the insert id like BigQuery's best effort."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any]] = []

    def write_event(self, row: dict[str, Any]) -> None:
        self.events.append(row)

    def write_run(self, row: dict[str, Any]) -> None:
        self.runs.append(row)
