"""The BigQuery views (bigquery/views/) and documented queries (bigquery/queries/) on known data.

Rows go straight into the events and runs tables, under a workflow name unique to the test, so
the event handler and other tests' rows never interfere; every check filters on that workflow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import ROOT, poll

pytestmark = pytest.mark.integration

SCHEMAS = ROOT / "functions" / "event_handler" / "schemas"
BUCKET = "tally-outputs"


def columns(table: str) -> list[str]:
    return [f["name"] for f in json.loads((SCHEMAS / f"{table}.json").read_text())]


def ts(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


@dataclass
class KnownData:
    """Five runs of workflow `wf` (ten announced runs of `latency_wf`, a sharded run of
    `sharded_wf`), as rows."""

    unique: str
    base: datetime
    events: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def wf(self) -> str:
        return f"wf-{self.unique}"

    @property
    def latency_wf(self) -> str:
        return f"lat-{self.unique}"

    @property
    def sharded_wf(self) -> str:
        return f"shard-{self.unique}"

    def delivery(self, name: str) -> str:
        return f"{self.unique}-{name}"

    def event(
        self, name: str, attempt: int, run: str, path: str | None, outcome: str, at: float, **extra
    ) -> dict[str, Any]:
        version = extra.pop("version", "1.0.0")
        row = dict.fromkeys(columns("events"))
        received = self.base + timedelta(seconds=at)
        row.update(
            delivery_id=self.delivery(name),
            delivery_attempt=attempt,
            last_attempt=False,
            insert_id=f"{self.unique}-{name}-{attempt}",
            received_time=ts(received),
            publish_time=ts(received - timedelta(seconds=0.2)),
            source="pubsub-push",
            subscription="projects/tally-local/subscriptions/object-events-push",
            event_type="OBJECT_FINALIZE" if path else None,
            event_time=ts(received - timedelta(seconds=0.5)) if path else None,
            bucket=BUCKET,
            object=f"{self.wf}/{version}/{run}/{path}" if path else None,
            generation=1000 + sum(map(ord, f"{run}/{path}")) if path else None,
            metageneration=1 if path else None,
            size=10 if path else None,
            content_type="text/plain" if path else None,
            workflow=self.wf,
            version=version,
            run_id=run,
            output_path=path,
            outcome=outcome,
            detail=f"{outcome} {path or ''}".strip(),
            idempotency_key=f"key-{run}",
            replayed=False,
            storage_reads=0,
            storage_lists=1,
            storage_list_entries=3,
            storage_writes=0,
            storage_precondition_failures=0,
            storage_operations=1,
            duration_ms=12.5,
            handler_version="test",
        )
        row.update(extra)
        assert set(row) == set(columns("events"))
        self.events.append(row)
        return row

    def run_row(
        self, workflow: str, run: str, state: str, outcome: str, first: float, announced: float
    ) -> None:
        """A runs row; ``first`` is its first output's creation time (seconds after base)."""
        row = dict.fromkeys(columns("runs"))
        row.update(
            run_key=f"{BUCKET}/{workflow}/1.0.0/{run}",
            bucket=BUCKET,
            workflow=workflow,
            version="1.0.0",
            run_id=run,
            state=state,
            outcome=outcome,
            outputs_count=3,
            unexpected_count=0,
            first_output_time=ts(self.base + timedelta(seconds=first)),
            announced_time=ts(self.base + timedelta(seconds=announced)),
            idempotency_key=f"key-{run}",
            delivery_id=self.delivery(run),
            handler_version="test",
        )
        assert set(row) == set(columns("runs"))
        self.runs.append(row)


def known_data(unique: str) -> KnownData:
    # All within one hour, an hour ago: one day, and inside `--since 3h`.
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    data = KnownData(unique, hour)
    e = data.event
    # done: COMPLETE. d1 deferred then recorded; d2's row written twice (same insert id);
    # d4 is a duplicate notification of a.txt's generation, after the announcement.
    e("d1", 1, "done", "a.txt", "deferred", 0)
    e("d2", 1, "done", "b.txt", "recorded", 1)
    data.events.append(dict(data.events[-1]))
    e("d1", 2, "done", "a.txt", "recorded", 5)
    e("d3", 1, "done", "c.txt", "completed", 10)
    e("d5", 1, "done", "output.json", "ignored", 11)
    e("d4", 1, "done", "a.txt", "after-completion", 12)
    data.run_row(data.wf, "done", "COMPLETE", "completed", 0, 10)
    # slow: STALLED by reconciliation.
    e("d6", 1, "slow", "x.txt", "recorded", 20)
    e("d7", 1, "slow", None, "stalled", 30, source="reconcile", detail="missing: y.txt")
    # busy: RUNNING; d9 dead-lettered after 3 attempts, then replayed as d10.
    e("d8", 1, "busy", "x.txt", "recorded", 40)
    for attempt in (1, 2, 3):
        e("d9", attempt, "busy", "y.txt", "deferred", 40 + attempt, last_attempt=attempt == 3)
    e("d10", 1, "busy", "y.txt", "recorded", 48, replayed=True)
    # bad: FAILED. Its first output was created at 48, its first event row says 49.5.
    e("d11", 1, "bad", "x.txt", "recorded", 50)
    e("d12", 1, "bad", "_FAILED", "failed", 51)
    data.run_row(data.wf, "bad", "FAILED", "failed", 48, 52)
    # A version the registry does not know.
    e("d13", 1, "lost", "x.txt", "unknown-workflow", 55, version="9.9.9")
    # A malformed message: no workflow.
    e(
        "d14",
        1,
        "",
        None,
        "rejected",
        56,
        workflow=None,
        version=None,
        run_id=None,
        bucket=None,
        idempotency_key=None,
        detail=f"not a Storage notification {unique}",
    )
    # A sharded run: listings of its whole folder, one row written twice (same insert id).
    for name, at, entries, reason in (
        ("s1", 60, 0, None),
        ("s2", 61, 400, "first"),
        ("s3", 62, 900, "due"),
        ("s4", 63, 950, "urgent"),
        ("s5", 64, 1000, "urgent"),
    ):
        e(
            name,
            1,
            "shards",
            f"part-{name}",
            "recorded",
            at,
            workflow=data.sharded_wf,
            storage_list_entries=entries,
            listing_reason=reason,
        )
    data.events.append(dict(data.events[-1]))
    # Ten announced runs with latencies 1..10 s.
    for n in range(1, 11):
        data.run_row(data.latency_wf, f"r{n}", "COMPLETE", "completed", 0, n)
    return data


def insert(stack: Any, data: KnownData) -> None:
    bq = stack.bigquery_client()
    assert bq.insert_rows_json(stack.names.table("events"), data.events) == []
    assert bq.insert_rows_json(stack.names.table("runs"), data.runs) == []


@pytest.fixture
def data(stack, unique) -> KnownData:
    known = known_data(unique)
    insert(stack, known)
    poll(
        lambda: (
            len(
                stack.query(
                    f"SELECT 1 FROM `${{dataset}}.events` WHERE workflow = '{known.wf}'", timeout=10
                )
            )
            == len([r for r in known.events if r["workflow"] == known.wf])
        ),
        timeout=30,
        message="the inserted rows to be visible",
    )
    return known


def view(stack: Any, name: str, where: str, order: str) -> list[dict[str, Any]]:
    return stack.query(
        f"SELECT * FROM `${{dataset}}.{name}` WHERE {where} ORDER BY {order}", timeout=20
    )


def test_every_view_file_is_a_view_on_the_platform(stack):
    for path in sorted((ROOT / "bigquery" / "views").glob("*.sql")):
        table = stack.bigquery_client().get_table(stack.names.table(path.stem))
        assert table.table_type == "VIEW", path.stem


def test_deliveries_one_row_per_delivery_with_its_final_outcome(stack, data):
    rows = view(stack, "deliveries", f"workflow = '{data.wf}'", "delivery_id")
    by_id = {r["delivery_id"].removeprefix(f"{data.unique}-"): r for r in rows}
    assert sorted(by_id) == sorted(f"d{n}" for n in range(1, 14))
    assert (by_id["d1"]["outcome"], by_id["d1"]["attempts"], by_id["d1"]["final_attempt"]) == (
        "recorded",
        2,
        2,
    )
    assert by_id["d1"]["deferred_attempts"] == 1
    assert by_id["d2"]["attempts"] == 1, "a row written twice (same insert_id) counts once"
    assert by_id["d3"]["outcome"] == "completed"
    assert by_id["d9"]["outcome"] == "deferred" and by_id["d9"]["attempts"] == 3
    assert by_id["d9"]["dead_lettered"] is True
    assert [k for k, r in by_id.items() if r["dead_lettered"]] == ["d9"]
    assert [k for k, r in by_id.items() if r["replayed"]] == ["d10"]
    assert by_id["d1"]["storage_operations"] == 2 and by_id["d1"]["duration_ms"] == 25.0


def test_run_status_state_outputs_and_completion_time(stack, data):
    rows = view(stack, "run_status", f"workflow = '{data.wf}'", "run_id")
    by_run = {r["run_id"]: r for r in rows}
    assert {k: r["state"] for k, r in by_run.items()} == {
        "bad": "FAILED",
        "busy": "RUNNING",
        "done": "COMPLETE",
        "lost": "RUNNING",
        "slow": "STALLED",
    }
    done = by_run["done"]
    assert done["outputs_seen"] == 3 and done["outputs_in_manifest"] == 3
    assert done["deliveries"] == 5 and done["announced_by"] == "completed"
    assert done["completion_seconds"] == 10.0
    assert done["first_output_time"] == data.base  # the runs row's
    assert done["first_event_time"] == data.base - timedelta(seconds=0.5)  # d1's event_time
    assert done["last_outcome"] == "after-completion"
    # completion_seconds counts from the first output, not from the first event row
    bad = by_run["bad"]
    assert bad["completion_seconds"] == 4.0
    assert bad["first_event_time"] == data.base + timedelta(seconds=49.5)
    assert bad["first_output_time"] == data.base + timedelta(seconds=48)
    assert by_run["slow"]["stalled_detail"] == "missing: y.txt"
    assert by_run["slow"]["outputs_seen"] == 1 and by_run["slow"]["completion_seconds"] is None
    assert by_run["busy"]["outputs_seen"] == 2 and by_run["busy"]["deferred_rows"] == 3
    assert by_run["lost"]["version"] == "9.9.9" and by_run["lost"]["unknown_workflow_rows"] == 1
    # Announced runs without any event row still appear (the latency workflow's).
    latency = view(stack, "run_status", f"workflow = '{data.latency_wf}'", "run_id")
    assert len(latency) == 10 and {r["state"] for r in latency} == {"COMPLETE"}


def test_duplicate_notifications_are_distinct_deliveries_of_one_generation(stack, data):
    rows = view(stack, "duplicate_notifications", f"workflow = '{data.wf}'", "object")
    got = {(r["run_id"], r["output_path"]): r for r in rows}
    assert sorted(got) == [("busy", "y.txt"), ("done", "a.txt")]
    a = got[("done", "a.txt")]
    assert (a["deliveries"], a["attempts"], a["replayed_deliveries"]) == (2, 3, 0)
    assert a["outcomes"] == "after-completion,deferred,recorded"
    y = got[("busy", "y.txt")]
    assert (y["deliveries"], y["replayed_deliveries"]) == (2, 1)


def test_completion_latency_daily_percentiles(stack, data):
    day = data.base.date()
    rows = view(stack, "completion_latency", f"workflow = '{data.latency_wf}'", "day")
    assert len(rows) == 1
    row = rows[0]
    assert row["day"] == day and row["runs"] == 10 and row["max_seconds"] == 10.0
    assert 5.0 <= row["p50_seconds"] <= 6.0
    assert 9.0 <= row["p90_seconds"] <= 10.0 and row["p99_seconds"] == 10.0
    mine = view(stack, "completion_latency", f"workflow = '{data.wf}'", "day")
    assert [(r["runs"], r["max_seconds"]) for r in mine] == [(2, 10.0)]
    everyone = view(stack, "completion_latency", f"workflow IS NULL AND day = '{day}'", "day")
    assert len(everyone) == 1 and everyone[0]["runs"] >= 12


# -- documented queries, through the CLI's own binding code --------------------------------


@pytest.fixture
def event_log(stack):
    from tally_cli.clients import Clients
    from tally_cli.config import load
    from tally_cli.eventlog import EventLog

    settings = load({}, environ=stack.client_env)
    return EventLog(Clients(settings))


def documented(event_log, name: str, **params: object) -> list[dict[str, Any]]:
    from tally_cli.eventlog import catalogue

    return event_log.documented(catalogue()[name], {k: str(v) for k, v in params.items()})


QUERY_CHECKS: dict[str, Any] = {}


def checks(name: str):
    def register(func):
        QUERY_CHECKS[name] = func
        return func

    return register


@checks("outcomes_by_day")
def _outcomes_by_day(event_log, data):
    rows = documented(event_log, "outcomes_by_day", workflow=data.wf, days=2)
    got = {
        r["outcome"]: (r["deliveries"], r["attempts"], r["replayed"], r["dead_lettered"])
        for r in rows
    }
    assert {r["day"] for r in rows} == {data.base.date().isoformat()}
    assert got == {
        "recorded": (6, 7, 1, 0),
        "completed": (1, 1, 0, 0),
        "after-completion": (1, 1, 0, 0),
        "ignored": (1, 1, 0, 0),
        "stalled": (1, 1, 0, 0),
        "deferred": (1, 3, 0, 1),
        "failed": (1, 1, 0, 0),
        "unknown-workflow": (1, 1, 0, 0),
    }
    assert rows[0]["outcome"] == "recorded", "ordered by deliveries, most first"


@checks("run_history")
def _run_history(event_log, data):
    rows = documented(event_log, "run_history", run_id="done", workflow=data.wf)
    assert [
        (r["delivery_id"].rsplit("-", 1)[1], r["delivery_attempt"], r["outcome"]) for r in rows
    ] == [
        ("d1", 1, "deferred"),
        ("d2", 1, "recorded"),
        ("d1", 2, "recorded"),
        ("d3", 1, "completed"),
        ("d5", 1, "ignored"),
        ("d4", 1, "after-completion"),
    ]
    assert (
        documented(event_log, "run_history", run_id="done", workflow=data.wf, version="2.0.0") == []
    )


@checks("rejected_recent")
def _rejected_recent(event_log, data):
    rows = documented(event_log, "rejected_recent", hours=3, limit=10000)
    mine = [r for r in rows if r["delivery_id"] == data.delivery("d14")]
    assert len(mine) == 1 and mine[0]["detail"] == f"not a Storage notification {data.unique}"
    assert len(documented(event_log, "rejected_recent", hours=3, limit=1)) == 1


@checks("stalled_runs")
def _stalled_runs(event_log, data):
    rows = documented(event_log, "stalled_runs", workflow=data.wf)
    assert [(r["run_id"], r["stalled_detail"], r["outputs_seen"]) for r in rows] == [
        ("slow", "missing: y.txt", 1)
    ]


@checks("slowest_runs")
def _slowest_runs(event_log, data):
    rows = documented(event_log, "slowest_runs", workflow=data.wf)
    assert [(r["run_id"], r["state"], r["completion_seconds"]) for r in rows] == [
        ("done", "COMPLETE", 10.0),
        ("bad", "FAILED", 4.0),
    ]
    top = documented(event_log, "slowest_runs", workflow=data.latency_wf, limit=3)
    assert [r["run_id"] for r in top] == ["r10", "r9", "r8"]


@checks("listing_costs")
def _listing_costs(event_log, data):
    rows = documented(event_log, "listing_costs", workflow=data.sharded_wf)
    assert [(r["run_id"], r["list_entries"], r["attempts"]) for r in rows] == [
        ("shards", 3250, 5)  # the row written twice counts once
    ]
    shards = rows[0]
    assert (
        shards["listings"],
        shards["first_listings"],
        shards["urgent_listings"],
        shards["due_listings"],
        shards["quiet_listings"],
    ) == (4, 1, 2, 1, 0)
    top = documented(event_log, "listing_costs", workflow=data.wf, limit=1)
    assert [(r["run_id"], r["list_entries"], r["listings"]) for r in top] == [("done", 18, 0)]


@checks("dead_lettered")
def _dead_lettered(event_log, data):
    rows = documented(event_log, "dead_lettered", workflow=data.wf)
    assert [(r["delivery_id"], r["attempts"], r["object"], r["recovered"]) for r in rows] == [
        (data.delivery("d9"), 3, f"{data.wf}/1.0.0/busy/y.txt", True)
    ]


def test_every_documented_query_has_a_check():
    from tally_cli.eventlog import catalogue

    assert sorted(catalogue()) == sorted(QUERY_CHECKS)


@pytest.mark.parametrize("name", sorted(QUERY_CHECKS))
def test_documented_query_on_known_data(name, event_log, data):
    QUERY_CHECKS[name](event_log, data)
