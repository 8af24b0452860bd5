"""Derived real-cloud time to announce a run, from the measured Storage requests of each design.

Locally nothing limits how often one object is rewritten; Cloud Storage does. The model below
puts the documented limit and assumed request latencies on what each design was measured to do.
It models a run whose outputs land faster than one per second (a burst, as the driver writes
them) and gives the time from the last output's write to the completion message.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

SAME_OBJECT_WRITE_INTERVAL_S = 1.0
STORAGE_REQUEST_S = 0.05
NOTIFICATION_S = 0.10
PUBLISH_S = 0.05

SOURCES = {
    "same_object_write_interval_s": (
        "Cloud Storage documentation, Quotas & limits (https://cloud.google.com/storage/quotas), "
        "Objects: maximum rate of writes to the same object name, one write per second (writing "
        "faster may cause throttling errors); Request rate and access distribution guidelines "
        "(https://cloud.google.com/storage/docs/request-rate): a bucket's initial ~1,000 object "
        "writes/s do not apply to repeated writes of one object name, which have a smaller limit"
    ),
    "storage_request_s": "assumption: ~50 ms per Storage JSON API request (read, list page, "
    "write) from a function in the bucket's region, whatever the page size",
    "notification_s": "assumption: ~100 ms from an object's finalize to its push delivery "
    "(Storage notification -> Pub/Sub -> push subscription)",
    "publish_s": "assumption: ~50 ms to publish the completion message",
}


@dataclass(frozen=True)
class Model:
    same_object_write_interval_s: float = SAME_OBJECT_WRITE_INTERVAL_S
    storage_request_s: float = STORAGE_REQUEST_S
    notification_s: float = NOTIFICATION_S
    publish_s: float = PUBLISH_S

    def scratch_file(self, serialized_writes: float) -> float:
        """The scratch file absorbs one output per write, at most one write per second; then its
        last write's own notification reads it (metadata, content), claims it and announces.

        Each serialized step is a read and a write (2 requests) but cannot be shorter than the
        per-object write interval. The claim's metadata update is one more mutation of the same
        object, under a second after the last write: not counted (a lower bound), nor are the
        412 retries and throttling errors that concurrent writers add in the cloud.
        """
        step = max(self.same_object_write_interval_s, 2 * self.storage_request_s)
        return (
            self.notification_s
            + serialized_writes * step
            + self.notification_s
            + 3 * self.storage_request_s  # read metadata, read content, claim
            + self.publish_s
        )

    def tally(self, reads: float, lists: float) -> float:
        """The completing delivery: its reads and list pages, one after the other, then the
        claim (create-if-absent) and the publish. The manifest's second write (marked
        published) comes after the message; no object is written twice within a second."""
        return self.notification_s + (reads + lists + 1) * self.storage_request_s + self.publish_s

    def describe(self) -> dict[str, Any]:
        return {"values": asdict(self), "sources": SOURCES}

    def formulas(self) -> list[str]:
        return [
            "scratch-file: notification + W x max(1 s, 2 x request) + notification "
            "+ 3 x request + publish, W = successful scratch-file writes of the run (measured; N)",
            "tally: notification + (R + L + 1) x request + publish, R and L = object reads and "
            "list pages of the delivery that announced the run (measured), + 1 the claim",
        ]
