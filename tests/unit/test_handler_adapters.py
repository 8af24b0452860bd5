"""The Storage adapter reads a listed object's resource itself: held here to what
google-cloud-storage's own Blob accessors say of the same resource (no server needed)."""

from __future__ import annotations

from datetime import datetime

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud.storage import Client
from tally_handler.adapters import _entry
from tally_handler.manifest import _time as manifest_time

PREFIX = "wf/1.0/run-1/"


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
    entry = _entry(blob, PREFIX)
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
        assert manifest_time(listed) == listed  # already in the manifest's form: not parsed again


def test_absent_and_unreadable_fields() -> None:
    entry = _entry(_blob(generation="7", timeCreated="yesterday"), PREFIX)
    assert (entry.size, entry.crc32c, entry.updated) == (None, None, None)
    assert entry.time_created == "yesterday"  # informative only: kept as listed
