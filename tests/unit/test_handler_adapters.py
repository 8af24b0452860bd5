"""The Storage adapter over google-cloud-storage: a listed object's entry comes from its resource,
held here to what the library's own Blob accessors say of it; and the library's bucket reads of
its own stay off (a local endpoint that answers 404)."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud.storage import Client
from tally_handler.adapters import BUCKET_METADATA_OFF, StorageGateway
from tally_handler.completeness import Entry, ListRequest
from tally_handler.delivery import rfc3339
from tally_handler.rows import StorageOps

PREFIX = "wf/1.0/run-1/"


class OnePage:
    """What Client.list_blobs returns, holding one page of the given blobs."""

    def __init__(self, blobs: list[object]) -> None:
        self.pages = iter([blobs])
        self.next_page_token = None


class ListingClient:
    def __init__(self, blobs: list[object]) -> None:
        self.blobs = blobs

    def list_blobs(self, bucket: str, **kwargs: object) -> OnePage:
        return OnePage(self.blobs)


def _entry(blob: object) -> Entry:
    gateway = StorageGateway("p", client=ListingClient([blob]))
    entries, token = gateway.list_page("b", PREFIX, ListRequest(None, None, 1000), StorageOps())
    assert token is None and len(entries) == 1
    return entries[0]


def _blob(**fields: str) -> object:
    bucket = Client(project="p", credentials=AnonymousCredentials()).bucket("b")
    blob = bucket.blob(PREFIX + "shards/part-00001.parquet")
    blob._set_properties({"name": blob.name, "bucket": "b", **fields})  # as a listing sets them
    return blob


@pytest.mark.parametrize(
    "created",
    [
        "2026-12-01T13:19:06.123Z",  # Cloud Storage: milliseconds
        "2026-12-01T13:19:06.123456789Z",  # fake-gcs-server: Go's nanoseconds, zeros trimmed
        "2026-12-01T13:19:06Z",
    ],
)
def test_a_listed_entry_says_what_the_blob_accessors_say(created: str) -> None:
    blob = _blob(
        generation="1796131040123456",
        size="1234",
        crc32c="AAAAAA==",
        md5Hash="1B2M2Y8AsgTpgAmY7PhCfg==",
        contentType="application/octet-stream",
        timeCreated=created,
        updated=created,
    )
    entry = _entry(blob)
    assert entry.path == "shards/part-00001.parquet"
    assert entry.generation == blob.generation
    assert entry.size == blob.size
    assert (entry.crc32c, entry.md5, entry.content_type) == (
        blob.crc32c,
        blob.md5_hash,
        blob.content_type,
    )
    times = [(entry.time_created, blob.time_created), (entry.updated, blob.updated)]
    for listed, accessor in times:
        assert listed is not None and len(listed) == len("2026-12-01T13:19:06.123000Z")
        assert datetime.fromisoformat(listed) == accessor
        assert listed == rfc3339(listed)  # already in the form the manifest writes


def test_absent_and_unreadable_fields() -> None:
    entry = _entry(_blob(generation="7", timeCreated="yesterday"))
    assert (entry.size, entry.crc32c, entry.updated) == (None, None, None)
    assert entry.time_created == "yesterday"  # informative only: kept as listed


class NotFoundServer:
    """A local endpoint that answers every request 404, counting the bucket-level ones."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.bucket_reads = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0].endswith("/b/b"):
                    server.bucket_reads += 1
                body = b'{"error": {"code": 404, "message": "Not Found"}}'
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"


def test_the_client_library_queues_no_bucket_reads_of_its_own(monkeypatch: Any) -> None:
    """google-cloud-storage's bucket-metadata cache would read the bucket once, then again
    after every object 404, in background threads: off, so nothing is cached or queued."""
    server = NotFoundServer()
    monkeypatch.delenv(BUCKET_METADATA_OFF, raising=False)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    gateway = StorageGateway("p")
    try:
        assert gateway.exists("b", PREFIX + "missing", StorageOps()) is False
        assert gateway.download("b", PREFIX + "_tally/announcement.json", StorageOps()) is None
        cache = gateway._client._bucket_metadata_cache
        assert cache.get("b") is None and not cache._inflight_fetches | cache._inflight_checks
        assert server.bucket_reads == 0
    finally:
        server.http.shutdown()


def test_an_operators_bucket_metadata_setting_stands(monkeypatch: Any) -> None:
    monkeypatch.setenv(BUCKET_METADATA_OFF, "false")
    StorageGateway("p", client=ListingClient([]))
    assert os.environ[BUCKET_METADATA_OFF] == "false"
