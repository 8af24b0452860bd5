"""What one delivery does, from parsed input to outcome.

The decision for a finalize notification of an expected output:

1. Prove the run incomplete cheaply: look for one missing required output, starting after the
   delivery's own output in sorted order (outputs this instance already saw are skipped), with up
   to PROBES object reads, then with list pages of growing size (completeness.Scan).
2. Only a delivery that finds nothing missing lists the whole run folder; from that listing the
   announcer claims revision 1 and announces it (announce.Announcer). On one instance one such
   delivery of a run at a time lists and announces (``Finishers``); the others wait for it and
   most then find their object in what it announced. A run with a required pattern is counted
   by coalesced listings (coalesce.py); once one counted it complete, the instance's later
   deliveries of the run read its record instead.
3. An incomplete verdict is checked against the run's announcement record (one read, skipped when
   this instance knows the run announced): a run announced (or failed) stays so; a delivery
   naming a generation the announced revision does not list is a change, and the announcer
   decides whether a new revision is due.

Correctness rests on the bucket alone (listings are strongly consistent): the delivery of the last
required output to land always sees every other one. The per-instance PresenceCache only saves
reads; a stale entry can at worst send a delivery to the full listing or to the record, which
decide.
"""

from __future__ import annotations

import bisect
import copy
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from tally_handler.announce import Actor, Announcer, Change, Known, run_prefix_of_index
from tally_handler.coalesce import Coalescer
from tally_handler.completeness import (
    MAX_PAGE_SIZE,
    Complete,
    Entry,
    Failed,
    Incomplete,
    ListRequest,
    Scan,
    UnsatisfiableSpec,
    affects_completeness,
    assess,
    check_satisfiable,
    epoch_seconds,
    in_range,
    key_ranges,
    missing_path,
    sampled_split_points,
    split_points,
    write_rate,
)
from tally_handler.config import Config
from tally_handler.delivery import Delivery, EventType, Notification
from tally_handler.errors import NotTallys, RegistryUnavailable, UnknownWorkflow, outcome_of
from tally_handler.layout import TALLY_FOLDER, OutputKind, Run, RunOutput, classify
from tally_handler.manifest import Record, State
from tally_handler.outcomes import Handled, Outcome, RunState
from tally_handler.ports import CountedStorage, Storage
from tally_handler.rows import StorageOps
from tally_handler.spec import ExpectedPattern, Spec

__all__ = [
    "FINISH_WAIT_S",
    "LIST_THREADS",
    "PROBES",
    "Finishers",
    "Handler",
    "PresenceCache",
    "Work",
    "claimant_of",
]

PROBES = 3  # object reads before switching to list pages (see docs/benchmarks.md)
LIST_THREADS = 16  # key ranges of one whole-folder listing listed at once
FINISH_WAIT_S = 5.0  # the longest a delivery waits for another one finishing its run
_UNSET: object = object()


class PresenceCache:
    """Per instance: outputs known present, runs known announced (their revision's generations)
    and runs known in the open-run index (bounded, LRU)."""

    def __init__(self, max_runs: int = 1000) -> None:
        self._max_runs = max_runs
        self._present: OrderedDict[str, set[str]] = OrderedDict()
        self._announced: OrderedDict[str, Known] = OrderedDict()
        self._opened: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def present(self, run: str) -> set[str]:
        with self._lock:
            return set(self._present.get(run, ()))

    def count_present(self, run: str) -> int:
        """``len(present(run))`` without the copy (once per delivery of a 10,000-output run)."""
        with self._lock:
            return len(self._present.get(run, ()))

    def add_present(self, run: str, paths: set[str]) -> None:
        if self._max_runs <= 0:
            return
        with self._lock:
            self._present.setdefault(run, set()).update(paths)
            self._present.move_to_end(run)
            while len(self._present) > self._max_runs:
                self._present.popitem(last=False)

    def announced(self, run: str) -> Known | None:
        with self._lock:
            return self._announced.get(run)

    def add_announced(self, run: str, known: Known) -> None:
        if self._max_runs <= 0:
            return
        with self._lock:
            self._announced[run] = known
            self._announced.move_to_end(run)
            self._present.pop(run, None)
            self._opened.pop(run, None)
            while len(self._announced) > self._max_runs:
                self._announced.popitem(last=False)

    def first_to_open(self, run: str) -> bool:
        """True for the one delivery on this instance that adds the run to the open-run index;
        the run counts as opened from then on, so that its concurrent deliveries skip the write
        (they only raced it to a 412). ``forget_opened`` if the write fails."""
        if self._max_runs <= 0:
            return True
        with self._lock:
            if run in self._opened:
                return False
            self._opened[run] = None
            while len(self._opened) > 10 * self._max_runs:
                self._opened.popitem(last=False)
            return True

    def forget_opened(self, run: str) -> None:
        with self._lock:
            self._opened.pop(run, None)


class Finishers:
    """Per instance: one delivery at a time lists a run that looks complete and announces it.

    A run's last outputs often land together, so several of its deliveries find nothing missing
    at once; each would list the whole folder and try the claim, and all but one would be refused
    (412). Instead the others wait for the one in turn (at most ``wait_s``, then they go on as if
    alone) and first look at what it announced: a delivery whose object it lists is done. Only
    an optimisation: a waiter that finds its object unannounced decides as before."""

    def __init__(self, wait_s: float = FINISH_WAIT_S) -> None:
        self.wait_s = wait_s
        self._runs: dict[str, tuple[threading.Lock, list[int]]] = {}  # lock, deliveries at it
        self._guard = threading.Lock()

    @contextmanager
    def turn(self, run: str) -> Iterator[bool]:
        """The run's turn on this instance; yields whether another delivery had it first."""
        lock = self._enter(run, always=True)
        assert lock is not None
        held = lock.acquire(blocking=False)
        waited = not held
        try:
            if waited:
                held = lock.acquire(timeout=self.wait_s)
            yield waited
        finally:
            if held:
                lock.release()
            self._leave(run)

    def await_turn(self, run: str) -> bool:
        """Wait (at most ``wait_s``) while another delivery has the run's turn, without taking
        it; whether there was one. A delivery arriving meanwhile looks at its result first."""
        lock = self._enter(run, always=False)
        if lock is None:
            return False
        try:
            if lock.acquire(timeout=self.wait_s):
                lock.release()
        finally:
            self._leave(run)
        return True

    def waiting(self, run: str) -> int:
        """Deliveries of the run waiting at this instance (observability and tests)."""
        with self._guard:
            entry = self._runs.get(run)
            return entry[1][0] - 1 if entry else 0

    def _enter(self, run: str, always: bool) -> threading.Lock | None:
        with self._guard:
            entry = self._runs.get(run)
            if entry is None:
                if not always:
                    return None
                entry = self._runs[run] = (threading.Lock(), [0])
            entry[1][0] += 1
            return entry[0]

    def _leave(self, run: str) -> None:
        with self._guard:
            count = self._runs[run][1]
            count[0] -= 1
            if count[0] == 0:
                del self._runs[run]


@dataclass(frozen=True, slots=True)
class Work:
    """What one delivery of a run's object decides on, once its spec is known."""

    spec: Spec
    run: Run
    change: Change  # the delivery's own object
    kind: OutputKind
    actor: Actor
    written: str | None = None  # when the delivery's object was written (its timeCreated)


class Handler:
    def __init__(
        self,
        config: Config,
        storage: Storage,
        spec_for: Callable[[str, str], Spec],
        announcer: Announcer,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        cache: PresenceCache | None = None,
        coalescer: Coalescer | object | None = _UNSET,
    ) -> None:
        self.config = config
        self.layout = config.layout
        self.storage = CountedStorage(storage)
        self.spec_for = spec_for
        self.announcer = announcer
        self.clock = clock
        self.cache = cache if cache is not None else PresenceCache(config.presence_cache_runs)
        # Whole-folder listings of runs with required patterns: coalesced per instance (None: off)
        self.coalescer: Coalescer | None = (
            Coalescer.from_env() if coalescer is _UNSET else coalescer  # type: ignore[assignment]
        )
        self.finishers = Finishers()
        self._splits: OrderedDict[str, tuple[str, ...]] = OrderedDict()  # key ranges per run
        self._splits_lock = threading.Lock()
        announcer.remember = lambda run, known: self.cache.add_announced(run.key, known)

    def counting(self, ops: StorageOps) -> Handler:
        """This handler for one delivery: its Storage calls, and its announcer's, count in
        ``ops``. Configuration, caches, coalescer and key ranges stay shared."""
        view = copy.copy(self)
        view.storage = self.storage.counting(ops)
        view.announcer = self.announcer.counting(ops)
        return view

    # -- notifications -------------------------------------------------------------------------
    def notification(self, delivery: Delivery, ops: StorageOps) -> Handled:
        """One notification; its Storage calls count in ``ops`` (its events row's)."""
        n = delivery.notification
        assert n is not None
        if n.name.startswith(TALLY_FOLDER):
            indexed = self.layout.match(run_prefix_of_index(n.name) + "_")
            result = Handled(Outcome.IGNORED, "tally's own object (the open-run index)")
            if indexed is not None:  # logged under its run
                result.run_output = RunOutput(indexed.workflow, indexed.version, indexed.run_id, "")
                result.run = self.layout.run(n.bucket, indexed)
            return result
        run_output = self.layout.match(n.name)
        if run_output is None:
            return Handled(
                Outcome.IGNORED,
                f"{n.name!r} does not match the layout {self.layout.template}; write run outputs"
                " there, or set TALLY_LAYOUT",
            )
        run = self.layout.run(n.bucket, run_output)
        try:
            result = self.counting(ops)._notification(delivery, n, run_output, run)
        except (UnsatisfiableSpec, NotTallys) as exc:  # permanent: logged, never retried
            result = Handled(outcome_of(exc), str(exc), run_state=RunState.BLOCKED)
        result.run_output = run_output
        result.run = result.run or run
        return result

    def _notification(
        self, delivery: Delivery, n: Notification, output: RunOutput, run: Run
    ) -> Handled:
        kind = classify(output.path, self.config.manifest_name, self.config.failure_marker)
        deleted = n.event_type in (EventType.OBJECT_DELETE, EventType.OBJECT_ARCHIVE)
        early = self._not_for_completeness(n, run, kind, deleted)
        if early is not None:
            return early
        try:
            spec = self.spec_for(output.workflow, output.version)
        except UnknownWorkflow as exc:
            self._ensure_open(run)
            return Handled(outcome_of(exc), str(exc), run_state=RunState.RUNNING)
        except RegistryUnavailable as exc:
            return Handled(outcome_of(exc), f"{exc}; Pub/Sub redelivers")
        check_satisfiable(spec, self.config.manifest_name, self.config.failure_marker)
        expected = spec.expects(output.path) if kind is OutputKind.OUTPUT else None
        if kind is OutputKind.OUTPUT and expected is None:
            return Handled(
                Outcome.UNEXPECTED,
                f"{output.path!r} is not an expected output of {spec.workflow}"
                f" {spec.version}; it is listed in the manifest as unexpected",
            )
        actor = Actor(delivery.delivery_id, claimant_of(delivery), delivery.last_attempt)
        change = Change(
            output.path,
            None if deleted else n.generation,
            (n.event_time or delivery.publish_time) if deleted else None,
        )
        work = Work(spec, run, change, kind, actor, n.time_created)
        if covered := self._announced_here(work):
            return covered
        known = self.cache.announced(run.key)
        if deleted:
            return self._against_record(
                work,
                Handled(
                    Outcome.IGNORED,
                    "a deletion before the run was announced: completeness is re-checked from"
                    " the bucket by the run's next delivery or by reconciliation",
                ),
            )
        if known is not None:  # announced, as this instance knows, and this object differs
            found = self.announcer.record(run)
            if found is not None:
                return self._with_record(work, *found)
        return self._output(work)

    def _output(self, work: Work) -> Handled:
        """A new generation of an expected output or of the failure marker."""
        spec, run, change = work.spec, work.run, work.change
        if work.kind is OutputKind.OUTPUT and not affects_completeness(spec, change.path):
            return self._against_record(
                work,
                Handled(
                    Outcome.RECORDED,
                    f"{change.path!r} is optional: it is listed in the manifest if present when"
                    " the run completes, and never waited for",
                    run_state=RunState.RUNNING,
                ),
            )
        if work.kind is OutputKind.FAILURE_MARKER:
            return self._conclude(work, self._scan(spec, run, "", exhaustive=True))
        coalesced = self.coalescer is not None and bool(spec.required_patterns)
        # Runs with a pattern don't wait here (a backlog's deliveries would all be held for the
        # whole announcement): once counted complete they read the record, and wait only while
        # it is not written yet (_counted).
        waited = not coalesced and self.finishers.await_turn(run.key)
        if waited and (covered := self._announced_here(work)):
            return covered
        self.cache.add_present(run.key, {change.path})
        verdict = self._probe(work)
        if verdict is None and coalesced:
            verdict = self._counted(work)
            if isinstance(verdict, Handled):
                return verdict
        if isinstance(verdict, Incomplete):
            return self._conclude(work, verdict)
        return self._finish(work, verdict)

    def _counted(self, work: Work) -> Handled | Complete | Incomplete | Failed:
        """Nothing found missing in a run with a required pattern: the coalesced whole-folder
        listing decides; but once this instance listed the run complete, its record (one read)
        says more cheaply whether a delivery announced it."""
        assert self.coalescer is not None
        if self.coalescer.counted_complete(work.run.key):
            found = self.announcer.record(work.run)
            if found is None and self.finishers.await_turn(work.run.key):
                # no record yet: a delivery here may be announcing from that listing; wait for it
                if covered := self._announced_here(work):
                    return covered
                found = self.announcer.record(work.run)
            if found is not None:
                return self._with_record(work, *found)
        return self._whole_folder(work)

    def _finish(self, work: Work, verdict: Complete | Failed | None) -> Handled:
        """The run looks complete: one delivery at a time per instance lists it (if no listing
        decided yet) and announces it; one that waited is done if it announced its object."""
        with self.finishers.turn(work.run.key) as waited:
            if waited and (covered := self._announced_here(work)):
                return covered
            if verdict is None:  # nothing found missing: the whole folder decides
                verdict = self._scan(work.spec, work.run, "")
            return self._conclude(work, verdict)

    def _announced_here(self, work: Work) -> Handled | None:
        """After-completion if this instance knows the run announced with this very object."""
        known = self.cache.announced(work.run.key)
        if known is not None and _matches(known, work.change, work.kind):
            return self._after_completion(known.revision, known.state)
        return None

    def _conclude(self, work: Work, verdict: Complete | Incomplete | Failed) -> Handled:
        """Act on a verdict about the run: announce it, or record the delivery."""
        run = work.run
        self.config.faults.maybe_fail("after_listing")
        if isinstance(verdict, Incomplete):
            return self._against_record(
                work, Handled(Outcome.RECORDED, verdict.reason, run_state=RunState.RUNNING)
            )
        done = self.announcer.announce(run, verdict, work.actor, Outcome.COMPLETED)
        if isinstance(done, Handled):
            return done
        return self._with_record(work, *done)

    def _not_for_completeness(
        self, n: Notification, run: Run, kind: OutputKind, deleted: bool
    ) -> Handled | None:
        """tally's own objects, metadata updates and replaced generations change no verdict."""
        if kind is OutputKind.TALLY_INTERNAL:
            return Handled(Outcome.IGNORED, "tally's own object")
        if n.event_type is EventType.OBJECT_METADATA_UPDATE:
            return Handled(Outcome.IGNORED, f"{n.event_type} does not change which outputs exist")
        replaced = deleted and n.overwritten_by_generation is not None
        if kind is OutputKind.MANIFEST:
            return self.announcer.manifest_event(run, n.generation, n.md5, deleted, replaced)
        if replaced:
            return Handled(
                Outcome.IGNORED,
                f"generation {n.generation} was replaced by generation"
                f" {n.overwritten_by_generation}, whose own notification counts",
            )
        return None

    def _against_record(self, work: Work, open_result: Handled) -> Handled:
        """The run looked open from this delivery: unless its record says otherwise, it is."""
        found = self.announcer.record(work.run)
        if found is None:
            if open_result.outcome is not Outcome.IGNORED:
                self._ensure_open(work.run)
            return open_result
        return self._with_record(work, *found)

    def _with_record(self, work: Work, record: Record, generation: int) -> Handled:
        run = work.run
        settled = self.announcer.settle(run, record, generation, work.actor, Outcome.COMPLETED)
        if not isinstance(settled, Handled):
            return self._announced(work, *settled)
        if self._covered(work, record):
            return settled  # the claim lists this very object: nothing more to look at
        if settled.run_state is RunState.ANNOUNCING:
            # Another delivery is announcing from a listing that may predate this change.
            if work.actor.last_attempt:
                self.announcer.ensure_open(run)  # reconciliation reviews it
                return Handled(
                    Outcome.CHANGED,
                    f"{settled.detail}; this change is not in its claim: reconciliation"
                    " reviews the run",
                    revision=record.revision,
                    run_state=RunState.ANNOUNCING,
                )
            return Handled(
                Outcome.DEFERRED,
                f"{settled.detail}; this change is not in its claim and is examined once the"
                " claim is published; Pub/Sub redelivers",
                revision=record.revision,
                run_state=RunState.ANNOUNCING,
            )
        # This delivery finished a claim (a resume or a takeover) that predates its own change.
        found = self.announcer.record(run)
        if found is None or not found[0].published:
            return settled
        then = self._announced(work, *found)
        if then.outcome is Outcome.AFTER_COMPLETION:
            return settled
        then.detail = f"{settled.detail}; then: {then.detail}"
        return then

    def _covered(self, work: Work, record: Record) -> bool:
        """Whether the record's revision already says what this delivery says."""
        try:
            manifest = self.announcer.manifest(work.run, record)
        except NotTallys:
            return False
        known = Known(record.revision, manifest.state, manifest.generations())
        return _matches(known, work.change, work.kind)

    def _announced(self, work: Work, record: Record, generation: int) -> Handled:
        """The run has a published revision: is this delivery a duplicate, or a change?"""
        run, kind = work.run, work.kind
        try:
            known = self.announcer.known(run, record)
        except NotTallys as exc:
            return Handled(outcome_of(exc), str(exc), run_state=RunState.BLOCKED)
        if _matches(known, work.change, kind):
            return self._after_completion(known.revision, known.state)
        marker = run.prefix + self.config.failure_marker
        if (
            known.state is State.FAILED
            and kind is not OutputKind.FAILURE_MARKER
            and self.storage.exists(run.bucket, marker)
        ):
            return self._after_completion(known.revision, known.state)
        return self.announcer.review(run, work.spec, record, generation, work.change, work.actor)

    @staticmethod
    def _after_completion(revision: int, state: State) -> Handled:
        return Handled(
            Outcome.AFTER_COMPLETION,
            f"the run was announced {state} (revision {revision}); this delivery changes nothing",
            revision=revision,
            run_state=RunState(state.value),
        )

    def _ensure_open(self, run: Run) -> None:
        # Safe to let concurrent deliveries skip: if this write fails, this delivery is retried
        # (deferred) and writes it then.
        if self.cache.first_to_open(run.key):
            try:
                self.announcer.ensure_open(run)
            except BaseException:
                self.cache.forget_opened(run.key)
                raise

    def _probe(self, work: Work) -> Complete | Incomplete | Failed | None:
        """Incomplete as soon as one required output is missing; after PROBES reads, a Scan's
        verdict; None if the reads found nothing missing: then the whole folder decides."""
        spec, run, own = work.spec, work.run, work.change.path
        required = spec.required_paths
        known = self.cache.present(run.key)
        start = bisect.bisect_right(required, own)
        probes = 0
        for path in required[start:] + required[:start]:
            if path in known:
                continue
            if probes == PROBES:
                return self._scan(spec, run, own)
            probes += 1
            if not self.storage.exists(run.bucket, run.prefix + path):
                return missing_path(path)
            self.cache.add_present(run.key, {path})
        return None

    def _whole_folder(self, work: Work) -> Complete | Incomplete | Failed:
        """The whole folder's verdict for a run with a required pattern (counted over the whole
        folder, so every delivery needs it), through the coalescing gate: one listing covers
        every delivery of the run that arrived on this instance before it started (coalesce.py)."""
        spec, run, own = work.spec, work.run, work.change.path
        assert self.coalescer is not None
        needed = sum(pattern.count for pattern in spec.required_patterns)
        expected = spec.expects(own)
        counted = own if isinstance(expected, ExpectedPattern) and expected.required else ""
        delivered = self.cache.count_present(run.key)  # a few of them exact paths: near enough
        listing = self.coalescer.turn(
            run.key, counted, needed, epoch_seconds(work.written), delivered
        )
        if listing is None:
            return Incomplete(
                "a newer delivery of this run on this instance lists the run folder after this"
                " output was written (coalesced listing)"
            )
        self.storage.ops.listing_reason = listing.reason.value
        matched = rate = None
        listed: frozenset[str] = frozenset()
        try:
            entries = self._list_folder(run, needed + len(spec.required_paths))
            found = assess(spec, entries, self.config.manifest_name, self.config.failure_marker)
            matched = found.pattern_outputs
            listed = frozenset(entry.path for entry in entries)
            rate = write_rate(entries, newest=needed - matched)
        finally:
            self.coalescer.finish(run.key, listing.token, matched, listed, rate)
        return found.verdict(exhaustive=False)  # as an output's Scan of the whole folder

    def _list_folder(self, run: Run, expected: int) -> list[Entry]:
        """Every object of the run folder, its key ranges (split at the previous listing's
        every 1,000th name; at the first listing here, at the outputs delivered here so far,
        of the ``expected`` ones) listed in parallel: about one page's latency at any size."""
        with self._splits_lock:
            splits = self._splits.get(run.key)
        if splits is None:
            splits = sampled_split_points(sorted(self.cache.present(run.key)), expected)
        ranges = key_ranges(splits)
        counted = [self.storage.counting(StorageOps()) for _ in ranges]

        def one(index: int) -> list[Entry]:
            start, end = ranges[index]
            entries: list[Entry] = []
            token = None
            while True:
                request = ListRequest(start, end, MAX_PAGE_SIZE, token)
                page, token = counted[index].list_page(run.bucket, run.prefix, request)
                entries += in_range(page, start, end)
                if not token or (end is not None and page and page[-1].path >= end):
                    return entries

        if len(ranges) == 1:
            found = one(0)
        else:
            found = [e for part in _LIST_POOL.map(one, range(len(ranges))) for e in part]
        for part in counted:
            self.storage.ops.add(part.ops)
        with self._splits_lock:
            self._splits[run.key] = split_points([e.path for e in found])
            self._splits.move_to_end(run.key)
            while len(self._splits) > 100:
                self._splits.popitem(last=False)
        return found

    def _scan(
        self, spec: Spec, run: Run, start_path: str, exhaustive: bool = False
    ) -> Complete | Incomplete | Failed:
        scan = Scan(
            spec,
            start_path,
            self.config.manifest_name,
            self.config.failure_marker,
            exhaustive=exhaustive,
        )
        while (request := scan.next_request()) is not None:
            entries, token = self.storage.list_page(run.bucket, run.prefix, request)
            scan.feed(entries, token)
        assert scan.result is not None
        return scan.result


_LIST_POOL = ThreadPoolExecutor(LIST_THREADS, thread_name_prefix="tally-list")


def claimant_of(delivery: Delivery) -> str:
    """Who holds a claim: the message, not just its id (emulator ids restart at m0)."""
    return f"{delivery.source}:{delivery.delivery_id}:{delivery.publish_time or ''}"


def _matches(known: Known, change: Change, kind: OutputKind) -> bool:
    """Whether the delivery's object is exactly what the announced revision says."""
    if kind is OutputKind.FAILURE_MARKER:
        return (change.generation is not None) == (known.state is State.FAILED)
    announced = known.generations.get(change.path)
    if change.generation is None:
        return announced is None  # deleting what the revision does not list changes nothing
    return announced == change.generation
