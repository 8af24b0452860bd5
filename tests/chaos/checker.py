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
from tests.chaos.storm import Baseline, Ledger

MANIFEST = "output.json"
TALLY_FOLDER = "_tally/"
RECORD = TALLY_FOLDER + "announcement.json"
MANIFEST_KIND = "tally#manifest"
MUST_BE_ZERO = (
    "complete_without_announcement",
    "incomplete_announced",
    "contents_per_key",
    "more_revisions_than_changes",
    "revision_without_change",
    "manifest_disagrees",
    "stale_manifest",
    "announcing_after_repair",
    "changed_after_repair",
    "blocked_after_repair",
    "foreign_manifest_overwritten",
    "lost_by_platform",
    "acked_missing_from_log",
    "malformed_not_rejected",
    "bucket_differs_from_plan",
)


def idempotency_key(run_key: str, revision: int = 1) -> str:
    """docs/design.md: revision 1 = sha256(run key)[:32], r > 1 = sha256(run key#revision-r)."""
    text = run_key if revision == 1 else f"{run_key}#revision-{revision}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass
class RunTruth:
    run: RunPlan
    objects: dict[str, int] = field(default_factory=dict)  # path -> generation (not tally's)
    marker: str | None = None  # the failure marker's text
    manifest_bytes: bytes | None = None  # output.json as stored
    record: dict[str, Any] | None = None  # _tally/announcement.json as stored
    announcements: list[dict[str, Any]] = field(default_factory=list)  # {attributes, manifest}

    @property
    def manifest(self) -> dict[str, Any] | None:
        """output.json when it is tally's manifest (None: missing or foreign)."""
        if self.manifest_bytes is None:
            return None
        try:
            doc = json.loads(self.manifest_bytes)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) and doc.get("kind") == MANIFEST_KIND else None

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

    def outputs(self) -> dict[str, int]:
        """The bucket's current generations of expected and optional outputs."""
        return {p: g for p, g in self.objects.items() if self.run.version.expects(p)}

    def revisions(self) -> dict[int, dict[str, Any]]:
        """Revision -> the first message announcing it."""
        found: dict[int, dict[str, Any]] = {}
        for a in sorted(self.announcements, key=lambda a: a["id"]):
            found.setdefault(_int(a["attributes"].get("revision")), a)
        return found


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


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
    reads: list[tuple[RunTruth, str]] = []
    for blob in client.list_blobs(stack.outputs_bucket, prefix=plan.root):
        parts = blob.name.split("/", 3)
        truth = truths.get("/".join(parts[:3]) + "/") if len(parts) == 4 else None
        if truth is None:
            continue
        path = parts[3]
        if path in (MANIFEST, FAILURE_MARKER, RECORD):
            reads.append((truth, path))
        if path == MANIFEST or path.startswith(TALLY_FOLDER):
            continue
        if path != FAILURE_MARKER:
            truth.objects[path] = int(blob.generation)
    bucket = client.bucket(stack.outputs_bucket)

    def read(item: tuple[RunTruth, str]) -> None:
        truth, path = item
        blob = bucket.get_blob(truth.run.prefix() + path)
        if blob is None:
            return
        data = blob.download_as_bytes()
        if path == FAILURE_MARKER:
            truth.marker = data.decode("utf-8", "replace").strip() or "no reason given"
        elif path == MANIFEST:
            truth.manifest_bytes = data
        else:
            truth.record = json.loads(data)

    with cf.ThreadPoolExecutor(8) as pool:
        list(pool.map(read, reads))
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


def content(message: dict[str, Any]) -> str:
    """What a consumer de-duplicating on the idempotency key keeps: body and attributes."""
    return json.dumps([message["attributes"], message["manifest"]], sort_keys=True)


def disagreements(
    truth: RunTruth, bucket_name: str, message: dict[str, Any], revision: int
) -> list[str]:
    """Why the latest announcement disagrees with the bucket (empty: it agrees)."""
    run, body, attributes = truth.run, message["manifest"], message["attributes"]
    run_key = f"{bucket_name}/{run.prefix()[:-1]}"
    key = idempotency_key(run_key, revision)
    expected_state = "FAILED" if truth.failed else "COMPLETE"
    outputs, unexpected = _listed(body.get("outputs")), _listed(body.get("unexpected"))
    version = run.version
    problems = []
    if body.get("idempotency_key") != key or attributes.get("idempotency_key") != key:
        problems.append(f"revision {revision}: key {attributes.get('idempotency_key')} != {key}")
    if body.get("state") != expected_state or attributes.get("state") != expected_state:
        problems.append(
            f"state {body.get('state')}/{attributes.get('state')}, bucket says {expected_state}"
        )
    if outputs != truth.outputs():
        gone = sorted(set(outputs.items()) - set(truth.outputs().items()))
        new = sorted(set(truth.outputs().items()) - set(outputs.items()))
        problems.append(f"outputs differ from the bucket: announced only {gone}, bucket only {new}")
    if any(not version.expects(p) for p in outputs) or any(version.expects(p) for p in unexpected):
        problems.append("an object is filed under the wrong list (outputs/unexpected)")
    if truth.failed and body.get("failure_reason") != truth.marker:
        problems.append(f"failure reason {body.get('failure_reason')!r} != {truth.marker!r}")
    if body.get("outputs_count") != len(outputs):
        problems.append("outputs_count does not count the outputs")
    return problems


def _attributes_problems(bucket_name: str, truth: RunTruth, revision: int, m: dict) -> list[str]:
    body, a = m["manifest"], m["attributes"]
    w, v, r = truth.run.prefix_parts
    problems = []
    expected = {"workflow": w, "version": v, "run_id": r, "bucket": bucket_name}
    for name, value in expected.items():
        if a.get(name) != value or body.get(name) != value:
            problems.append(f"revision {revision}: {name} {a.get(name)}/{body.get(name)}")
    if _int(body.get("revision")) != revision:
        problems.append(f"revision attribute {revision}, body says {body.get('revision')}")
    if a.get("idempotency_key") != body.get("idempotency_key"):
        problems.append(f"revision {revision}: the key attribute differs from the body's")
    run_key = f"{bucket_name}/{truth.run.prefix()[:-1]}"
    if a.get("idempotency_key") != idempotency_key(run_key, revision):
        problems.append(f"revision {revision}: the key is not derived from the run key")
    supersedes = body.get("supersedes")
    if revision == 1 and supersedes is not None:
        problems.append("revision 1 supersedes something")
    if revision > 1 and (
        not isinstance(supersedes, dict)
        or _int(supersedes.get("revision")) != revision - 1
        or supersedes.get("idempotency_key") != idempotency_key(run_key, revision - 1)
    ):
        problems.append(f"revision {revision} supersedes {supersedes}, not revision {revision - 1}")
    return problems


# -- the figures ----------------------------------------------------------------------------------
def check_runs(
    truths: dict[str, RunTruth], bucket_name: str, figures: Figures, ledger: Ledger
) -> None:
    c = figures.counts
    for name in MUST_BE_ZERO:
        c.setdefault(name, 0)
    c["raw_duplicate_announcements"] = 0
    c["runs_with_revisions"] = 0
    c["revisions_after_the_first"] = 0
    kinds: Counter[str] = Counter()
    for prefix, truth in sorted(truths.items()):
        kinds[str(truth.kind)] += 1
        if truth.kind is not truth.run.kind:
            figures.fail("bucket_differs_from_plan", prefix)
        check_record(truth, figures, prefix)
        announced = truth.announcements
        if truth.kind is RunKind.INCOMPLETE:
            if announced:
                figures.fail("incomplete_announced", prefix)
            continue
        if not announced:
            figures.fail("complete_without_announcement", prefix)
            continue
        by_key: dict[str, set[str]] = defaultdict(set)
        for a in announced:
            by_key[str(a["attributes"].get("idempotency_key"))].add(content(a))
        c["raw_duplicate_announcements"] += len(announced) - len(by_key)
        for key, contents in sorted(by_key.items()):
            if len(contents) > 1:
                figures.fail(
                    "contents_per_key", f"{prefix}: key {key} has {len(contents)} contents"
                )
        revisions = truth.revisions()
        if len(by_key) > 1:
            c["runs_with_revisions"] += 1
            c["revisions_after_the_first"] += len(by_key) - 1
        if len(by_key) > 1 + truth.run.output_changes:
            figures.fail(
                "more_revisions_than_changes",
                f"{prefix}: {len(by_key)} keys (revisions {sorted(revisions)}),"
                f" {truth.run.output_changes} changes after completion",
            )
        problems = []
        if sorted(revisions) != list(range(1, len(revisions) + 1)) or len(revisions) != len(by_key):
            problems.append(f"revisions {sorted(revisions)} for {len(by_key)} keys")
        for number, message in sorted(revisions.items()):
            problems += _attributes_problems(bucket_name, truth, number, message)
            listed = _listed(message["manifest"].get("outputs"))
            for path, generation in sorted(listed.items()):
                ever = ledger.generations.get(truth.run.prefix() + path, set())
                if generation not in ever:
                    problems.append(f"revision {number} names {path}@{generation}, never written")
            previous = revisions.get(number - 1)
            if previous is not None and (
                listed == _listed(previous["manifest"].get("outputs"))
                and message["manifest"].get("state") == previous["manifest"].get("state")
            ):
                figures.fail(
                    "revision_without_change",
                    f"{prefix}: revision {number} announces what revision {number - 1} did",
                )
        latest_number = max(revisions)
        latest = revisions[latest_number]
        problems += disagreements(truth, bucket_name, latest, latest_number)
        if truth.record is not None and truth.record.get("manifest") is not None:
            try:
                in_record = json.loads(truth.record["manifest"])
            except (TypeError, ValueError):
                in_record = None
            if in_record != latest["manifest"]:
                problems.append("the announcement record holds another manifest than the latest")
        elif truth.record is None:
            problems.append("no announcement record")
        if problems:
            figures.fail("manifest_disagrees", f"{prefix}: {'; '.join(sorted(set(problems)))}")
        stale = stale_manifest(truth, latest, latest_number)
        if stale:
            figures.fail("stale_manifest", f"{prefix}: {stale}")
    figures.notes["runs_in_bucket"] = dict(kinds)
    figures.notes["runs_announced"] = sum(bool(t.announcements) for t in truths.values())


def stale_manifest(truth: RunTruth, latest: dict[str, Any], number: int) -> str:
    """output.json must be the latest revision, naming the bucket's current generations."""
    stored = truth.manifest
    if stored is None:
        return "no tally manifest in output.json" if truth.manifest_bytes is None else ""
    problems = []
    current = truth.outputs()
    gone = sorted(
        f"{p}@{g}" for p, g in _listed(stored.get("outputs")).items() if current.get(p) != g
    )
    if gone:
        problems.append(f"output.json names {', '.join(gone)}, not in the bucket")
    missing = sorted(set(current) - set(_listed(stored.get("outputs"))))
    if missing:
        problems.append(f"output.json lacks {', '.join(missing)}")
    if stored != latest["manifest"]:
        problems.append(f"output.json is revision {stored.get('revision')}, not revision {number}")
    return "; ".join(problems)


def check_record(truth: RunTruth, figures: Figures, prefix: str) -> None:
    """After the repair: no run ANNOUNCING (claimed), CHANGED (the record's latest revision no
    longer matches a complete run's bucket) or BLOCKED (a foreign output.json left)."""
    record = truth.record
    if truth.manifest_bytes is not None and truth.manifest is None:
        figures.fail("blocked_after_repair", f"{prefix}: output.json is not tally's")
    if record is None:
        return
    if record.get("claim_status") == "claimed":
        claim = record.get("claim") or {}
        figures.fail(
            "announcing_after_repair",
            f"{prefix}: revision {record.get('revision')} claimed by {claim.get('delivery_id')}"
            f" at {claim.get('claimed_time')}",
        )
        return
    if truth.kind is RunKind.INCOMPLETE:
        return
    try:
        manifest = json.loads(record.get("manifest") or "{}")
    except ValueError:
        manifest = {}
    state = "FAILED" if truth.failed else "COMPLETE"
    if manifest.get("state") != state or (
        state == "COMPLETE" and _listed(manifest.get("outputs")) != truth.outputs()
    ):
        figures.fail(
            "changed_after_repair",
            f"{prefix}: revision {record.get('revision')} ({manifest.get('state')}) does not match"
            f" the bucket ({state})",
        )


def check_platform(stack: Any, ledger: Ledger, figures: Figures) -> None:
    """Messages the platform lost: published (by the harness, or by Storage for the harness's
    writes and deletions) but neither delivered nor dead-lettered (nor suppressed on purpose)."""
    s = stack.bridge.stats
    finished = s.acked | s.dead_lettered | s.suppressed
    seen = dict(ledger.recorder.seen)
    lost = sorted(i for i in ledger.published_ids | set(seen) if i not in finished)
    for message_id in lost[:50]:
        attributes = seen.get(message_id, {})
        figures.fail(
            "lost_by_platform",
            f"message {message_id} {attributes.get('objectId') or attributes}"
            f" ({'pulled' if message_id in seen else 'never pulled'})",
        )
    figures.counts["lost_by_platform"] = len(lost)
    storage: dict[tuple[str, str, str], bool] = {}
    for message_id, a in seen.items():
        if message_id in ledger.published_ids:
            continue
        k = (a.get("objectId", ""), a.get("objectGeneration", ""), a.get("eventType", ""))
        storage[k] = storage.get(k, False) or message_id in finished
    missing = [
        (name, generation, event)
        for name, generation, event in ledger.mutations
        if not storage.get((name, str(generation), event))
    ]
    for name, generation, event in missing[:50]:
        figures.fail("lost_by_platform", f"Storage's {event} of {name}@{generation}")
    figures.counts["lost_by_platform"] += len(missing) - min(50, len(missing))
    figures.notes["messages_taken_by_the_bridge"] = len(seen)
    figures.notes["storage_changes_checked"] = len(ledger.mutations)


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
    ledger: Ledger,
) -> tuple[Figures, dict[str, RunTruth]]:
    figures = Figures()
    truths = read_bucket(stack, plan)
    figures.notes["announcement_messages"] = attach_announcements(stack, truths)
    check_runs(truths, stack.outputs_bucket, figures, ledger)
    for item in repair.foreign_overwritten:
        figures.fail("foreign_manifest_overwritten", item)
    check_platform(stack, ledger, figures)
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
    record = truth.record or {}
    stored = truth.manifest
    lines = [
        f"  {truth.run.prefix()} plan={truth.run.kind} bucket={truth.kind}"
        f" closer={truth.run.closer} suppressed={truth.run.suppressed}"
        f" pre_deletes={truth.run.pre_deletes} foreign={truth.run.foreign_manifest}"
        f" late_version={truth.run.version.late}"
        f" post={[(str(a.kind), a.path, a.wait_announced) for a in truth.run.post]}"
        f" announcements={len(truth.announcements)}"
        f" output.json=revision {None if stored is None else stored.get('revision')}"
        f" record={record.get('claim_status')} revision {record.get('revision')}"
        f" claim {record.get('claim')}",
        f"    bucket outputs: {sorted(truth.outputs().items())}",
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
            f"    announced {a['id']} revision {a['attributes'].get('revision')} key"
            f" {a['attributes'].get('idempotency_key')}: {m.get('state')}"
            f" {sorted(_listed(m.get('outputs')).items())},"
            f" claimed by {claim.get('delivery_id')} at {claim.get('claimed_time')}"
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
