"""Reconciliation: re-derive what should have been announced from the bucket, which is the truth.

One code path, used three ways: a reconcile request message on the object-events topic (Cloud
Scheduler publishes one every N minutes), the `tally reconcile` CLI, and the local platform. For
each run folder under a prefix, in lexicographic order, at most `max_runs` per invocation:

- a run with a published manifest is skipped (running reconciliation twice changes nothing);
- a complete (or failed) run without one is announced through the same claim as a delivery,
  with outcome `reconciled`; a claim older than the lease is taken over;
- an incomplete run past its spec's `deadline_minutes` is logged `stalled` once (a `_tally/stalled`
  marker created with ifGenerationMatch=0 makes the row unique per run).

The report's `next_page_token` (the last run examined) resumes the walk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tally_handler import manifest as manifests
from tally_handler.adapters import PreconditionFailed, TransientError, UnknownWorkflow
from tally_handler.completeness import Complete, Entry, Failed, ListRequest, evaluate
from tally_handler.delivery import Delivery
from tally_handler.handler import Handler, Result
from tally_handler.layout import TALLY_FOLDER, RunKey
from tally_handler.outcomes import Outcome
from tally_handler.rows import StorageOps
from tally_handler.spec import Spec

STALLED_MARKER = TALLY_FOLDER + "stalled"
LIST_PAGE = 1000


@dataclass
class ReconcileReport:
    examined: int = 0
    announced: list[str] = field(default_factory=list)
    stalled: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    already_announced: int = 0
    unknown: list[str] = field(default_factory=list)
    next_page_token: str | None = None
    results: list[tuple[RunKey, Result]] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"reconciliation examined {self.examined} runs: {len(self.announced)} announced,"
            f" {len(self.stalled)} newly stalled, {len(self.incomplete)} incomplete,"
            f" {self.already_announced} already announced, {len(self.unknown)} of unknown versions"
        )
        if self.next_page_token:
            text += f"; resumes after {self.next_page_token}"
        return text


def run_prefixes(
    handler: Handler, bucket: str, prefix: str | None, ops: StorageOps
) -> Iterator[str]:
    """Every run folder prefix under `prefix` (default: all runs), in lexicographic order."""
    layout = handler.layout
    root = layout.runs_root_prefix()
    levels = layout.depth - root.count("/")
    start = prefix or root
    if not start.startswith(root):
        raise ValueError(f"prefix {start!r} is outside the layout's root {root!r}")
    yield from _walk(handler, bucket, root, start, levels, ops)


def _walk(handler: Handler, bucket: str, here: str, want: str, levels: int, ops: StorageOps):
    if levels == 0:
        yield here
        return
    token = None
    while True:
        prefixes, token = handler.storage.list_prefixes(bucket, here, token, ops, LIST_PAGE)
        for child in prefixes:
            # Only descend where the requested prefix and this folder overlap.
            if child.startswith(want) or want.startswith(child):
                yield from _walk(handler, bucket, child, want, levels - 1, ops)
        if not token:
            return


def _entries(handler: Handler, run: RunKey, ops: StorageOps) -> list[Entry]:
    entries: list[Entry] = []
    token = None
    while True:
        page, token = handler.storage.list_page(
            run.bucket, run.prefix, ListRequest(None, None, LIST_PAGE, token), ops
        )
        entries.extend(page)
        if not token:
            return entries


def reconcile_runs(
    handler: Handler,
    delivery: Delivery,
    bucket: str,
    prefix: str | None,
    page_token: str | None,
    max_runs: int,
    ops: StorageOps,
    dry_run: bool = False,
    now: datetime | None = None,
) -> ReconcileReport:
    now = now or datetime.now(UTC)
    report = ReconcileReport()
    for run_prefix in run_prefixes(handler, bucket, prefix, ops):
        if page_token and run_prefix <= page_token:
            continue
        if report.examined == max_runs:
            break
        report.examined += 1
        report.next_page_token = run_prefix
        run_output = handler.layout.match(run_prefix + "x")
        if run_output is not None:
            run = handler.layout.run_key(bucket, run_output)
            _reconcile_run(handler, delivery, run, ops, dry_run, now, report)
    else:
        report.next_page_token = None  # the walk finished
    return report


def _published(handler: Handler, run: RunKey, ops: StorageOps) -> bool:
    found = handler.storage.download(run.bucket, run.prefix + handler.config.manifest_name, ops)
    if found is None:
        return False
    try:
        return manifests.parse_manifest(found[0]).get("status") == "published"
    except ValueError:
        return False  # not a tally manifest: the claim reports it


def _reconcile_run(
    handler: Handler,
    delivery: Delivery,
    run: RunKey,
    ops: StorageOps,
    dry_run: bool,
    now: datetime,
    report: ReconcileReport,
) -> None:
    config = handler.config
    if _published(handler, run, ops):
        report.already_announced += 1
        return
    try:
        spec = handler.spec_for(run.workflow, run.version)
    except UnknownWorkflow:
        report.unknown.append(run.key)
        return
    entries = _entries(handler, run, ops)
    if not entries:
        return
    verdict = evaluate(spec, entries, config.manifest_name, config.failure_marker)
    if isinstance(verdict, Complete | Failed):
        report.announced.append(run.key)
        if not dry_run:
            result = handler.announce(delivery, spec, run, verdict, ops, Outcome.RECONCILED)
            report.results.append((run, result))
        return
    report.incomplete.append(run.key)
    first = min((e.time_created for e in entries if e.time_created), default=None)
    if spec.deadline_minutes is None or first is None or dry_run:
        return
    deadline = datetime.fromisoformat(first) + timedelta(minutes=spec.deadline_minutes)
    if now < deadline:
        return
    try:
        handler.storage.write(
            run.bucket, run.prefix + STALLED_MARKER, b"{}", ops, if_generation_match=0
        )
    except PreconditionFailed:
        return  # an earlier reconciliation logged it
    report.stalled.append(run.key)
    detail = (
        f"past its {spec.deadline_minutes}-minute deadline since {deadline.isoformat()};"
        f" missing: {', '.join(missing_outputs(spec, entries))}"
    )
    report.results.append((run, Result(Outcome.STALLED, detail, run_key=run)))


def missing_outputs(spec: Spec, entries: list[Entry], limit: int = 20) -> list[str]:
    """What a run still lacks: required paths, then patterns short of their count."""
    present = {entry.path for entry in entries}
    missing = [path for path in spec.required_paths if path not in present]
    for pattern in spec.required_patterns:
        found = sum(pattern.matches(path) for path in present)
        if found != pattern.count:
            missing.append(f"{pattern.pattern} ({found} of {pattern.count})")
    if len(missing) > limit:
        missing = [*missing[:limit], f"and {len(missing) - limit} more"]
    return missing


def reconcile_request(
    handler: Handler,
    delivery: Delivery,
    ops: StorageOps,
    write_event: Callable[[dict], None],
    event_row: Callable[..., dict],
    republish: Callable[[dict[str, str]], str] | None,
) -> Result:
    """A reconcile request message: reconcile one bounded page, queue the next, log every run."""
    assert delivery.reconcile is not None
    config = handler.config
    try:
        report = reconcile_runs(
            handler,
            delivery,
            config.outputs_bucket,
            delivery.reconcile.prefix,
            delivery.reconcile.page_token,
            config.reconcile_max_runs,
            ops,
        )
    except ValueError as exc:
        return Result(Outcome.REJECTED, f"{exc}; send a prefix inside the layout")
    except TransientError:
        raise
    for run, result in report.results:
        write_event(event_row(result, run))
    if report.next_page_token and republish is not None:
        attributes = {"tally-request": "reconcile", "page_token": report.next_page_token}
        if delivery.reconcile.prefix:
            attributes["prefix"] = delivery.reconcile.prefix
        republish(attributes)
    return Result(Outcome.RECONCILED, report.summary())
