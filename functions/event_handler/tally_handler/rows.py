"""Rows for the BigQuery ``events`` and ``runs`` tables, exactly as ``schemas/*.json`` declare them.

Every column is present (None where unknown); TIMESTAMP values are RFC 3339 UTC strings, INTEGER
values ints, so a row goes to ``insert_rows_json`` as is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tally_handler.delivery import Delivery, Notification, Request, rfc3339
from tally_handler.layout import RunOutput
from tally_handler.outcomes import Outcome, RunState

__all__ = [
    "RECONCILE_SOURCE",
    "SCHEMAS_DIR",
    "StorageOps",
    "columns",
    "event_row",
    "insert_id",
    "run_row",
    "schema",
]

if TYPE_CHECKING:
    from tally_handler.manifest import Manifest

# Deployed with the function (the source directory is functions/event_handler/).
SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"
RECONCILE_SOURCE = "reconcile"
_ANNOUNCING = frozenset({Outcome.COMPLETED, Outcome.FAILED, Outcome.RECONCILED, Outcome.REVISED})


@cache
def schema(table: str) -> tuple[Mapping[str, Any], ...]:
    """The BigQuery schema of ``table`` ("events" or "runs"), from the function's own files."""
    with (SCHEMAS_DIR / f"{table}.json").open(encoding="utf-8") as file:
        return tuple(json.load(file))


def columns(table: str) -> tuple[str, ...]:
    return tuple(field["name"] for field in schema(table))


@dataclass(slots=True)
class StorageOps:
    """Storage calls one delivery made; the adapter counts, the event row reports."""

    reads: int = 0
    lists: int = 0
    list_entries: int = 0
    writes: int = 0
    precondition_failures: int = 0
    listing_reason: str | None = None  # why it listed a run's whole folder (coalesce.Reason)

    @property
    def operations(self) -> int:
        return self.reads + self.lists + self.writes

    def add(self, other: StorageOps) -> None:
        """Count another thread's calls in these (each thread counts in its own)."""
        self.reads += other.reads
        self.lists += other.lists
        self.list_entries += other.list_entries
        self.writes += other.writes
        self.precondition_failures += other.precondition_failures


def insert_id(*parts: object) -> str:
    """A deterministic BigQuery insert id: retries of one row write do not multiply rows."""
    text = "\x1f".join("" if part is None else str(part) for part in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def event_row(
    delivery: Delivery | None,
    *,
    outcome: Outcome,
    received_time: datetime | str,
    notification: Notification | None = None,
    run_output: RunOutput | None = None,
    detail: str | None = None,
    storage_ops: StorageOps | None = None,
    idempotency_key: str | None = None,
    duration_ms: float | None = None,
    handler_version: str | None = None,
    row_key: str | None = None,
    revision: int | None = None,
    run_state: RunState | None = None,
) -> dict[str, Any]:
    """One ``events`` row; what is not known stays null.

    ``notification`` defaults to ``delivery.notification``. ``row_key`` tells apart several rows
    of one delivery (reconciliation logs one per run: pass the run key). The insert id hashes
    (delivery id, attempt, publish time, source, row key); when Pub/Sub gives no attempt number
    the received time joins it, so redeliveries keep their own rows while a retried insert of
    one row does not (pass the same received_time on a retry).
    """
    received = rfc3339(received_time)
    if delivery is not None and notification is None:
        notification = delivery.notification
    if delivery is None:
        delivery_id, attempt, publish_time, source = "unknown", None, None, None
    else:
        delivery_id, attempt = delivery.delivery_id, delivery.delivery_attempt
        publish_time = delivery.publish_time
        source = RECONCILE_SOURCE if delivery.request is Request.RECONCILE else str(delivery.source)
    distinct = received if attempt is None else None
    ops = storage_ops or StorageOps()
    n = notification
    # One line per events column, in the schema's order, alike as they are: each column stays
    # findable by its name (tests/unit/test_handler_rows.py holds the keys to the schema).
    return {
        "delivery_id": delivery_id,
        "delivery_attempt": attempt,
        "last_attempt": delivery.last_attempt if delivery is not None else None,
        "insert_id": insert_id(delivery_id, attempt, publish_time, source, row_key, distinct),
        "received_time": received,
        "publish_time": publish_time,
        "source": source,
        "subscription": delivery.subscription if delivery is not None else None,
        "event_type": str(n.event_type) if n else None,
        "event_time": n.event_time if n else None,
        "bucket": n.bucket if n else None,
        "object": n.name if n else None,
        "generation": n.generation if n else None,
        "metageneration": n.metageneration if n else None,
        "overwritten_generation": n.overwritten_generation if n else None,
        "size": n.size if n else None,
        "crc32c": n.crc32c if n else None,
        "md5": n.md5 if n else None,
        "content_type": n.content_type if n else None,
        "workflow": run_output.workflow if run_output else None,
        "version": run_output.version if run_output else None,
        "run_id": (run_output.run_id or None) if run_output else None,  # "": a whole version
        "output_path": (run_output.path or None) if run_output else None,  # "": the whole run
        "outcome": Outcome(outcome).value,
        "detail": detail,
        "idempotency_key": idempotency_key,
        "revision": revision,
        "run_state": None if run_state is None else RunState(run_state).value,
        "replayed": delivery.replayed if delivery is not None else None,
        "storage_reads": ops.reads,
        "storage_lists": ops.lists,
        "storage_list_entries": ops.list_entries,
        "storage_writes": ops.writes,
        "storage_precondition_failures": ops.precondition_failures,
        "storage_operations": ops.operations,
        "listing_reason": ops.listing_reason,
        "duration_ms": None if duration_ms is None else float(duration_ms),
        "handler_version": handler_version,
    }


def run_row(manifest: Manifest, outcome: Outcome, handler_version: str | None) -> dict[str, Any]:
    """One ``runs`` row: one revision's announcement, derived from its bytes alone, so every
    publisher of the revision (resume, takeover) writes the same row under the same insert id."""
    if Outcome(outcome) not in _ANNOUNCING:
        raise ValueError(f"a runs row records an announcement, not outcome {outcome!r}")
    return {
        "run_key": manifest.run.key,
        "bucket": manifest.run.bucket,
        "workflow": manifest.run.workflow,
        "version": manifest.run.version,
        "run_id": manifest.run.run_id,
        "state": manifest.state.value,
        "outcome": Outcome(outcome).value,
        "revision": manifest.revision,
        "outputs_count": manifest.outputs_count,
        "unexpected_count": manifest.unexpected_count,
        "first_output_time": manifest.first_output_time,
        "announced_time": rfc3339(manifest.announced_time),
        "idempotency_key": manifest.idempotency_key,
        "delivery_id": manifest.claim.delivery_id,
        "handler_version": handler_version,
    }
