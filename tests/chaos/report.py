"""What a chaos run prints, and the figures it writes to docs/reliability.md and
docs/readme-reliability.md (the summary the README carries)."""

from __future__ import annotations

import platform
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.chaos.chaos import ChaosResult
from tests.chaos.checker import MUST_BE_ZERO
from tests.chaos.fuzz import FuzzReport
from tests.chaos.schema_fuzz import SchemaFuzzReport
from tests.chaos.security import Check

FIGURE_TEXT = {
    "complete_without_announcement": (
        "runs complete (or failed) in the bucket without an announcement"
    ),
    "incomplete_announced": "runs never complete in the bucket but announced",
    "contents_per_key": (
        "idempotency keys with more than one content (distinct bodies or attributes over every"
        " completion message)"
    ),
    "more_revisions_than_changes": (
        "runs with more revisions than changes after completion (no change: exactly 1 key)"
    ),
    "revision_without_change": (
        "announcements after a manifest deletion or edit: a revision announcing the outputs the"
        " previous one did"
    ),
    "manifest_disagrees": (
        "runs whose latest revision disagrees with the bucket (or a revision names a generation"
        " never written, a wrong key, attributes or supersedes)"
    ),
    "stale_manifest": (
        "output.json naming a generation that no longer exists, or not the latest revision"
    ),
    "announcing_after_repair": "runs ANNOUNCING (record claimed) after the repair",
    "changed_after_repair": "runs CHANGED (record published, the bucket differs) after the repair",
    "blocked_after_repair": "runs BLOCKED (a foreign output.json left) after the repair",
    "foreign_manifest_overwritten": "foreign output.json objects tally overwrote or removed",
    "lost_by_platform": "messages published but neither delivered nor dead-lettered",
    "acked_missing_from_log": "deliveries acknowledged but missing from the event log",
    "malformed_not_rejected": "malformed messages not logged `rejected`",
    "bucket_differs_from_plan": "runs whose bucket state differs from the plan (harness check)",
    "raw_duplicate_announcements": "raw duplicate completion messages (same key, same content)",
    "runs_with_revisions": "runs announced in more than one revision",
    "revisions_after_the_first": "revisions after the first (new keys)",
    "dead_lettered_during_storm": "messages dead-lettered during the storm (then replayed)",
    "dead_letters_left_after_replay": "messages left in the dead-letter subscription after replay",
    "announced_without_runs_row": "announced runs without a row in the runs table",
}

# Runs recorded before the platform said how it served and retried (issue 13) had this one.
HISTORIC_PLATFORM = (
    "1 handler instance (never restarted), push retries 5 attempts with backoff 0.05 s to 1 s"
)


@dataclass
class Extras:
    """Everything `make chaos` runs besides the chaos run itself."""

    fuzz: FuzzReport | None = None
    schema: SchemaFuzzReport | None = None
    security: list[Check] = field(default_factory=list)
    command: str = ""
    seconds: float = 0.0


def figure_lines(result: ChaosResult) -> list[str]:
    counts = result.figures.counts
    lines = []
    for name in MUST_BE_ZERO:
        mark = "ok  " if counts.get(name, 0) == 0 else "FAIL"
        lines.append(f"  {mark} {counts.get(name, 0):>6}  {FIGURE_TEXT[name]} (must be 0)")
    for name, text in FIGURE_TEXT.items():
        if name not in MUST_BE_ZERO:
            lines.append(f"       {counts.get(name, 0):>6}  {text} (reported)")
    return lines


def console_lines(result: ChaosResult) -> list[str]:
    i, t = result.injections, result.timings
    lines = [
        f"chaos: {result.config.runs} runs, seed {result.config.seed}, {t.get('total', 0):.0f} s"
        f" (storm {t.get('storm', 0):.0f} s, repair {t.get('repair', 0):.0f} s)",
        f"  injected: {i['crashes_by_step']} crashes ({i['answered_500']} answers 500),"
        f" registry windows {i['registry_windows']}"
        f" ({i['registry_503']} requests refused), BigQuery windows {i['bigquery_windows']}"
        f" ({i['bigquery_503']} inserts refused), {i['duplicate_publishes']} duplicates,"
        f" {i['suppressed_messages']} suppressed, {i['malformed_messages']} malformed",
        f"  real faults: kills {i['kills']} ({i['processes_killed']} processes; at a"
        f" completion the record was {i['kills_at_publish_records']}), pre-completion deletes"
        f" {i['pre_deletes']}, after completion {i['post_done']}"
        f" ({i['post_after_announcement']} after the announcement was seen; not carried out:"
        f" {i['post_skipped'][:3] or 'none'}),"
        f" foreign manifests {i['foreign_manifests']}, long outages {i['long_outages']},"
        f" late registrations {len(i['late_registrations'])} ({i['late_version_runs']} runs)",
        f"  deliveries: {i['delivery_attempts']} attempts {i['attempt_statuses']},"
        f" {i['dead_lettered']} dead-lettered; platform: {result.platform}",
        *figure_lines(result),
    ]
    if result.histories:
        lines += ["failing runs and their history:", *result.histories]
    missing = result.figures.failing.get("acked_missing_from_log") or []
    if missing:
        lines.append(f"acknowledged but not logged: {', '.join(missing)}")
    return lines


def fmt(value: Any) -> str:
    """A dict as "a 1, b 2" (markdown-friendly); anything else as str()."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
    return str(value)


def _table(rows: list[tuple[str, Any]], head: tuple[str, str]) -> list[str]:
    out = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    out += [f"| {a} | {b} |" for a, b in rows]
    return out


def _spread(s: dict[str, float], unit: str = "s") -> str:
    if not s.get("count"):
        return "none"
    return (
        f"{s['count']} windows, {s['min']}-{s['max']} {unit} each (mean {s['mean']}),"
        f" {s['total']} {unit} in all"
    )


def injected_rows(result: ChaosResult) -> list[tuple[str, Any]]:
    i, c = result.injections, result.config
    crashes = i["crashes_by_step"]
    spread = i["outputs_per_run"]
    return [
        ("runs (plan)", f"{i['runs']}: {fmt(i['runs_by_plan'])}"),
        ("outputs per run", f"{spread['min']:.0f} to {spread['max']:.0f}, mean {spread['mean']}"),
        (
            "workflow versions",
            f"{i['versions']} ({i['sharded_versions']} with a sharded pattern output), 3 workflows",
        ),
        ("objects written (first writes)", i["objects_written"]),
        ("overwrites (new generation)", f"{i['overwrites']} in {i['runs_with_overwrites']} runs"),
        ("runs with an unexpected object", i["runs_with_unexpected_objects"]),
        ("Storage notifications for those writes", i["storage_notifications"]),
        (
            "duplicate publishes (each notification 1 to 3 times, weights"
            f" {'/'.join(map(str, c.duplicates))})",
            i["duplicate_publishes"],
        ),
        ("deliveries in flight", c.concurrency),
        (
            f"handler crashes in code ({c.fault_rate:.0%} at each step a delivery reaches)",
            f"{sum(crashes.values())} in the log: {fmt(crashes)}; {i.get('answered_500', '?')}"
            " deliveries answered 500",
        ),
        (
            "registry outages",
            f"{_spread(i['registry_windows'])}; {i['registry_503']} requests answered 503",
        ),
        (
            "BigQuery outages",
            f"{_spread(i['bigquery_windows'])}; {i['bigquery_503']} inserts answered 503",
        ),
        (
            "notifications suppressed (never sent)",
            f"{i['suppressed_messages']} messages, closers of {i['suppressed_runs']} runs",
        ),
        ("malformed messages", i["malformed_messages"]),
        ("delivery attempts", f"{i['delivery_attempts']} (HTTP {fmt(i['attempt_statuses'])})"),
        ("acknowledged / dead-lettered", f"{i['acknowledged']} / {i['dead_lettered']}"),
        *real_fault_rows(result),
    ]


def _long(i: dict[str, Any], target: str) -> str:
    found = i["long_outages"].get(target)
    planned = i["long_outages_planned"].get(target, 0)
    if not found:
        return f"{planned} planned, none carried out"
    return (
        f"{found['count']} of {planned}, lasting {found['seconds']} s;"
        f" {found['dead_lettered_meanwhile']} messages dead-lettered meanwhile"
    )


def real_fault_rows(result: ChaosResult) -> list[tuple[str, Any]]:
    i = result.injections
    planned, done = i["post_planned"], i["post_done"]
    answers = [f"{r['status']} {r['reconcile']}" for r in i["late_registrations"]]
    skipped = f"; not carried out: {'; '.join(i['post_skipped'][:5])}" if i["post_skipped"] else ""
    return [
        (
            "SIGKILL of handler instances (process group)",
            f"{fmt(i['kills'])} ({i['processes_killed']} processes; planned"
            f" {fmt(i['kills_planned'])})",
        ),
        (
            "kills as a completion appeared: the run's record 0.5 s later",
            f"{fmt(i['kills_at_publish_records'])} (claimed: the kill landed between publish and"
            " mark, or before the claimant finished)",
        ),
        (
            "outputs deleted and written again before completion",
            f"{i['pre_deletes']} of {i['pre_deletes_planned']} planned",
        ),
        *[
            (f"after completion: {kind}", f"{done[kind]} of {planned[kind]} planned")
            for kind in planned
        ],
        (
            "changes after completion made once the announcement was seen",
            f"{i['post_after_announcement']} (the others raced the announcement){skipped}",
        ),
        ("foreign output.json written (moved away in the repair)", i["foreign_manifests"]),
        ("BigQuery outages longer than the retry span", _long(i, "bigquery")),
        ("registry outages longer than the retry span", _long(i, "registry")),
        (
            "versions registered after their outputs landed",
            f"{len(i['late_registrations'])} ({i['late_version_runs']} runs), registry answered"
            f" {fmt(dict(Counter(answers)))}",
        ),
    ]


def result_rows(result: ChaosResult) -> list[tuple[str, Any]]:
    counts = result.figures.counts
    rows = []
    for name, text in FIGURE_TEXT.items():
        suffix = " (must be 0)" if name in MUST_BE_ZERO else ""
        rows.append((text + suffix, f"**{counts.get(name, 0)}**"))
    return rows


def _security_lines(checks: list[Check]) -> list[str]:
    lines = []
    for check in checks:
        state = "unavailable" if check.unavailable else ("passed" if check.ok else "FAILED")
        lines.append(f"- **{check.name}**: {state}. {check.summary}")
        lines += [f"  - {detail}" for detail in check.details[:10]]
    return lines


def _fuzz_lines(extras: Extras) -> list[str]:
    lines = []
    if extras.fuzz is not None:
        f = extras.fuzz
        lines += [
            f"- **Event handler** (hypothesis, {f.examples} requests in {f.seconds:.0f} s:"
            f" {fmt(dict(f.by_kind))}): HTTP {fmt(dict(f.statuses))}; outcomes"
            f" {fmt(dict(f.outcomes))};"
            f" {f.rejected} rejected answers, {f.rejected_rows} rejected rows logged;"
            f" {len(f.expected_ids)} deliveries matched by id in the log, {len(f.missing_ids)}"
            f" missing. {'Passed' if f.ok else 'FAILED: ' + '; '.join(f.problems)[:500]}."
        ]
    if extras.schema is not None:
        s = extras.schema
        lines.append(
            f"- **Registry** (schemathesis, every check, {s.max_examples} examples per operation,"
            f" {s.seconds:.0f} s): {'passed' if s.ok else 'FAILED'}. {s.summary}"
        )
    return lines


def markdown(result: ChaosResult, extras: Extras) -> str:
    c, t, notes = result.config, result.timings, result.figures.notes
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    verdict = (
        "every must-be-zero figure is 0" if result.ok else "SOME MUST-BE-ZERO FIGURES ARE NOT 0"
    )
    lines = [
        "# Reliability: the chaos and fuzz suite",
        "",
        "Written by `make chaos` (`python -m tests.chaos`); do not edit by hand.",
        "The promise under test: every complete run is announced, exactly once in effect, with a",
        "manifest that matches the bucket, and every acknowledged delivery is in the event log,",
        "while everything fails at once. The suite drives the local platform (real emulators:",
        "fake-gcs-server, pstest, bqemulator, the functions served by functions-framework).",
        "",
        f"**Result: {verdict}.** Run {when} on {platform.machine()} with"
        f" {_cpus()} cores, Python {platform.python_version()}.",
        "",
        "## Command and seed",
        "",
        "```",
        extras.command,
        "```",
        "",
        f"Seed {c.seed}: it decides the plan (specs, runs, write order, duplicates, overwrites,"
        " failure markers, suppressed notifications, malformed messages, outage windows) and the"
        " handler's fault draws. Timing decides which delivery a fault or an outage hits.",
        "",
        "## The platform",
        "",
        "The local platform of `devstack/` (`Stack(concurrency=16)`), as `make run` starts it",
        "(its BigQuery emulator without per-insert time-travel snapshots: see `devstack/bq.py`).",
        f"Measured with **{result.injections.get('platform', HISTORIC_PLATFORM)}**,"
        f" {c.concurrency} deliveries in flight; the handler ran with a claim lease of"
        f" {c.lease_seconds:g} s and a revision quiet window (`TALLY_REVISION_QUIET_SECONDS`) of"
        f" {c.quiet_seconds:g} s.",
        "",
        "## What was injected",
        "",
        *_table(injected_rows(result), ("injection", "amount")),
        "",
        "Runs are written in waves (a wave starts when fewer than 150 notifications are",
        "undelivered), by 8 concurrent writers in a shuffled order; a run's last object is",
        "written once its other writes are done. A BigQuery window opens at a seeded offset",
        "after its wave starts; a registry window opens as the bridge delivers the first",
        "notification of a new workflow version (the handler caches specs: only a version's",
        "first deliveries need the registry). After its last attempt the bridge sends a",
        "message to the dead-letter topic.",
        "",
        "The real faults: SIGKILLs of a handler instance's process group at seeded moments, and",
        "of the busy instances as a completion message appears (between publish and mark; the",
        "run's record is read 0.5 s later to say where the kill landed); the supervisor replaces",
        "each. Outputs deleted and written again before completion; after completion an expected",
        "output rewritten, or deleted and written again, the optional output added late or",
        "deleted, an unexpected object added (half of them once the announcement was seen, half",
        "racing it); output.json deleted or edited by a user once it is there; the workflow's own",
        "output.json in some runs; BigQuery and registry outages held until a message was",
        "dead-lettered (longer than the push retry span; a registry outage starts with a SIGKILL",
        "of every serving instance, so that every spec cache is cold); versions registered only",
        "after their runs' outputs landed.",
        "",
        "The repair, as an operator would: the handler is redeployed without faults; the foreign",
        "output.json objects are moved away; the dead letters are replayed with",
        "`tally-replayed=true` (as `tally replay` does); after the claim lease and the quiet",
        "window, reconciliation of the open-run index, then one pass over every run folder",
        "(`tally reconcile --all`); then the platform is left until nothing moves.",
        "",
        "## What was checked, and the results",
        "",
        "The checker reads the truth from the bucket (completeness re-derived from the specs, not",
        "with the handler's code), every message on the completions topic (a pull subscription",
        "that kept them all), the dead-letter subscription and BigQuery.",
        "",
        *_table(result_rows(result), ("figure", "value")),
        "",
        f"Runs in the bucket: {fmt(notes.get('runs_in_bucket'))};"
        f" announced: {notes.get('runs_announced')};"
        f" completion messages: {notes.get('announcement_messages')};"
        f" acknowledged deliveries checked against the log: {notes.get('acked_in_window')}.",
        "",
        f"Event log rows of the chaos runs, by outcome: {fmt(notes.get('outcomes'))}.",
        "",
        f"Messages the bridge took: {notes.get('messages_taken_by_the_bridge')}; Storage changes"
        f" whose notification was checked: {notes.get('storage_changes_checked')}.",
        "",
        "Reconciliation: " + "; ".join(result.repair.reconcile_summaries),
        "",
        "## Fuzzing",
        "",
        *_fuzz_lines(extras),
        "",
        "## Security checks",
        "",
        *_security_lines(extras.security),
        "",
        "## Durations",
        "",
        f"Chaos run {t.get('total', 0):.0f} s (storm {t.get('storm', 0):.0f} s, repair"
        f" {t.get('repair', 0):.0f} s, check {t.get('check', 0):.0f} s); `make chaos` in all"
        f" {extras.seconds:.0f} s (limit: 20 minutes).",
        "",
    ]
    return "\n".join(lines)


def readme_summary(result: ChaosResult, extras: Extras) -> str:
    i, counts = result.injections, result.figures.counts
    crashes = sum(i["crashes_by_step"].values())
    zero = all(counts.get(name, 0) == 0 for name in MUST_BE_ZERO)
    security = "; ".join(f"{c.name}: {_short_state(c)}" for c in extras.security)
    fuzz = extras.fuzz
    schema = "passed" if extras.schema and extras.schema.ok else "see docs/reliability.md"
    return "\n".join(
        [
            "## Reliability",
            "",
            f"`make chaos` drives {i['runs']} runs ({i['objects_written']} objects,"
            f" {i['duplicate_publishes']} duplicate notifications, {i['overwrites']} overwrites)"
            f" through the local platform with 16 deliveries in flight while the handler crashes"
            f" at every step ({crashes} crashes), the registry and BigQuery go down"
            f" ({i['registry_windows'].get('count', 0)} + {i['bigquery_windows'].get('count', 0)}"
            f" windows), {i['suppressed_messages']} notifications are never sent and"
            f" {i['malformed_messages']} malformed messages are mixed in; then reconciliation"
            " runs once.",
            "",
            f"Real faults too: {i['processes_killed']} handler processes killed with SIGKILL,"
            f" {sum(i['post_done'].values())} changes after completion (rewrites, deletions, late"
            f" outputs, deleted and edited manifests), {i['foreign_manifests']} foreign manifests,"
            f" outages longer than the push retry span, {len(i['late_registrations'])} late"
            f" registrations; measured with {i.get('platform', HISTORIC_PLATFORM)}.",
            "",
            f"Result ({'all must-be-zero figures are 0' if zero else 'FAILED'}): "
            + "; ".join(f"{counts.get(name, 0)} {FIGURE_TEXT[name]}" for name in MUST_BE_ZERO)
            + f" ({counts.get('raw_duplicate_announcements', 0)} raw duplicate messages, same key"
            f" and content; {counts.get('revisions_after_the_first', 0)} later revisions).",
            "",
            f"Fuzzing: {fuzz.examples if fuzz else 0} handler requests, no 5xx;"
            f" schemathesis on the registry: {schema}."
            f" Security: {security}.",
            "",
            f"Seed {result.config.seed}; the chaos run {result.timings.get('total', 0) / 60:.1f}"
            f" minutes, `make chaos` in all {extras.seconds / 60:.1f}; figures and method:"
            " [docs/reliability.md](docs/reliability.md).",
            "",
        ]
    )


def _short_state(check: Check) -> str:
    if check.unavailable:
        return "could not be carried out here"
    if not check.ok:
        return "FAILED"
    if "offline" in check.summary:
        return "passed against the offline database only (PyPI's vulnerability service unreachable)"
    return "passed"


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def write_reports(result: ChaosResult, extras: Extras, docs: Path) -> list[Path]:
    full, short = docs / "reliability.md", docs / "readme-reliability.md"
    full.write_text(markdown(result, extras))
    short.write_text(readme_summary(result, extras))
    return [full, short]
