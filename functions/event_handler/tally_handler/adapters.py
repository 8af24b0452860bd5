"""The event handler's I/O: small adapters over the Google clients and the registry's HTTP API.

Each adapter imports its client library lazily (cold start) and turns the client's errors into the
exceptions of ``errors`` (the tree is drawn there). ``StorageGateway`` implements ``ports.Storage``,
``PubSubPublisher`` ``ports.Publisher`` and ``EventLog`` ``ports.EventLog``.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any
from urllib.parse import quote

from tally_handler.completeness import Entry, ListRequest
from tally_handler.delivery import rfc3339
from tally_handler.errors import (
    LogWriteFailed,
    PreconditionFailed,
    RegistryUnavailable,
    TransientError,
    UnknownWorkflow,
)
from tally_handler.rows import StorageOps
from tally_handler.spec import Spec

__all__ = [
    "BIGQUERY_ENDPOINT",
    "BUCKET_METADATA_OFF",
    "REQUEST_TIMEOUT_SECONDS",
    "STORAGE_EMULATOR_HOST",
    "EventLog",
    "LogWriteFailed",
    "PreconditionFailed",
    "PubSubPublisher",
    "RegistryClient",
    "RegistryUnavailable",
    "StorageGateway",
    "TransientError",
    "UnknownWorkflow",
]

STORAGE_EMULATOR_HOST = "STORAGE_EMULATOR_HOST"
# google-cloud-storage >= 3.x keeps bucket metadata for OpenTelemetry span attributes: it reads
# each bucket once, and after every 404 of an object checks in a background thread whether the
# bucket still exists. tally's probes and record reads answer 404 routinely: that was an extra
# bucket read per 404 (up to 0.9 per output at N = 10,000). Off unless the operator sets it.
BUCKET_METADATA_OFF = "DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA"
BIGQUERY_ENDPOINT = "TALLY_BIGQUERY_ENDPOINT"  # test-only: the local BigQuery emulator
REQUEST_TIMEOUT_SECONDS = 30.0


def _entry(blob: Any, prefix: str) -> Entry:
    # The listed resource's own fields, not Blob's accessors: those parse each time into a
    # datetime (0.29 s of CPU per 10,000 objects against 0.07 s), for times tally only writes
    # back out (tests/unit/test_handler_adapters.py holds the two to the same values).
    item = blob._properties
    size = item.get("size")
    return Entry(
        path=blob.name[len(prefix) :],
        generation=int(item.get("generation") or 0),
        size=int(size) if size is not None else None,
        crc32c=item.get("crc32c"),
        md5=item.get("md5Hash"),
        content_type=item.get("contentType"),
        time_created=_time(item.get("timeCreated")),
        updated=_time(item.get("updated")),
    )


def _time(text: str | None) -> str | None:
    """A listed time as tally writes times (RFC 3339 UTC, microseconds: one width, so they sort
    as strings); one that does not read as a time, as given (the times are informative)."""
    if not text:
        return None
    try:  # fromisoformat: C, where rfc3339's own parser of text is regular expressions
        return rfc3339(datetime.fromisoformat(text))
    except ValueError:  # unreadable, or without a time zone
        return text


# ports.Storage's signatures again, by design; tests/unit/test_handler_ports.py keeps them in step.
class StorageGateway:
    """Object reads, list pages and precondition-guarded writes, each counted in StorageOps."""

    def __init__(self, project: str, client: Any = None) -> None:
        """``client``: a google.cloud.storage.Client built elsewhere (the CLI's), else one here."""
        os.environ.setdefault(BUCKET_METADATA_OFF, "true")  # read at each call, so any time
        if client is None:
            from google.cloud import storage

            kwargs: dict[str, Any] = {"project": project}
            if os.environ.get(STORAGE_EMULATOR_HOST):
                from google.auth.credentials import AnonymousCredentials

                kwargs["credentials"] = AnonymousCredentials()
            client = storage.Client(**kwargs)
        self._client = client
        from google.api_core import exceptions

        self._exceptions = exceptions

    def _transient(self, exc: Exception) -> bool:
        e = self._exceptions
        return isinstance(exc, e.ServerError | e.TooManyRequests | ConnectionError | TimeoutError)

    def exists(self, bucket: str, name: str, ops: StorageOps) -> bool:
        ops.reads += 1
        try:
            return (
                self._client.bucket(bucket).get_blob(name, timeout=REQUEST_TIMEOUT_SECONDS)
                is not None
            )
        except Exception as exc:
            raise self._wrap(exc, f"reading gs://{bucket}/{name}") from exc

    def download(
        self, bucket: str, name: str, ops: StorageOps, max_bytes: int | None = None
    ) -> tuple[bytes, int] | None:
        """(content, generation) of an object, or None when it does not exist."""
        ops.reads += 1
        blob = self._client.bucket(bucket).blob(name)
        try:
            end = None if max_bytes is None else max_bytes - 1
            data = blob.download_as_bytes(end=end, timeout=REQUEST_TIMEOUT_SECONDS)
        except self._exceptions.NotFound:
            return None
        except Exception as exc:
            raise self._wrap(exc, f"reading gs://{bucket}/{name}") from exc
        return data, int(blob.generation or 0)

    def list_page(
        self, bucket: str, prefix: str, request: ListRequest, ops: StorageOps
    ) -> tuple[list[Entry], str | None]:
        ops.lists += 1
        kwargs: dict[str, Any] = {"prefix": prefix, "page_size": request.max_results}
        if request.start_offset is not None:
            kwargs["start_offset"] = prefix + request.start_offset
        if request.end_offset is not None:
            kwargs["end_offset"] = prefix + request.end_offset
        if request.page_token:
            kwargs["page_token"] = request.page_token
        try:
            iterator = self._client.list_blobs(bucket, timeout=REQUEST_TIMEOUT_SECONDS, **kwargs)
            page = next(iterator.pages)
            entries = [_entry(blob, prefix) for blob in page]
        except StopIteration:
            return [], None
        except Exception as exc:
            raise self._wrap(exc, f"listing gs://{bucket}/{prefix}") from exc
        ops.list_entries += len(entries)
        return entries, iterator.next_page_token

    def write(
        self,
        bucket: str,
        name: str,
        data: bytes,
        ops: StorageOps,
        if_generation_match: int | None = None,
    ) -> int:
        """Write an object in a single request; returns its generation.

        Never a resumable upload: the local Storage ignores preconditions on those. The manifest
        is kept far below google-cloud-storage's 8 MiB multipart limit (manifest.split_manifest).
        """
        ops.writes += 1
        blob = self._client.bucket(bucket).blob(name)
        try:
            blob.upload_from_string(
                data,
                content_type="application/json",
                if_generation_match=if_generation_match,
                timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except self._exceptions.PreconditionFailed as exc:
            ops.precondition_failures += 1
            raise PreconditionFailed(name) from exc
        except Exception as exc:
            raise self._wrap(exc, f"writing gs://{bucket}/{name}") from exc
        return int(blob.generation or 0)

    def delete(
        self, bucket: str, name: str, ops: StorageOps, if_generation_match: int | None = None
    ) -> bool:
        """Delete an object; False when it was already gone."""
        ops.writes += 1
        try:
            self._client.bucket(bucket).blob(name).delete(
                if_generation_match=if_generation_match, timeout=REQUEST_TIMEOUT_SECONDS
            )
        except self._exceptions.NotFound:
            return False
        except self._exceptions.PreconditionFailed as exc:
            ops.precondition_failures += 1
            raise PreconditionFailed(name) from exc
        except Exception as exc:
            raise self._wrap(exc, f"deleting gs://{bucket}/{name}") from exc
        return True

    def list_prefixes(
        self, bucket: str, prefix: str, page_token: str | None, ops: StorageOps, page_size: int
    ) -> tuple[list[str], str | None]:
        """One page of the 'folders' directly under prefix (delimiter '/')."""
        ops.lists += 1
        try:
            iterator = self._client.list_blobs(
                bucket,
                prefix=prefix,
                delimiter="/",
                page_size=page_size,
                page_token=page_token,
                timeout=REQUEST_TIMEOUT_SECONDS,
            )
            page = next(iterator.pages)
            list(page)  # prefixes are filled in as the page's items are read
            prefixes = sorted(page.prefixes)
        except StopIteration:
            return [], None
        except Exception as exc:
            raise self._wrap(exc, f"listing gs://{bucket}/{prefix}") from exc
        return prefixes, iterator.next_page_token

    def _wrap(self, exc: Exception, doing: str) -> Exception:
        if self._transient(exc):
            return TransientError(f"Storage failed {doing}: {exc}; the delivery will be retried")
        return exc


class RegistryClient:
    """Expected outputs over HTTP: one keep-alive session, timeouts, a per-instance cache."""

    CONNECT_TIMEOUT_SECONDS = 3.05
    READ_TIMEOUT_SECONDS = 10.0
    CACHE_SIZE = 1024

    def __init__(self, base_url: str, auth: str) -> None:
        import requests

        self._requests = requests
        self._base = base_url.rstrip("/")
        self._auth = auth
        self._session = requests.Session()
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], Spec] = OrderedDict()  # versions are immutable
        self._token: tuple[str, float] | None = None

    def _id_token(self) -> str | None:
        if self._auth == "none":
            return None
        now = time.time()
        if self._token and self._token[1] > now:
            return self._token[0]
        import google.auth.transport.requests
        from google.oauth2 import id_token

        token = id_token.fetch_id_token(google.auth.transport.requests.Request(), self._base)
        self._token = (token, now + 45 * 60)  # Google ID tokens live for an hour
        return token

    def spec(self, workflow: str, version: str) -> Spec:
        key = (workflow, version)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        url = (
            f"{self._base}/workflows/{quote(workflow, safe='')}/versions/{quote(version, safe='')}"
        )
        headers = {"Accept": "application/json"}
        try:
            token = self._id_token()
            if token:
                headers["Authorization"] = f"Bearer {token}"
            resp = self._session.get(
                url,
                headers=headers,
                timeout=(self.CONNECT_TIMEOUT_SECONDS, self.READ_TIMEOUT_SECONDS),
            )
        except Exception as exc:
            raise RegistryUnavailable(
                f"the registry at {self._base} did not answer: {exc}"
            ) from exc
        if resp.status_code >= 500 or resp.status_code in (408, 429):
            raise RegistryUnavailable(f"the registry answered {resp.status_code} for {url}")
        if resp.status_code >= 400:
            try:
                message = resp.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = resp.text[:200]
            raise UnknownWorkflow(
                f"the registry does not know {workflow} version {version} ({resp.status_code}:"
                f" {message}); register it, then reconciliation completes the run"
            )
        try:
            spec = Spec.from_json(resp.json())
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryUnavailable(
                f"the registry's answer for {url} is not a spec: {exc}"
            ) from exc
        with self._lock:
            self._cache[key] = spec
            while len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        return spec


class PubSubPublisher:
    """Publishes on one topic: completions (announcements) or object events (reconcile pages)."""

    def __init__(self, project: str, topic: str, client: Any = None) -> None:
        if client is None:
            from google.cloud import pubsub_v1

            client = pubsub_v1.PublisherClient(
                batch_settings=pubsub_v1.types.BatchSettings(max_latency=0.005, max_messages=100)
            )
        self._client = client
        self._topic = self._client.topic_path(project, topic)

    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        try:
            return self._client.publish(self._topic, data, **attributes).result(timeout=30)
        except Exception as exc:
            raise TransientError(f"publishing to {self._topic} failed: {exc}") from exc


class EventLog:
    """Streaming inserts into the events and runs tables, with deterministic insert ids."""

    def __init__(
        self, project: str, events_table: str, runs_table: str, client: Any = None
    ) -> None:
        from google.api_core.retry import Retry

        if client is None:
            from google.cloud import bigquery

            kwargs: dict[str, Any] = {"project": project}
            endpoint = os.environ.get(BIGQUERY_ENDPOINT)
            if endpoint:
                from google.auth.credentials import AnonymousCredentials

                kwargs.update(
                    credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint}
                )
            client = bigquery.Client(**kwargs)
        self._client = client
        # The client would retry for 10 minutes; a short deadline lets Pub/Sub redeliver instead.
        self._retry = Retry(initial=0.1, maximum=1.0, timeout=8.0)
        self.events_table = events_table
        self.runs_table = runs_table

    def _insert(self, table: str, row: dict[str, Any], insert_id: str) -> None:
        try:
            errors = self._client.insert_rows_json(
                table, [row], row_ids=[insert_id], retry=self._retry, timeout=10.0
            )
        except Exception as exc:
            raise LogWriteFailed(f"BigQuery insert into {table} failed: {exc}") from exc
        if errors:
            raise LogWriteFailed(f"BigQuery refused the row for {table}: {errors}")

    def write_event(self, row: dict[str, Any]) -> None:
        self._insert(self.events_table, row, row["insert_id"])

    def write_run(self, row: dict[str, Any]) -> None:
        self._insert(self.runs_table, row, row["idempotency_key"])
