"""The Storage adapter reads a listed object's resource itself: held here to what
google-cloud-storage's own Blob accessors say of the same resource (no server needed)."""

from __future__ import annotations

from datetime import datetime

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud.storage import Client
from tally_handler.adapters import StorageGateway
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
