"""Reconciliation: re-derive what should have been announced from the bucket, which is the truth.

One code path, used four ways: a reconcile request message on the object-events topic (Cloud
Scheduler publishes one every N minutes; the registry one per newly registered version), the
`tally reconcile` CLI, and the local platform. Which runs it visits:

- by default, the runs that may be open: tally's open-run index (``_tally/open/``, one object per
  run that a delivery found incomplete, changed or blocked, removed once announced), so its cost
  grows with the open runs, not with the runs already announced;
- with a workflow version, a prefix, or ``all=true``: every run folder under it, in lexicographic
  order (the deep check for runs none of whose notifications ever arrived).

For each run, at most `max_runs` per invocation, through the same ``Announcer`` as a delivery:
- a published revision that still matches the bucket is left alone (a deleted or edited
  ``output.json`` is restored from the record: never announced again);
- a claim older than the lease is taken over (its stored bytes published, outcome `reconciled`);
- a complete (or failed) run with no record is announced, outcome `reconciled`;
- a changed run is announced as its next revision once complete and quiet;
- an incomplete run past its spec's `deadline_minutes` is logged `stalled` once (a `_tally/stalled`
  marker created with ifGenerationMatch=0 makes the row unique per run).

The report's `next_page_token` (the last run examined) resumes the walk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta

from tally_handler.announce import OPEN_INDEX, Actor, run_prefix_of_index
from tally_handler.completeness import Assessment, Complete, Entry, Failed, ListRequest, assess
from tally_handler.delivery import Delivery, Reconcile
from tally_handler.errors import (
    NotTallys,
    PreconditionFailed,
    PrefixOutsideLayout,
    UnknownWorkflow,
    outcome_of,
)
from tally_handler.handler import Handler, claimant_of
from tally_handler.layout import TALLY_FOLDER, Run, RunOutput
from tally_handler.manifest import Record
from tally_handler.outcomes import Handled, Outcome, RunState
from tally_handler.rows import StorageOps
from tally_handler.spec import Spec

__all__ = [
    "LIST_PAGE",
    "RECONCILE_THREADS",
    "STALLED_MARKER",
    "ReconcileReport",
    "open_runs",
    "reconcile_request",
    "reconcile_runs",
    "run_prefixes",
]

STALLED_MARKER = TALLY_FOLDER + "stalled"
LIST_PAGE = 1000
RECONCILE_THREADS = 8  # runs of one page reconciled at once (the pool is shared by requests)
_RECONCILE_POOL = ThreadPoolExecutor(RECONCILE_THREADS, thread_name_prefix="tally-reconcile")
_ANNOUNCED = frozenset({Outcome.RECONCILED, Outcome.REVISED, Outcome.COMPLETED, Outcome.FAILED})


@dataclass
class ReconcileReport:
    examined: int = 0
    announced: list[str] = field(default_factory=list)
    stalled: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    announcing: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    already_announced: int = 0
    unknown: list[str] = field(default_factory=list)
    indexed: bool = False  # the runs came from the open-run index
    next_page_token: str | None = None
    results: list[tuple[Run, Handled]] = field(default_factory=list)

    def merge(self, part: ReconcileReport) -> None:
        """Add one run's report (reconciled on its own thread) to this page's."""
        for name in (f.name for f in fields(self)):
            value = getattr(self, name)
            if isinstance(value, list):  # every per-run list, whatever fields are added
                value.extend(getattr(part, name))
        self.already_announced += part.already_announced

    def summary(self) -> str:
        text = (
            f"reconciliation examined {self.examined} runs: {len(self.announced)} announced,"
            f" {len(self.stalled)} newly stalled, {len(self.incomplete)} incomplete,"
            f" {len(self.changed)} changed, {len(self.restored)} manifests restored,"
            f" {len(self.announcing)} being announced, {len(self.blocked)} blocked,"
            f" {self.already_announced} already announced, {len(self.unknown)} of unknown versions"
        )
        if self.next_page_token:
            text += f"; resumes after {self.next_page_token}"
        return text


def run_prefixes(handler: Handler, bucket: str, prefix: str | None) -> Iterator[str]:
    """Every run folder prefix under `prefix` (default: all runs), in lexicographic order."""
    layout = handler.layout
    root = layout.runs_root_prefix()
    levels = layout.depth - root.count("/")
    start = prefix or root
    if not start.startswith(root):
        raise PrefixOutsideLayout(f"prefix {start!r} is outside the layout's root {root!r}")
    yield from _walk(handler, bucket, root, start, levels)


def _walk(handler: Handler, bucket: str, here: str, want: str, levels: int):
    if levels == 0:
        yield here
        return
    token = None
    while True:
        prefixes, token = handler.storage.list_prefixes(bucket, here, token, LIST_PAGE)
        for child in prefixes:
            if not here and child == TALLY_FOLDER:
                continue  # tally's bucket-level folder (the open-run index) holds no runs
            # Only descend where the requested prefix and this folder overlap.
            if child.startswith(want) or want.startswith(child):
                yield from _walk(handler, bucket, child, want, levels - 1)
        if not token:
            return


def open_runs(handler: Handler, bucket: str) -> Iterator[str]:
    """The run folder prefixes in the open-run index, in lexicographic order."""
    token = None
    while True:
        page, token = handler.storage.list_page(
            bucket, OPEN_INDEX, ListRequest(None, None, LIST_PAGE, token)
        )
        for entry in page:
            yield run_prefix_of_index(OPEN_INDEX + entry.path)
        if not token:
            return


def _from_index(request: Reconcile) -> bool:
    return request.workflow is None and request.prefix is None and not request.every_run


def _runs(handler: Handler, bucket: str, request: Reconcile) -> Iterator[str]:
    if request.workflow is not None and request.version is not None:
        prefix = handler.layout.version_prefix(request.workflow, request.version)
        for run_prefix in run_prefixes(handler, bucket, prefix):
            output = handler.layout.match(run_prefix + "x")
            if output and (output.workflow, output.version) == (request.workflow, request.version):
                yield run_prefix
    elif request.prefix is not None or request.every_run:
        yield from run_prefixes(handler, bucket, request.prefix)
    else:
        assert _from_index(request)
        yield from open_runs(handler, bucket)


def reconcile_runs(
    handler: Handler,
    delivery: Delivery,
    bucket: str,
    request: Reconcile,
    max_runs: int,
    ops: StorageOps,
    dry_run: bool = False,
    now: datetime | None = None,
    concurrent: bool = True,
) -> ReconcileReport:
    """Reconcile one page of runs (RECONCILE_THREADS at a time, unless not ``concurrent``);
    every Storage call counts in ``ops``."""
    walker = handler.counting(ops)
    now = now or datetime.now(UTC)
    actor = Actor(delivery.delivery_id, claimant_of(delivery), last_attempt=True)
    # Only a run read from the open-run index has an entry to remove (a walk would otherwise
    # delete a missing object for every announced run).
    report = ReconcileReport(indexed=_from_index(request))
    page: list[Run] = []
    for run_prefix in _runs(walker, bucket, request):
        if request.page_token and run_prefix <= request.page_token:
            continue
        if report.examined == max_runs:
            break
        report.examined += 1
        report.next_page_token = run_prefix
        run_output = handler.layout.match(run_prefix + "x")
        if run_output is not None:
            page.append(handler.layout.run(bucket, run_output))
    else:
        report.next_page_token = None  # the walk finished

    def one(run: Run) -> tuple[ReconcileReport, StorageOps]:
        part, counted = ReconcileReport(indexed=report.indexed), StorageOps()
        _reconcile_run(handler.counting(counted), actor, run, dry_run, now, part)
        return part, counted

    # Runs are independent and a page is bound by Storage's latency (about three calls a run):
    # RECONCILE_THREADS at a time, each with its own report and counters, merged in walk order.
    # Every run is done before a failure is raised: no work goes on after the request answered.
    if concurrent:
        futures = [_RECONCILE_POOL.submit(one, run) for run in page]
        wait(futures)
        parts = [future.result() for future in futures]
    else:
        parts = [one(run) for run in page]
    for part, counted in parts:
        report.merge(part)
        ops.add(counted)
    return report


def _reconcile_run(
    handler: Handler,
    actor: Actor,
    run: Run,
    dry_run: bool,
    now: datetime,
    report: ReconcileReport,
) -> None:
    announcer = handler.announcer
    try:
        found = announcer.record(run)
    except NotTallys as exc:
        report.blocked.append(run.key)
        report.results.append(
            (run, Handled(outcome_of(exc), str(exc), run=run, run_state=RunState.BLOCKED))
        )
        return
    try:
        spec = handler.spec_for(run.workflow, run.version)
    except UnknownWorkflow:
        report.unknown.append(run.key)
        return
    if found is not None:
        if dry_run:
            report.already_announced += 1
        else:
            _reconcile_recorded(handler, actor, run, spec, *found, report)
        return
    entries = announcer.list_run(run)
    if not entries:
        if not dry_run and report.indexed:
            announcer.close(run)
        return
    config = handler.config
    found = assess(spec, entries, config.manifest_name, config.failure_marker)
    verdict = found.verdict()
    if isinstance(verdict, Complete | Failed):
        if dry_run:
            report.announced.append(run.key)
            return
        done = announcer.announce(run, verdict, actor, Outcome.RECONCILED)
        if isinstance(done, tuple):  # announced meanwhile, or adopted from before revisions
            _reconcile_recorded(handler, actor, run, spec, *done, report)
            return
        _note(report, run, done)
        return
    report.incomplete.append(run.key)
    if not dry_run:
        _stalled(handler, run, spec, entries, found, now, report)


def _stalled(
    handler: Handler,
    run: Run,
    spec: Spec,
    entries: list[Entry],
    found: Assessment,
    now: datetime,
    report: ReconcileReport,
) -> None:
    """Log an incomplete run past its deadline `stalled`, once per run."""
    first = min((e.time_created for e in entries if e.time_created), default=None)
    if spec.deadline_minutes is None or first is None:
        return
    deadline = datetime.fromisoformat(first) + timedelta(minutes=spec.deadline_minutes)
    if now < deadline:
        return
    try:
        handler.storage.write(run.bucket, run.prefix + STALLED_MARKER, b"{}", if_generation_match=0)
    except PreconditionFailed:
        return  # an earlier reconciliation logged it
    report.stalled.append(run.key)
    detail = (
        f"past its {spec.deadline_minutes}-minute deadline since {deadline.isoformat()};"
        f" missing: {', '.join(found.missing(limit=20))}"
    )
    report.results.append(
        (run, Handled(Outcome.STALLED, detail, run=run, run_state=RunState.STALLED))
    )


def _reconcile_recorded(
    handler: Handler,
    actor: Actor,
    run: Run,
    spec: Spec,
    record: Record,
    generation: int,
    report: ReconcileReport,
) -> None:
    """A run with an announcement record: finish its claim, re-announce it if it changed, or
    restore its manifest; then it leaves the open-run index."""
    announcer = handler.announcer
    settled = announcer.settle(run, record, generation, actor, Outcome.RECONCILED)
    if isinstance(settled, Handled):
        _note(report, run, settled)
        if settled.run_state is RunState.ANNOUNCING:
            return  # being announced: it stays in the open-run index
        found = announcer.record(run)  # finished a claim: the bucket may have moved on
        if found is None or not found[0].published:
            return
        record, generation = found
        result = announcer.review(run, spec, record, generation, None, actor)
        if result.outcome is not Outcome.AFTER_COMPLETION:
            _note(report, run, result)
        return
    record, generation = settled
    result = announcer.review(run, spec, record, generation, None, actor)
    if result.outcome is not Outcome.AFTER_COMPLETION:
        _note(report, run, result)
        return
    restored = announcer.restore_if_needed(run, record)
    if restored is not None:
        _note(report, run, restored)
    else:
        report.already_announced += 1
    if report.indexed:
        announcer.close(run)


def _note(report: ReconcileReport, run: Run, result: Handled) -> None:
    """File a run's result under the report's heading and keep it for the event log."""
    if result.outcome in _ANNOUNCED:
        report.announced.append(run.key)
    elif result.outcome is Outcome.RESTORED:
        report.restored.append(run.key)
    elif result.outcome is Outcome.BLOCKED:
        report.blocked.append(run.key)
    elif result.run_state is RunState.ANNOUNCING:
        report.announcing.append(run.key)
    elif result.outcome in (Outcome.CHANGED, Outcome.DEFERRED):
        result.outcome = Outcome.CHANGED  # reconciliation waits for the next request, never 503
        report.changed.append(run.key)
    report.results.append((run, result))


def reconcile_request(
    handler: Handler,
    delivery: Delivery,
    ops: StorageOps,
    record_run: Callable[[Handled, Run], None],
    republish: Callable[[dict[str, str]], str] | None,
) -> Handled:
    """A reconcile request message: reconcile one bounded page, queue the next, log every run."""
    assert delivery.reconcile is not None
    request = delivery.reconcile
    config = handler.config
    try:
        report = reconcile_runs(
            handler, delivery, config.outputs_bucket, request, config.reconcile_max_runs, ops
        )
    except PrefixOutsideLayout as exc:  # the one request problem found here, not in parsing
        return Handled(outcome_of(exc), f"{exc}; send a prefix inside the layout")
    for run, result in report.results:
        record_run(result, run)
    if report.next_page_token and republish is not None:
        attributes = {"tally-request": "reconcile", "page_token": report.next_page_token}
        for name in ("prefix", "workflow", "version"):
            value = getattr(request, name)
            if value:
                attributes[name] = value
        if request.every_run:
            attributes["all"] = "true"
        republish(attributes)
    result = Handled(Outcome.RECONCILED, report.summary())
    if request.workflow is not None and request.version is not None:
        # logged under the version it reconciled (the registry asks for one per registration)
        result.run_output = RunOutput(request.workflow, request.version, "", "")
    return result
