"""The rows the event handler writes fit the tables Terraform and the local platform create from
the same schema files: every outcome's row is inserted into the BigQuery emulator."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from tally_handler.completeness import Entry, Output
from tally_handler.delivery import MalformedDelivery, parse_delivery
from tally_handler.layout import Layout
from tally_handler.manifest import Claim, build_manifest
from tally_handler.outcomes import Outcome
from tally_handler.rows import StorageOps, event_row, run_row
from tally_handler.spec import ExpectedPath

from tests.conftest import ROOT

pytestmark = pytest.mark.integration
SCHEMAS = ROOT / "functions" / "event_handler" / "schemas"


def _schema(table: str) -> list[tuple[str, str, str]]:
    fields = json.loads((SCHEMAS / f"{table}.json").read_text())
    return [(f["name"], f["type"], f.get("mode", "NULLABLE")) for f in fields]


@pytest.mark.parametrize("table", ["events", "runs"])
def test_the_platform_tables_have_the_schema_files_columns(stack, table):
    created = stack.bigquery_client().get_table(stack.names.table(table))
    assert [(f.name, f.field_type, f.mode) for f in created.schema] == _schema(table)


def test_every_outcome_row_inserts(stack, unique):
    envelope = json.loads((ROOT / "tests" / "events" / "push_finalize_emulator.json").read_text())
    delivery = parse_delivery(json.dumps(envelope["body"]).encode(), envelope["headers"], 5)
    run_output = Layout.parse("{workflow}/{version}/{run_id}/{path}").match(
        delivery.notification.name
    )
    now = datetime.now(UTC)
    rows = [
        event_row(
            delivery,
            outcome=outcome,
            received_time=now,
            run_output=run_output,
            detail=f"{unique} {outcome}",
            storage_ops=StorageOps(1, 2, 3, 4, 1),
            idempotency_key="k" * 32,
            duration_ms=1.5,
            handler_version="test",
        )
        for outcome in Outcome
    ]
    try:
        parse_delivery(b"{not json", {}, 5)
    except MalformedDelivery as exc:
        rows.append(
            event_row(
                exc.delivery,
                outcome=Outcome.REJECTED,
                received_time=now,
                detail=f"{unique} bad",
                handler_version="test",
            )
        )
    errors = stack.bigquery_client().insert_rows_json(stack.names.table("events"), rows)
    assert errors == []

    run = Layout.parse("{workflow}/{version}/{run_id}/{path}").run("b", run_output)
    entry = Entry("a.txt", 7, 1, "crc", "md5", "text/plain", now.isoformat(), now.isoformat())
    manifest = build_manifest(
        run,
        revision=1,
        state="COMPLETE",
        outputs=[Output(entry, ExpectedPath("a.txt"))],
        unexpected=[],
        failure_reason=None,
        claim=Claim.at("m1", "c", now),
        handler_version="test",
    )
    runs = [
        run_row(manifest, o, "test")
        for o in (Outcome.COMPLETED, Outcome.FAILED, Outcome.RECONCILED, Outcome.REVISED)
    ]
    assert stack.bigquery_client().insert_rows_json(stack.names.table("runs"), runs) == []
    found = stack.query(
        f"SELECT COUNT(*) AS n FROM `${{dataset}}.events` WHERE detail LIKE '{unique}%'"
    )
    assert found[0]["n"] == len(rows)
