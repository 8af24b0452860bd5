"""The checker: the truth from the bucket, the completions topic, the dead-letter subscription and
BigQuery, compared without using the handler's code (completeness and keys are re-derived here).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.chaos.plan import FAILURE_MARKER, Plan, RunKind, RunPlan
from tests.chaos.repair import RepairStats
from tests.chaos.storm import Baseline

MANIFEST = "output.json"
TALLY_FOLDER = "_tally/"
MUST_BE_ZERO = (
    "complete_without_announcement",
    "incomplete_announced",
    "announced_more_than_once",
    "manifest_disagrees",
    "acked_missing_from_log",
    "stuck_claimed",
    "malformed_not_rejected",
    "bucket_differs_from_plan",
)


def idempotency_key(run_key: str) -> str:
    return hashlib.sha256(run_key.encode("utf-8")).hexdigest()[:32]


@dataclass
class RunTruth:
    run: RunPlan
    objects: dict[str, int] = field(default_factory=dict)  # path -> generation (outputs only)
    marker: str | None = None  # the failure marker's text
    manifest: dict[str, Any] | None = None  # output.json as stored
    announcements: list[dict[str, Any]] = field(default_factory=list)  # {attributes, manifest}

    @property
    def failed(self) -> bool:
        return self.marker is not None

    @property
    def complete(self) -> bool:
        version = self.run.version
        shards = sum(version.is_shard(p) for p in self.objects)
        return all(p in self.objects for p in version.exact) and shards == version.shards

    @property
    def kind(self) -> RunKind:
        if self.failed:
            return RunKind.FAILED
        return RunKind.COMPLETE if self.complete else RunKind.INCOMPLETE


@dataclass
class Figures:
    counts: dict[str, int] = field(default_factory=dict)
    failing: dict[str, list[str]] = field(default_factory=dict)  # figure -> run prefixes / ids
    notes: dict[str, Any] = field(default_factory=dict)

    def fail(self, figure: str, what: str) -> None:
        self.failing.setdefault(figure, []).append(what)
        self.counts[figure] = self.counts.get(figure, 0) + 1

    @property
    def ok(self) -> bool:
        return all(self.counts.get(name, 0) == 0 for name in MUST_BE_ZERO)


# -- reading the truth ----------------------------------------------------------------------------
def read_bucket(stack: Any, plan: Plan) -> dict[str, RunTruth]:
    truths = {run.prefix(): RunTruth(run) for run in plan.runs}
    client = stack.storage_client()
    markers: list[RunTruth] = []
    manifests: list[RunTruth] = []
    for blob in client.list_blobs(stack.outputs_bucket, prefix=plan.root):
        parts = blob.name.split("/", 3)
        truth = truths.get("/".join(parts[:3]) + "/") if len(parts) == 4 else None
        if truth is None:
            continue
        path = parts[3]
        if path == MANIFEST:
            manifests.append(truth)
        elif path == FAILURE_MARKER:
            markers.append(truth)
        elif not path.startswith(TALLY_FOLDER):
            truth.objects[path] = int(blob.generation)
    bucket = client.bucket(stack.outputs_bucket)

    def read_marker(truth: RunTruth) -> None:
        data = bucket.blob(truth.run.prefix() + FAILURE_MARKER).download_as_bytes()
        truth.marker = data.decode("utf-8", "replace").strip() or "no reason given"

    def read_manifest(truth: RunTruth) -> None:
        truth.manifest = json.loads(bucket.blob(truth.run.prefix() + MANIFEST).download_as_bytes())

    with cf.ThreadPoolExecutor(8) as pool:
        list(pool.map(read_marker, markers))
        list(pool.map(read_manifest, manifests))
    return truths


def attach_announcements(stack: Any, truths: dict[str, RunTruth]) -> int:
    """Every completion message of our runs (the collector kept them all); returns the count."""
    count = 0
    for completion in stack.completions.snapshot():
        a = completion.attributes
        prefix = f"{a.get('workflow')}/{a.get('version')}/{a.get('run_id')}/"
        if prefix in truths:
            truths[prefix].announcements.append(
                {
                    "attributes": dict(a),
                    "manifest": completion.manifest,
                    "id": completion.message_id,
                }
            )
            count += 1
    return count


# -- comparisons ----------------------------------------------------------------------------------
def _listed(items: list[dict[str, Any]] | None) -> dict[str, int]:
    return {item["path"]: int(item["generation"]) for item in items or []}


def signature(manifest: dict[str, Any]) -> str:
    """What a consumer de-duplicating on the idempotency key keeps: it must not differ."""
    return json.dumps(
        [
            manifest.get("state"),
            sorted(_listed(manifest.get("outputs")).items()),
            sorted(_listed(manifest.get("unexpected")).items()),
            manifest.get("failure_reason"),
        ]
    )


def disagreements(truth: RunTruth, bucket_name: str, message: dict[str, Any]) -> list[str]:
    """Why one announcement disagrees with the bucket (empty: it agrees)."""
    run, body, attributes = truth.run, message["manifest"], message["attributes"]
    key = idempotency_key(f"{bucket_name}/{run.prefix()[:-1]}")
    expected_state = "FAILED" if truth.failed else "COMPLETE"
    outputs, unexpected = _listed(body.get("outputs")), _listed(body.get("unexpected"))
    version = run.version
    problems = []
    if body.get("idempotency_key") != key or attributes.get("idempotency_key") != key:
        problems.append(f"idempotency key {attributes.get('idempotency_key')} is not {key}")
    if body.get("state") != expected_state or attributes.get("status") != expected_state:
        problems.append(
            f"state {body.get('state')}/{attributes.get('status')}, bucket says {expected_state}"
        )
    if body.get("status") != "published":
        problems.append(f"message body has status {body.get('status')}")
    listed = {**outputs, **unexpected}
    if listed != truth.objects:
        problems.append(f"objects {sorted(listed.items())} != {sorted(truth.objects.items())}")
    if any(not version.expects(p) for p in outputs) or any(version.expects(p) for p in unexpected):
        problems.append("an object is filed under the wrong list (outputs/unexpected)")
    if truth.failed and body.get("failure_reason") != truth.marker:
        problems.append(f"failure reason {body.get('failure_reason')!r} != {truth.marker!r}")
    if body.get("outputs_count") != len(outputs):
        problems.append("outputs_count does not count the outputs")
    return problems


def stored_problems(truth: RunTruth) -> list[str]:
    stored = truth.manifest
    if stored is None:
        return ["no output.json in the run folder"]
    problems = []
    if stored.get("status") != "published":
        problems.append(f"output.json has status {stored.get('status')}")
    if all(stored != a["manifest"] for a in truth.announcements):
        problems.append("output.json equals none of the announcements")
    return problems


# -- the figures ----------------------------------------------------------------------------------
def check_runs(truths: dict[str, RunTruth], bucket_name: str, figures: Figures) -> None:
    c = figures.counts
    for name in MUST_BE_ZERO:
        c.setdefault(name, 0)
    c["raw_duplicate_announcements"] = 0
    kinds: Counter[str] = Counter()
    for prefix, truth in sorted(truths.items()):
        kinds[str(truth.kind)] += 1
        if truth.kind is not truth.run.kind:
            figures.fail("bucket_differs_from_plan", prefix)
        announced = truth.announcements
        if truth.kind is RunKind.INCOMPLETE:
            if announced:
                figures.fail("incomplete_announced", prefix)
            continue
        if not announced:
            figures.fail("complete_without_announcement", prefix)
            continue
        c["raw_duplicate_announcements"] += len(announced) - 1
        keys = {a["attributes"].get("idempotency_key") for a in announced}
        if len(keys) > 1 or len({signature(a["manifest"]) for a in announced}) > 1:
            figures.fail("announced_more_than_once", prefix)
        problems = [p for a in announced for p in disagreements(truth, bucket_name, a)]
        problems += stored_problems(truth)
        if problems:
            figures.fail("manifest_disagrees", f"{prefix}: {'; '.join(sorted(set(problems)))}")
        if truth.manifest is not None and truth.manifest.get("status") == "claimed":
            figures.fail("stuck_claimed", prefix)
    figures.notes["runs_in_bucket"] = dict(kinds)
    figures.notes["runs_announced"] = sum(bool(t.announcements) for t in truths.values())


def _timestamp(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S")


def logged_delivery_ids(stack: Any, since: float) -> set[str]:
    rows = stack.query(
        "SELECT DISTINCT delivery_id FROM `${dataset}.events`"
        f" WHERE received_time >= TIMESTAMP('{_timestamp(since - 5)}')",
        timeout=120,
    )
    return {r["delivery_id"] for r in rows}


def check_event_log(stack: Any, baseline: Baseline, figures: Figures, acked: set[str]) -> None:
    stats = stack.bridge.stats
    acked = acked - set(stats.suppressed)
    missing = sorted(acked - logged_delivery_ids(stack, baseline.started))
    figures.counts["acked_missing_from_log"] = len(missing)
    figures.failing["acked_missing_from_log"] = missing[:50]
    figures.notes["acked_in_window"] = len(acked)


def check_malformed(
    stack: Any, malformed_ids: dict[str, Any], repair: RepairStats, figures: Figures
) -> None:
    """Each malformed message (or its replay) has a `rejected` row under its message id."""
    replays = {old: new for new, old in repair.replayed.items()}
    wanted = set(malformed_ids) | {replays[i] for i in malformed_ids if i in replays}
    ids = ", ".join(f"'{i}'" for i in sorted(wanted)) or "''"
    rows = stack.query(
        "SELECT DISTINCT delivery_id FROM `${dataset}.events`"
        f" WHERE outcome = 'rejected' AND delivery_id IN ({ids})"
    )
    rejected = {r["delivery_id"] for r in rows}
    figures.counts["malformed_not_rejected"] = 0
    for message_id, message in sorted(malformed_ids.items()):
        if message_id not in rejected and replays.get(message_id) not in rejected:
            figures.fail("malformed_not_rejected", f"{message_id} ({message.case})")
    figures.notes["malformed_published"] = len(malformed_ids)


def outcome_counts(stack: Any, plan: Plan) -> dict[str, int]:
    rows = stack.query(
        "SELECT outcome, COUNT(*) AS n FROM `${dataset}.events`"
        f" WHERE workflow LIKE '{plan.root}%' GROUP BY outcome ORDER BY outcome"
    )
    return {r["outcome"]: int(r["n"]) for r in rows}


def runs_table_rows(stack: Any, plan: Plan) -> Counter[str]:
    rows = stack.query(
        "SELECT workflow, version, run_id FROM `${dataset}.runs`"
        f" WHERE workflow LIKE '{plan.root}%'"
    )
    return Counter(f"{r['workflow']}/{r['version']}/{r['run_id']}/" for r in rows)


def check(
    stack: Any,
    plan: Plan,
    baseline: Baseline,
    malformed_ids: dict[str, Any],
    repair: RepairStats,
    acked: set[str],
) -> tuple[Figures, dict[str, RunTruth]]:
    figures = Figures()
    truths = read_bucket(stack, plan)
    figures.notes["announcement_messages"] = attach_announcements(stack, truths)
    check_runs(truths, stack.outputs_bucket, figures)
    check_event_log(stack, baseline, figures, acked)
    check_malformed(stack, malformed_ids, repair, figures)
    figures.counts["dead_lettered_during_storm"] = len(repair.dead_letters)
    figures.counts["dead_letters_left_after_replay"] = repair.left_after_replay
    figures.notes["outcomes"] = outcome_counts(stack, plan)
    in_runs = runs_table_rows(stack, plan)
    announced = [p for p, t in truths.items() if t.announcements]
    figures.counts["announced_without_runs_row"] = sum(1 for p in announced if not in_runs[p])
    figures.failing["announced_without_runs_row"] = [p for p in announced if not in_runs[p]]
    return figures, truths


# -- history of a failing run ---------------------------------------------------------------------
def history(stack: Any, truth: RunTruth, limit: int = 60) -> list[str]:
    workflow, version, run_id = truth.run.prefix_parts
    rows = stack.query(
        "SELECT received_time, delivery_id, delivery_attempt, output_path, generation,"
        " event_type, outcome, detail FROM `${dataset}.events`"
        f" WHERE workflow = '{workflow}' AND version = '{version}' AND run_id = '{run_id}'"
        " ORDER BY received_time"
    )
    lines = [
        f"  {truth.run.prefix()} plan={truth.run.kind} bucket={truth.kind}"
        f" closer={truth.run.closer} suppressed={truth.run.suppressed}"
        f" announcements={len(truth.announcements)}"
        f" output.json={None if truth.manifest is None else truth.manifest.get('status')}"
    ]
    for r in rows[:limit]:
        lines.append(
            f"    {r['received_time']} {r['delivery_id']}#{r['delivery_attempt']}"
            f" {r['event_type'] or '-'} {r['output_path']}@{r['generation']}"
            f" {r['outcome']}: {(r['detail'] or '')[:140]}"
        )
    if len(rows) > limit:
        lines.append(f"    ... {len(rows) - limit} more rows")
    for a in truth.announcements:
        m = a["manifest"]
        claim = m.get("claim") or {}
        lines.append(
            f"    announced {a['id']}: {m.get('state')} {m.get('outputs_count')} outputs,"
            f" claimed by {claim.get('delivery_id')} at {claim.get('claimed_at')}"
        )
    return lines


def failing_histories(stack: Any, figures: Figures, truths: dict[str, RunTruth]) -> list[str]:
    lines: list[str] = []
    shown: set[str] = set()
    for figure in MUST_BE_ZERO:
        for item in figures.failing.get(figure, [])[:10]:
            prefix = item.split(":", 1)[0]
            lines.append(f"{figure}: {item}")
            if prefix in truths and prefix not in shown:
                shown.add(prefix)
                lines += history(stack, truths[prefix])
    return lines


def by_workflow(truths: dict[str, RunTruth]) -> dict[str, Counter[str]]:
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for truth in truths.values():
        table[f"{truth.run.version.workflow} {truth.run.version.version}"][str(truth.kind)] += 1
    return table
