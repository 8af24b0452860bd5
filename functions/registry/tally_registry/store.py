"""Object storage behind the registry: a small Protocol, the Cloud Storage adapter, and an
in-memory implementation with the same semantics (unit tests, in-process benchmarks).

Every write is conditional on the object's generation: 0 means create-if-absent, which is how two
concurrent registrations of one version cannot both win.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Protocol

from tally_registry.errors import PreconditionFailed, StoreError

__all__ = ["GcsStore", "MemoryStore", "ObjectStore", "make_storage_client"]


class ObjectStore(Protocol):
    def read(self, name: str) -> tuple[bytes, int] | None:
        """(content, generation), or None when the object does not exist."""

    def write(self, name: str, data: bytes, if_generation_match: int) -> int:
        """Write when the live generation is `if_generation_match` (0: absent); return the new
        generation. Raises PreconditionFailed otherwise."""

    def list_names(self, prefix: str) -> list[str]:
        """Names of the objects under `prefix`."""


def make_storage_client(emulator_host: str | None, project: str | None) -> Any:
    """A google-cloud-storage client: anonymous against the emulator, default credentials else."""
    from google.cloud import storage  # lazy: the heaviest import, first request only

    if emulator_host:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project or "tally-local", credentials=AnonymousCredentials())
    return storage.Client(project=project) if project else storage.Client()


class GcsStore:
    """ObjectStore over a Cloud Storage bucket. Uploads are single-request (never set a chunk
    size): the emulator enforces generation preconditions on those only."""

    # Stores its arguments and makes the client lazily, as reconcile.PubSubReconcileQueue (and, by
    # shape alone, devstack's PushBridge constructor): plain constructors, nothing to share.
    def __init__(
        self,
        bucket: str,
        client: Any = None,
        *,
        emulator_host: str | None = None,
        project: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.bucket_name = bucket
        self._client = client
        self._emulator_host = emulator_host
        self._project = project
        self._timeout = timeout
        self._lock = threading.Lock()
        self._bucket: Any = None

    def _get_bucket(self) -> Any:
        with self._lock:
            if self._bucket is None:
                if self._client is None:
                    self._client = make_storage_client(self._emulator_host, self._project)
                self._bucket = self._client.bucket(self.bucket_name)
            return self._bucket

    def read(self, name: str) -> tuple[bytes, int] | None:
        from google.api_core import exceptions

        blob = self._get_bucket().blob(name)
        try:
            data = blob.download_as_bytes(timeout=self._timeout)
        except exceptions.NotFound:
            return None
        except Exception as exc:
            raise self._store_error("read", name, exc) from exc
        return data, int(blob.generation or 0)

    def write(self, name: str, data: bytes, if_generation_match: int) -> int:
        from google.api_core import exceptions

        blob = self._get_bucket().blob(name)
        try:
            blob.upload_from_string(
                data,
                content_type="application/json",
                if_generation_match=if_generation_match,
                timeout=self._timeout,
            )
        except exceptions.PreconditionFailed as exc:
            raise PreconditionFailed(name) from exc
        except Exception as exc:
            raise self._store_error("write", name, exc) from exc
        return int(blob.generation or 0)

    def list_names(self, prefix: str) -> list[str]:
        bucket = self._get_bucket()
        try:
            return [
                b.name
                for b in bucket.client.list_blobs(bucket, prefix=prefix, timeout=self._timeout)
            ]
        except Exception as exc:
            raise self._store_error("list", prefix, exc) from exc

    def _store_error(self, op: str, name: str, exc: Exception) -> StoreError:
        return StoreError(
            f"Cloud Storage {op} of gs://{self.bucket_name}/{name} failed "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        )


class MemoryStore:
    """ObjectStore in memory, with the same generation semantics as Cloud Storage."""

    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes, int]] = {}
        self._lock = threading.Lock()
        self._generations = itertools.count(1_000_000)
        self.reads = 0

    def read(self, name: str) -> tuple[bytes, int] | None:
        with self._lock:
            self.reads += 1
            return self._objects.get(name)

    def write(self, name: str, data: bytes, if_generation_match: int) -> int:
        with self._lock:
            live = self._objects.get(name, (b"", 0))[1]
            if live != if_generation_match:
                raise PreconditionFailed(name)
            generation = next(self._generations)
            self._objects[name] = (bytes(data), generation)
            return generation

    def list_names(self, prefix: str) -> list[str]:
        with self._lock:
            self.reads += 1
            return sorted(n for n in self._objects if n.startswith(prefix))
