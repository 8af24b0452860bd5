"""Announcing a run: one content per key, manifests true to the bucket, announced runs stay so.

The protocol (docs/design.md, "Announcing a run") over three ports: Storage, the completions
Publisher and the EventLog. Both the handler and reconciliation announce through ``Announcer``.

A revision is announced in five steps, each repeatable:

1. **claim**: write the announcement record (``_tally/announcement.json``) holding the revision's
   manifest bytes: created with ``ifGenerationMatch=0`` for revision 1, or rewritten with the
   generation of the published revision it supersedes. One writer wins; the bytes never change.
2. **publish** exactly those bytes under the revision's idempotency key;
3. **log** the ``runs`` row (insert id = that key; the row is derived from the bytes alone);
4. **write** ``output.json`` (a copy of the bytes, for people and consumers);
5. **mark** the record published (``ifGenerationMatch`` of the claim), then drop the run from the
   open-run index.

A crash between steps leaves a claimed record: a redelivery of the claiming message resumes it, a
later delivery or reconciliation takes it over after the lease (``next_action``). Either publishes
the stored bytes, never a new listing, so a key never names two contents.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from tally_handler.completeness import Complete, Entry, Failed, ListRequest, evaluate
from tally_handler.config import Config
from tally_handler.delivery import rfc3339
from tally_handler.errors import PreconditionFailed, TransientError
from tally_handler.layout import TALLY_FOLDER, Run
from tally_handler.manifest import (
    RECORD_NAME,
    Claim,
    ClaimStatus,
    Manifest,
    NotTallys,
    Prior,
    Record,
    State,
    Superseded,
    adopted_record,
    build_manifest,
    outputs_from_object,
    split_manifest,
)
from tally_handler.outcomes import Handled, Outcome, RunState
from tally_handler.ports import CountedStorage, EventLog, Publisher, Storage
from tally_handler.rows import StorageOps, run_row
from tally_handler.spec import Spec

__all__ = [
    "FAILURE_REASON_BYTES",
    "LIST_PAGE",
    "OPEN_INDEX",
    "Action",
    "Actor",
    "Announcer",
    "Change",
    "Known",
    "next_action",
    "run_index_name",
    "run_prefix_of_index",
]

OPEN_INDEX = TALLY_FOLDER + "open/"  # bucket level: one empty object per run that may be open
FAILURE_REASON_BYTES = 4096
LIST_PAGE = 1000


class Action(StrEnum):
    """What to do with a record found in place (``next_action``)."""

    DONE = "done"  # published: nothing left to announce for this revision
    RESUME = "resume"  # claimed by this very message: a redelivery finishes its own claim
    TAKE_OVER = "take-over"  # claimed longer ago than the lease: finish it with its bytes
    WAIT = "wait"  # claimed recently by another delivery: it is announcing


def next_action(record: Record, claimant: str, now: datetime, lease_seconds: float) -> Action:
    if record.published:
        return Action.DONE
    if record.claim.claimant == claimant:
        return Action.RESUME
    if record.is_stale(now, lease_seconds):
        return Action.TAKE_OVER
    return Action.WAIT


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: a delivery (its message) or a reconciliation request."""

    delivery_id: str
    claimant: str  # the message, not just its id (emulator ids restart at m0)
    last_attempt: bool = False


@dataclass(frozen=True, slots=True)
class Change:
    """What a delivery says changed in an announced run: its own object, and when."""

    path: str
    generation: int | None  # None for a deletion
    time: str | None  # the change's time (the object's update, or the deletion's event time)


@dataclass(frozen=True, slots=True)
class Known:
    """An instance's memory of a run's published revision (saves the record read)."""

    revision: int
    state: State
    generations: Mapping[str, int]


def run_index_name(run: Run) -> str:
    return OPEN_INDEX + run.prefix.rstrip("/")


def run_prefix_of_index(name: str) -> str:
    return name[len(OPEN_INDEX) :] + "/"


class Announcer:
    def __init__(
        self,
        config: Config,
        storage: Storage,
        publisher: Publisher,
        event_log: EventLog,
        handler_version: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        remember: Callable[[Run, Known], None] = lambda run, known: None,
    ) -> None:
        self.config = config
        self.storage = CountedStorage(storage)
        self.publisher = publisher
        self.event_log = event_log
        self.handler_version = handler_version
        self.clock = clock
        self.remember = remember
        self._outputs_cache: dict[str, tuple[Mapping[str, Any], ...]] = {}  # shared by views

    def counting(self, ops: StorageOps) -> Announcer:
        """This announcer for one delivery: its Storage calls count in ``ops``."""
        view = copy.copy(self)
        view.storage = self.storage.counting(ops)
        return view

    # -- reading -----------------------------------------------------------------------------
    def record(self, run: Run) -> tuple[Record, int] | None:
        """The run's announcement record and its generation, or None before any claim."""
        found = self.storage.download(run.bucket, run.prefix + RECORD_NAME)
        if found is None:
            return None
        return Record.from_bytes(found[0]), found[1]

    def manifest(self, run: Run, record: Record) -> Manifest:
        """The record's manifest, with a split manifest's outputs read back in."""
        manifest = record.manifest_of(run)
        if manifest.outputs_object is None:
            return manifest
        name = run.prefix + manifest.outputs_object
        outputs = self._outputs_cache.get(name)
        if outputs is None:
            found = self.storage.download(run.bucket, name)
            if found is None:
                raise NotTallys(f"{name} (the manifest's outputs) is missing")
            outputs = outputs_from_object(found[0])
            self._outputs_cache.clear()  # one large run at a time is plenty
            self._outputs_cache[name] = outputs
        return replace(manifest, outputs=outputs)

    def known(self, run: Run, record: Record) -> Known:
        manifest = self.manifest(run, record)
        known = Known(record.revision, manifest.state, manifest.generations())
        if record.published:
            self.remember(run, known)
        return known

    # -- the first announcement --------------------------------------------------------------
    def announce(
        self,
        run: Run,
        verdict: Complete | Failed,
        actor: Actor,
        outcome: Outcome,
    ) -> Handled | tuple[Record, int]:
        """Announce revision 1 of a run found complete (or failed).

        Returns what this announcement did (Handled), or the record already in place with its
        generation (the caller settles it: resume, take over or wait, then compares it with its
        own object: a duplicate, or a change)."""
        if verdict.manifest is not None:
            found = self._manifest_in_place(run)
            if found is not None:  # blocked by a foreign object, or a record adopted or in place
                return found
        manifest = self._build(run, verdict, 1, None, actor)
        record = Record(1, ClaimStatus.CLAIMED, manifest.claim, manifest.to_bytes())
        try:
            record, generation = self._claim(run, manifest, record, 0)
        except PreconditionFailed:
            found = self.record(run)
            if found is None:
                return Handled(
                    Outcome.DEFERRED,
                    "the announcement record vanished during the claim; Pub/Sub redelivers",
                    run=run,
                )
            return found  # claimed first by another delivery (or an earlier attempt)
        self.config.faults.maybe_fail("after_claim")
        return self._finish(run, record, generation, outcome)

    def settle(
        self,
        run: Run,
        record: Record,
        generation: int,
        actor: Actor,
        outcome: Outcome,
    ) -> Handled | tuple[Record, int]:
        """Bring a record found in place to published: resume, take over, or wait for it.

        Returns the published record, or what finishing (or waiting for) a claim did."""
        now = self.clock()
        action = next_action(record, actor.claimant, now, self.config.claim_lease_seconds)
        if action is Action.DONE:
            return record, generation
        if action is Action.WAIT:
            return _announcing(
                Outcome.AFTER_COMPLETION,
                f"delivery {record.claim.delivery_id} claimed revision {record.revision} at"
                f" {record.claim.claimed_time} ({record.age_seconds(now):.0f} s ago) and is"
                f" announcing it; a claim older than {self.config.claim_lease_seconds} s is"
                " taken over",
                run,
                record.revision,
            )
        if action is Action.TAKE_OVER:
            taken = replace(record, claim=Claim.at(actor.delivery_id, actor.claimant, now))
            try:
                generation = self._write_record(run, taken, generation)
            except PreconditionFailed:
                return _announcing(
                    Outcome.AFTER_COMPLETION,
                    f"another delivery took over the stale claim of revision {record.revision}",
                    run,
                    record.revision,
                )
            record = taken
        return self._finish(run, record, generation, outcome)

    # -- revisions ---------------------------------------------------------------------------
    def review(
        self,
        run: Run,
        spec: Spec,
        record: Record,
        generation: int,
        change: Change | None,
        actor: Actor,
    ) -> Handled:
        """An announced run may have changed: announce the next revision once the run is complete
        again and quiet, or say what it waits for. ``change`` is the delivery's own object (None
        for reconciliation)."""
        entries = self.list_run(run)
        c = self.config
        verdict = evaluate(spec, entries, c.manifest_name, c.failure_marker)
        announced = self.manifest(run, record)
        revision = record.revision
        if not isinstance(verdict, Complete | Failed):
            self.ensure_open(run)
            return Handled(
                Outcome.CHANGED,
                f"announced as revision {revision}, the run is now incomplete: {verdict.reason};"
                f" it is announced again as revision {revision + 1} once complete",
                run=run,
                revision=revision,
                run_state=RunState.CHANGED,
                severity="ERROR",
            )
        now_state = State.FAILED if isinstance(verdict, Failed) else State.COMPLETE
        current = {o.entry.path: o.entry.generation for o in verdict.outputs}
        before = announced.generations()
        if now_state is announced.state and (now_state is State.FAILED or current == before):
            self.remember(run, Known(revision, announced.state, before))
            return Handled(
                Outcome.AFTER_COMPLETION,
                f"the run was announced as revision {revision} and the bucket still matches it",
                run=run,
                revision=revision,
                run_state=RunState(announced.state.value),
            )
        changed_times = [
            o.entry.updated or o.entry.time_created or ""
            for o in verdict.outputs
            if before.get(o.entry.path) != o.entry.generation
        ]
        if change is not None and change.generation is None and change.time:
            changed_times.append(change.time)
        latest = max((t for t in changed_times if t), default=None)
        quiet = c.revision_quiet_seconds
        if latest is not None and quiet > 0:
            waited = (self.clock() - _parse_time(latest)).total_seconds()
            if waited < quiet:
                self.ensure_open(run)
                own_latest = change is not None and _is_latest(change, verdict, latest)
                if own_latest and not actor.last_attempt:
                    return Handled(
                        Outcome.DEFERRED,
                        f"the run changed after revision {revision}; revision {revision + 1} is"
                        f" announced once it has been quiet for {quiet} s (last change"
                        f" {waited:.1f} s ago); Pub/Sub redelivers",
                        run=run,
                        revision=revision,
                        run_state=RunState.CHANGED,
                    )
                return Handled(
                    Outcome.CHANGED,
                    f"the run changed after revision {revision}; revision {revision + 1} is"
                    f" announced once it has been quiet for {quiet} s, by the delivery of the"
                    " latest change or by reconciliation",
                    run=run,
                    revision=revision,
                    run_state=RunState.CHANGED,
                )
        supersedes = Superseded(revision, announced.idempotency_key)
        manifest = self._build(run, verdict, revision + 1, supersedes, actor)
        prior = Prior(revision, announced.idempotency_key, record.published_time)
        claimed = Record(
            revision + 1,
            ClaimStatus.CLAIMED,
            manifest.claim,
            manifest.to_bytes(),
            history=(*record.history, prior),
        )
        try:
            claimed, new_generation = self._claim(run, manifest, claimed, generation)
        except PreconditionFailed:
            return _announcing(
                Outcome.CHANGED,
                f"another delivery is announcing revision {revision + 1}",
                run,
                revision + 1,
            )
        self.config.faults.maybe_fail("after_claim")
        return self._finish(run, claimed, new_generation, Outcome.REVISED)

    # -- the manifest object -----------------------------------------------------------------
    def manifest_event(
        self,
        run: Run,
        generation: int,
        md5: str | None,
        deleted: bool,
        replaced: bool,
    ) -> Handled:
        """A notification about ``output.json``: tally's own write, or someone else's doing."""
        name = run.prefix + self.config.manifest_name
        if replaced:
            return Handled(Outcome.IGNORED, f"{name}: an older generation, replaced", run=run)
        found = self.record(run)
        if found is None:
            if deleted:
                return Handled(Outcome.IGNORED, f"{name} deleted before any claim", run=run)
            return self._foreign_manifest(run) or Handled(
                Outcome.IGNORED, f"{name} is a tally manifest", run=run
            )
        record, _ = found
        if not record.published:
            return _announcing(
                Outcome.IGNORED,
                f"revision {record.revision} is being announced; its claimant writes {name}",
                run,
                record.revision,
            )
        if not deleted and self._is_tallys_copy(run, record, md5):
            return Handled(
                Outcome.IGNORED,
                "tally's own manifest",
                run=run,
                revision=record.revision,
            )
        return self.restore(run, record, None if deleted else generation)

    def _is_tallys_copy(self, run: Run, record: Record, md5: str | None) -> bool:
        """Whether output.json holds the record's bytes: by the notification's MD5, or (payload
        format NONE carries none) by reading it, so tally's own writes never loop."""
        if md5 is not None:
            return md5 == record.manifest_md5()
        found = self.storage.download(run.bucket, run.prefix + self.config.manifest_name)
        return found is None or found[0] == record.manifest

    def restore(self, run: Run, record: Record, over_generation: int | None) -> Handled:
        """Put the published revision's bytes back where a user deleted or edited them."""
        name = run.prefix + self.config.manifest_name
        try:
            self.storage.write(
                run.bucket, name, record.manifest, if_generation_match=over_generation or 0
            )
        except PreconditionFailed:
            return Handled(
                Outcome.IGNORED,
                f"{name} changed again meanwhile; its own notification decides",
                run=run,
                revision=record.revision,
            )
        return Handled(
            Outcome.RESTORED,
            f"{name} was {'edited' if over_generation else 'deleted'}; tally restored revision"
            f" {record.revision} from its record (announced runs are never announced again)",
            run=run,
            revision=record.revision,
            run_state=RunState.COMPLETE,
        )

    def restore_if_needed(self, run: Run, record: Record) -> Handled | None:
        """Reconciliation's check of a published run's ``output.json`` (one read)."""
        found = self.storage.download(run.bucket, run.prefix + self.config.manifest_name)
        if found is not None and found[0] == record.manifest:
            return None
        return self.restore(run, record, None if found is None else found[1])

    # -- the open-run index ------------------------------------------------------------------
    def ensure_open(self, run: Run) -> None:
        """Make reconciliation visit this run (one small object per run, written once).

        Best effort: a bucket that refuses the write for good (gone, no permission) must not turn
        every delivery into a retry; only a transient failure defers the delivery."""
        try:
            self.storage.write(run.bucket, run_index_name(run), b"", if_generation_match=0)
        except PreconditionFailed:
            pass  # already indexed
        except TransientError:
            raise
        except Exception as exc:  # the index only serves reconciliation: never retry for it
            _warn(f"could not add {run.key} to the open-run index: {exc!r}")

    def close(self, run: Run) -> None:
        self.storage.delete(run.bucket, run_index_name(run))

    def list_run(self, run: Run) -> list[Entry]:
        entries: list[Entry] = []
        token = None
        while True:
            page, token = self.storage.list_page(
                run.bucket, run.prefix, ListRequest(None, None, LIST_PAGE, token)
            )
            entries.extend(page)
            if not token:
                return entries

    # -- steps -------------------------------------------------------------------------------
    def _build(
        self,
        run: Run,
        verdict: Complete | Failed,
        revision: int,
        supersedes: Superseded | None,
        actor: Actor,
    ) -> Manifest:
        failed = isinstance(verdict, Failed)
        return build_manifest(
            run,
            revision=revision,
            state=State.FAILED if failed else State.COMPLETE,
            outputs=verdict.outputs,
            unexpected=verdict.unexpected,
            failure_reason=self._failure_reason(run) if failed else None,
            claim=Claim.at(actor.delivery_id, actor.claimant, self.clock()),
            handler_version=self.handler_version,
            supersedes=supersedes,
        )

    def _claim(self, run: Run, manifest: Manifest, record: Record, over: int) -> tuple[Record, int]:
        """Step 1; a manifest over 4 MiB first moves its lists to a content-addressed object.

        The run enters the open-run index first: a claimant that dies for good (its message
        dead-lettered, no other delivery to come) leaves a claim reconciliation still finds."""
        self.ensure_open(run)
        small, lists = split_manifest(manifest)
        if lists is not None:
            assert small.outputs_object is not None
            self.storage.write(run.bucket, run.prefix + small.outputs_object, lists)
            record = replace(record, manifest=small.to_bytes())
        return record, self._write_record(run, record, over)

    def _write_record(self, run: Run, record: Record, over: int) -> int:
        """Every write of the record carries the generation it replaces (0: none yet)."""
        return self.storage.write(
            run.bucket, run.prefix + RECORD_NAME, record.to_bytes(), if_generation_match=over
        )

    def _finish(self, run: Run, record: Record, generation: int, outcome: Outcome) -> Handled:
        manifest = record.manifest_of(run)
        if record.revision > 1 and outcome is not Outcome.RECONCILED:
            outcome = Outcome.REVISED
        elif manifest.state is State.FAILED and outcome is Outcome.COMPLETED:
            outcome = Outcome.FAILED
        self.publisher.publish(record.manifest, manifest.attributes())
        self.config.faults.maybe_fail("after_publish")
        self.event_log.write_run(run_row(manifest, outcome, self.handler_version))
        self.config.faults.maybe_fail("after_runs_row")
        written, note = self._write_manifest(run, record)
        published = replace(
            record,
            claim_status=ClaimStatus.PUBLISHED,
            published_time=rfc3339(self.clock()),
        )
        try:
            self._write_record(run, published, generation)
        except PreconditionFailed:
            return _announcing(
                outcome,
                f"announced revision {record.revision}, but another delivery took the claim over"
                " before it was marked; it publishes the same bytes under the same key",
                run,
                record.revision,
            )
        self.config.faults.maybe_fail("after_mark")
        if written is None:
            self.ensure_open(run)  # reconciliation restores output.json
        else:
            self.close(run)
        self.remember(run, Known(record.revision, manifest.state, manifest.generations()))
        return Handled(
            outcome,
            completion_seconds=_completion_seconds(manifest),
            detail=f"announced {manifest.state} revision {record.revision} with"
            f" {manifest.outputs_count} outputs (idempotency key {manifest.idempotency_key})"
            + note,
            run=run,
            revision=record.revision,
            run_state=RunState(manifest.state.value),
        )

    def _write_manifest(self, run: Run, record: Record) -> tuple[int | None, str]:
        """Step 4: ``output.json`` becomes a copy of the revision's bytes. Once a revision is
        claimed the name is tally's (a foreign object there blocked the claim): whatever was
        written there since (a user's edit, an earlier revision) is replaced."""
        name = run.prefix + self.config.manifest_name
        over = 0
        for _ in range(3):
            try:
                written = self.storage.write(
                    run.bucket, name, record.manifest, if_generation_match=over
                )
            except PreconditionFailed:
                found = self.storage.download(run.bucket, name)
                if found is not None and found[0] == record.manifest:
                    return found[1], ""
                over = 0 if found is None else found[1]
                continue
            return written, ""
        return None, f"; {name} kept changing: the run stays in the open-run index"

    def _manifest_in_place(self, run: Run) -> Handled | tuple[Record, int] | None:
        """Before the first claim, what sits where the manifest belongs: nothing (None), a
        foreign object (BLOCKED), or a manifest tally wrote with no record beside it (before
        revisions existed, or the record was deleted), adopted with its exact bytes so that it is
        never announced again."""
        name = run.prefix + self.config.manifest_name
        found = self.storage.download(run.bucket, name, max_bytes=8 * 1024 * 1024)
        if found is None:
            return None
        try:
            record = adopted_record(found[0], run)
        except NotTallys as exc:
            self.ensure_open(run)
            return Handled(
                Outcome.BLOCKED,
                f"gs://{run.bucket}/{name} is {exc}; tally announces this run once that object"
                " is moved away (then run `tally reconcile`)",
                run=run,
                run_state=RunState.BLOCKED,
            )
        try:
            generation = self._write_record(run, record, 0)
        except PreconditionFailed:
            return self.record(run)
        return record, generation

    def _foreign_manifest(self, run: Run) -> Handled | None:
        found = self._manifest_in_place(run)
        return found if isinstance(found, Handled) else None

    def _failure_reason(self, run: Run) -> str:
        found = self.storage.download(
            run.bucket,
            run.prefix + self.config.failure_marker,
            max_bytes=FAILURE_REASON_BYTES,
        )
        if found is None:
            return "the failure marker was removed"
        return found[0].decode("utf-8", errors="replace").strip() or "no reason given"


def _announcing(outcome: Outcome, detail: str, run: Run, revision: int) -> Handled:
    """What a delivery did while a claimant announces ``revision``: the run stays announcing."""
    return Handled(outcome, detail, run=run, revision=revision, run_state=RunState.ANNOUNCING)


def _completion_seconds(manifest: Manifest) -> float | None:
    """From the run's first output to the claim (the log-based completion latency metric)."""
    if manifest.first_output_time is None:
        return None
    delta = _parse_time(manifest.announced_time) - _parse_time(manifest.first_output_time)
    return round(max(delta.total_seconds(), 0.0), 3)


def _warn(message: str) -> None:
    """A structured WARNING line on stdout (Cloud Logging reads `severity`)."""
    sys.stdout.write(
        json.dumps({"severity": "WARNING", "message": message, "component": "event-handler"}) + "\n"
    )


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _is_latest(change: Change, verdict: Complete | Failed, latest: str) -> bool:
    """Whether the delivery's own change is the run's latest one (it then waits for quiet)."""
    if change.generation is None:
        return change.time is not None and _parse_time(change.time) >= _parse_time(latest)
    for output in verdict.outputs:
        if output.entry.path == change.path:
            own = output.entry.updated or output.entry.time_created
            return (
                output.entry.generation == change.generation
                and own is not None
                and (_parse_time(own) >= _parse_time(latest))
            )
    return False
