"""BigQuery rows: exactly the columns of schemas/*.json, with values of the declared types."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tally_handler import rows
from tally_handler.delivery import Delivery, EventType, Notification, Reconcile, Source
from tally_handler.layout import DEFAULT_TEMPLATE, Layout, RunOutput
from tally_handler.manifest import Claim, Manifest, build_manifest
from tally_handler.outcomes import Outcome
from tally_handler.rows import StorageOps, event_row, insert_id, run_row

SCHEMAS = Path(__file__).resolve().parents[2] / "functions" / "event_handler" / "schemas"
RECEIVED = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
NOTIFICATION = Notification(
    bucket="outs",
    name="wf/1.0/run 1/a#b?.txt",
    generation=1795607789197831,
    event_type=EventType.OBJECT_FINALIZE,
    metageneration=1,
    size=5,
    crc32c="mnG7TA==",
    md5="XUFAKrxLKna5cZ2REBfFkg==",
    content_type="text/plain",
    event_time="2026-11-25T11:56:29.000000Z",
    time_created="2026-11-25T11:56:29.197796Z",
    overwritten_generation=17,
)
DELIVERY = Delivery(
    source=Source.PUBSUB_PUSH,
    delivery_id="7",
    delivery_attempt=5,
    last_attempt=True,
    publish_time="2026-11-25T11:56:29.301000Z",
    subscription="projects/p/subscriptions/s",
    attributes={"bucketId": "outs"},
    replayed=True,
    notification=NOTIFICATION,
)
OUTPUT = RunOutput("wf", "1.0", "run 1", "a#b?.txt")
LAYOUT = Layout.parse(DEFAULT_TEMPLATE)
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
TYPES: dict[str, Any] = {
    "STRING": str,
    "INTEGER": int,
    "BOOLEAN": bool,
    "FLOAT": float,
    "TIMESTAMP": str,
}


def schema_file(table: str) -> list[dict[str, Any]]:
    return json.loads((SCHEMAS / f"{table}.json").read_text(encoding="utf-8"))


def assert_matches_schema(row: dict[str, Any], table: str) -> None:
    fields = schema_file(table)
    assert list(row) == [field["name"] for field in fields]
    for field in fields:
        value = row[field["name"]]
        if value is None:
            assert field["mode"] != "REQUIRED", f"{field['name']} is REQUIRED"
            continue
        expected = TYPES[field["type"]]
        assert isinstance(value, expected), f"{field['name']}: {value!r} is not {expected}"
        if field["type"] == "INTEGER":
            assert not isinstance(value, bool)
            assert -(2**63) <= value < 2**63
        if field["type"] == "TIMESTAMP":
            assert TIMESTAMP.fullmatch(value), f"{field['name']}: {value!r}"
    json.dumps(row, allow_nan=False)


def full_row(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "notification": None,
        "run_output": OUTPUT,
        "outcome": Outcome.RECORDED,
        "detail": "expected output 'b' is not in the run folder yet",
        "storage_ops": StorageOps(
            reads=1, lists=2, list_entries=40, writes=1, listing_reason="urgent"
        ),
        "idempotency_key": "k" * 32,
        "received_time": RECEIVED,
        "duration_ms": 12,
        "handler_version": "0.1.0",
    }
    arguments |= overrides
    delivery = arguments.pop("delivery", DELIVERY)
    return event_row(delivery, **arguments)


def test_the_module_reads_its_own_schema_files() -> None:
    assert rows.SCHEMAS_DIR.resolve() == SCHEMAS.resolve()
    assert rows.columns("events") == tuple(f["name"] for f in schema_file("events"))
    assert rows.columns("runs") == tuple(f["name"] for f in schema_file("runs"))


def test_event_row_matches_the_events_schema() -> None:
    row = full_row()
    assert_matches_schema(row, "events")
    assert row["object"] == "wf/1.0/run 1/a#b?.txt"  # from delivery.notification
    assert row["output_path"] == "a#b?.txt"
    assert (row["storage_operations"], row["storage_list_entries"]) == (4, 40)
    assert row["listing_reason"] == "urgent"
    assert row["received_time"] == "2026-11-25T12:00:00.123456Z"
    assert row["duration_ms"] == 12.0
    assert (row["last_attempt"], row["replayed"], row["source"]) == (True, True, "pubsub-push")
    assert row["overwritten_generation"] == 17


def test_event_row_for_a_rejected_delivery_has_only_what_was_salvaged() -> None:
    salvaged = Delivery(source=Source.CLOUDEVENT, delivery_id="unparsed-" + "0" * 32)
    row = full_row(
        delivery=salvaged,
        run_output=None,
        outcome=Outcome.REJECTED,
        detail="not JSON",
        storage_ops=None,
        idempotency_key=None,
        duration_ms=None,
        handler_version=None,
    )
    assert_matches_schema(row, "events")
    assert row["bucket"] is None
    assert row["storage_operations"] == 0
    assert row["listing_reason"] is None
    assert row["outcome"] == "rejected"


def test_event_row_without_any_delivery() -> None:
    row = full_row(delivery=None, run_output=None, row_key="outs/wf/1/r")
    assert_matches_schema(row, "events")
    assert row["delivery_id"] == "unknown"


def test_reconcile_rows_say_so_and_differ_per_run() -> None:
    request = Delivery(Source.PUBSUB_PUSH, "r-1", 1, reconcile=Reconcile())
    first = full_row(delivery=request, outcome=Outcome.STALLED, row_key="outs/wf/1/a")
    second = full_row(delivery=request, outcome=Outcome.STALLED, row_key="outs/wf/1/b")
    assert first["source"] == second["source"] == "reconcile"
    assert first["insert_id"] != second["insert_id"]
    assert_matches_schema(first, "events")


def test_insert_id_is_deterministic_per_attempt() -> None:
    first = full_row()
    assert full_row(outcome=Outcome.DEFERRED, detail="other")["insert_id"] == first["insert_id"]
    later = Delivery(**{**_fields(DELIVERY), "delivery_attempt": 6})
    assert full_row(delivery=later)["insert_id"] != first["insert_id"]
    expected = insert_id("7", 5, "2026-11-25T11:56:29.301000Z", "pubsub-push", None, None)
    assert first["insert_id"] == expected
    assert re.fullmatch(r"[0-9a-f]{32}", expected)


def test_without_attempt_numbers_redeliveries_keep_their_own_rows() -> None:
    plain = Delivery(Source.PUBSUB_PUSH, "7", None, publish_time="2026-11-25T11:56:29.301000Z")
    once = full_row(delivery=plain)
    assert full_row(delivery=plain)["insert_id"] == once["insert_id"]  # a retried insert
    later = full_row(delivery=plain, received_time=datetime(2026, 11, 25, 12, 5, tzinfo=UTC))
    assert later["insert_id"] != once["insert_id"]  # a redelivery


def _fields(delivery: Delivery) -> dict[str, Any]:
    return {name: getattr(delivery, name) for name in delivery.__dataclass_fields__}


def manifest(revision: int = 1) -> Manifest:
    run = LAYOUT.run("outs", OUTPUT)
    return build_manifest(
        run,
        revision=revision,
        state="COMPLETE",
        outputs=[],
        unexpected=[],
        failure_reason=None,
        claim=Claim.at("7", "me", RECEIVED),
        handler_version="0.1.0",
    )


@pytest.mark.parametrize(
    "outcome", [Outcome.COMPLETED, Outcome.FAILED, Outcome.RECONCILED, Outcome.REVISED]
)
def test_run_row_matches_the_runs_schema(outcome: Outcome) -> None:
    announced = manifest(revision=2)
    row = run_row(announced, outcome, "0.1.0")
    assert_matches_schema(row, "runs")
    assert row["run_key"] == "outs/wf/1.0/run 1"
    assert (row["state"], row["outcome"], row["revision"]) == ("COMPLETE", outcome, 2)
    assert row["idempotency_key"] == announced.idempotency_key
    # the manifest's announced_time: the revision's claim, the same instant in both
    assert row["announced_time"] == announced.to_json()["announced_time"]
    assert row["announced_time"] == "2026-11-25T12:00:00.123456Z"
    assert row["delivery_id"] == "7"
    # derived from the bytes alone: any publisher of the revision writes the same row
    again = run_row(Manifest.from_bytes(announced.to_bytes(), announced.run), outcome, "0.1.0")
    assert again == row


def test_run_row_refuses_outcomes_that_announce_nothing() -> None:
    with pytest.raises(ValueError, match="announcement"):
        run_row(manifest(), Outcome.RECORDED, "0.1.0")


def test_storage_ops_counts() -> None:
    ops = StorageOps()
    ops.reads += 2
    ops.lists += 3
    ops.writes += 1
    ops.precondition_failures += 1
    assert ops.operations == 6
