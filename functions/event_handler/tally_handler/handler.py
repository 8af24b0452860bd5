"""What one delivery does, from parsed input to outcome.

The decision for a finalize notification of an expected output:

1. Prove the run incomplete cheaply: look for one missing required output, starting after the
   delivery's own output in sorted order (outputs this instance already saw are skipped), with up
   to PROBES object reads, then with list pages of growing size (completeness.Scan).
2. Only a delivery that finds nothing missing lists the whole run folder; from that listing it
   builds the manifest and claims the run (create-if-absent), publishes the announcement, and marks
   the manifest published. A redelivery of the same message resumes its own claim; a claim older
   than the lease is taken over with a generation precondition.

Correctness rests on the bucket alone (listings are strongly consistent): the delivery of the last
required output to land always sees every other one. The per-instance PresenceCache only saves
reads; a stale entry can at worst send a delivery to the full listing, which decides.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from tally_handler import manifest as manifests
from tally_handler.adapters import (
    PreconditionFailed,
    RegistryUnavailable,
    StorageGateway,
    UnknownWorkflow,
)
from tally_handler.completeness import Complete, Failed, Incomplete, Scan, affects_completeness
from tally_handler.config import Config
from tally_handler.delivery import Delivery, EventType
from tally_handler.layout import OutputKind, RunKey, RunOutput, classify
from tally_handler.outcomes import Outcome
from tally_handler.rows import StorageOps, run_row
from tally_handler.spec import Spec

PROBES = 3  # object reads before switching to list pages (see docs/benchmarks.md)
FAILURE_REASON_BYTES = 4096


@dataclass(slots=True)
class Result:
    """What the handler did with one delivery: one event log row's worth."""

    outcome: Outcome
    detail: str
    run_output: RunOutput | None = None
    run_key: RunKey | None = None
    announced: dict | None = None  # the published manifest, when this delivery announced the run
    manifest_generation: int | None = None


class PresenceCache:
    """Per instance: outputs known present, and runs known announced (bounded, LRU)."""

    def __init__(self, max_runs: int = 1000) -> None:
        self._max_runs = max_runs
        self._present: OrderedDict[str, set[str]] = OrderedDict()
        self._announced: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def present(self, run: str) -> set[str]:
        with self._lock:
            return set(self._present.get(run, ()))

    def add_present(self, run: str, paths: set[str]) -> None:
        if self._max_runs <= 0:
            return
        with self._lock:
            self._present.setdefault(run, set()).update(paths)
            self._present.move_to_end(run)
            while len(self._present) > self._max_runs:
                self._present.popitem(last=False)

    def announced(self, run: str) -> bool:
        with self._lock:
            return run in self._announced

    def add_announced(self, run: str) -> None:
        if self._max_runs <= 0:
            return
        with self._lock:
            self._announced[run] = None
            self._present.pop(run, None)
            while len(self._announced) > 10 * self._max_runs:
                self._announced.popitem(last=False)


class Handler:
    def __init__(
        self,
        config: Config,
        storage: StorageGateway,
        spec_for: Callable[[str, str], Spec],
        publish: Callable[[bytes, dict[str, str]], str],
        write_run: Callable[[dict], None],
        handler_version: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        cache: PresenceCache | None = None,
    ) -> None:
        self.config = config
        self.layout = config.layout
        self.storage = storage
        self.spec_for = spec_for
        self.publish = publish
        self.write_run = write_run
        self.handler_version = handler_version
        self.clock = clock
        self.cache = cache if cache is not None else PresenceCache(config.presence_cache_runs)

    # -- notifications -------------------------------------------------------------------------
    def notification(self, delivery: Delivery, ops: StorageOps) -> Result:
        n = delivery.notification
        assert n is not None
        run_output = self.layout.match(n.name)
        if run_output is None:
            return Result(
                Outcome.IGNORED,
                f"{n.name!r} does not match the layout {self.layout.template}; write run outputs"
                " there, or set TALLY_LAYOUT",
            )
        run_key = self.layout.run_key(n.bucket, run_output)
        kind = classify(run_output.path, self.config.manifest_name, self.config.failure_marker)
        if kind in (OutputKind.MANIFEST, OutputKind.TALLY_INTERNAL):
            return Result(Outcome.IGNORED, "tally's own object", run_output, run_key)
        if n.event_type is not EventType.OBJECT_FINALIZE:
            return Result(
                Outcome.IGNORED,
                f"{n.event_type} does not change which outputs exist"
                if n.event_type is EventType.OBJECT_METADATA_UPDATE
                else f"{n.event_type}: completeness is re-checked from the bucket by the"
                " run's next delivery or by reconciliation",
                run_output,
                run_key,
            )
        try:
            spec = self.spec_for(run_output.workflow, run_output.version)
        except UnknownWorkflow as exc:
            return Result(Outcome.UNKNOWN_WORKFLOW, str(exc), run_output, run_key)
        except RegistryUnavailable as exc:
            return Result(Outcome.DEFERRED, f"{exc}; Pub/Sub redelivers", run_output, run_key)

        if self.cache.announced(run_key.key):
            return Result(
                Outcome.AFTER_COMPLETION, "the run was already announced", run_output, run_key
            )
        if kind is OutputKind.OUTPUT and spec.expects(run_output.path) is None:
            return Result(
                Outcome.UNEXPECTED,
                f"{run_output.path!r} is not an expected output of {spec.workflow}"
                f" {spec.version}; it is listed in the manifest as unexpected",
                run_output,
                run_key,
            )
        if kind is OutputKind.OUTPUT and not affects_completeness(spec, run_output.path):
            return Result(
                Outcome.RECORDED,
                f"{run_output.path!r} is optional: it is listed in the manifest if present when"
                " the run completes, and never waited for",
                run_output,
                run_key,
            )
        if kind is OutputKind.FAILURE_MARKER:
            verdict = self._scan(spec, run_key, "", ops, exhaustive=True)
        else:
            self.cache.add_present(run_key.key, {run_output.path})
            verdict = self._decide(spec, run_key, run_output.path, ops)
        self.config.faults.maybe_fail("after_listing")
        if isinstance(verdict, Incomplete):
            return Result(Outcome.RECORDED, verdict.reason, run_output, run_key)
        result = self.announce(delivery, spec, run_key, verdict, ops, Outcome.COMPLETED)
        result.run_output = run_output
        return result

    def _decide(self, spec: Spec, run: RunKey, own: str, ops: StorageOps):
        """Incomplete as soon as one required output is missing; else the full listing's verdict."""
        required = spec.required_paths
        known = self.cache.present(run.key)
        start = bisect.bisect_right(required, own)
        probes = 0
        for path in required[start:] + required[:start]:
            if path in known:
                continue
            if probes == PROBES:
                return self._scan(spec, run, own, ops)
            probes += 1
            if not self.storage.exists(run.bucket, run.prefix + path, ops):
                return Incomplete(f"expected output {path!r} is not in the run folder yet", path)
            self.cache.add_present(run.key, {path})
        return self._scan(spec, run, "", ops)  # nothing missing: the whole folder decides

    def _scan(
        self, spec: Spec, run: RunKey, start_path: str, ops: StorageOps, exhaustive: bool = False
    ) -> Complete | Incomplete | Failed:
        scan = Scan(
            spec,
            start_path,
            self.config.manifest_name,
            self.config.failure_marker,
            exhaustive=exhaustive,
        )
        while (request := scan.next_request()) is not None:
            entries, token = self.storage.list_page(run.bucket, run.prefix, request, ops)
            scan.feed(entries, token)
        assert scan.result is not None
        return scan.result

    # -- announcing ----------------------------------------------------------------------------
    def announce(
        self,
        delivery: Delivery,
        spec: Spec,
        run: RunKey,
        verdict: Complete | Failed,
        ops: StorageOps,
        outcome: Outcome,
    ) -> Result:
        """Claim, publish, log the runs row, mark: one announcement per run, in effect."""
        now = self.clock()
        if isinstance(verdict, Failed):
            outcome = Outcome.FAILED if outcome is Outcome.COMPLETED else outcome
            reason = self._failure_reason(run, verdict, ops)
            state = "FAILED"
        else:
            reason, state = None, "COMPLETE"
        claim = manifests.Claim(delivery.delivery_id, claimant_of(delivery), now)
        manifest = manifests.build_manifest(
            run,
            state=state,
            status=manifests.Status.CLAIMED,
            outputs=verdict.outputs,
            unexpected=verdict.unexpected,
            failure_reason=reason,
            claim=claim,
            handler_version=self.handler_version,
        )
        name = run.prefix + self.config.manifest_name
        manifest, extra = manifests.split_manifest(manifest)
        if extra is not None:
            self.storage.write(run.bucket, run.prefix + manifest["outputs_object"], extra, ops)
        try:
            generation = self.storage.write(
                run.bucket, name, manifests.to_bytes(manifest), ops, if_generation_match=0
            )
        except PreconditionFailed:
            taken = self._existing_claim(delivery, run, manifest, ops, now)
            if isinstance(taken, Result):
                return taken
            manifest, generation = taken
        self.config.faults.maybe_fail("after_claim")

        published = manifests.mark_published(manifest, self.clock())
        self.publish(manifests.to_bytes(published), manifests.completion_attributes(published))
        self.config.faults.maybe_fail("after_publish")
        # The runs row before the mark: a published manifest then means every step is done, and
        # a failed row write leaves a claim that a redelivery or a takeover finishes.
        self.write_run(
            run_row(
                published,
                outcome,
                generation,
                published["published_at"],
                delivery.delivery_id,
                self.handler_version,
            )
        )
        try:
            self.storage.write(
                run.bucket, name, manifests.to_bytes(published), ops, if_generation_match=generation
            )
        except PreconditionFailed:
            return Result(
                outcome,
                "announced, but another delivery took the claim over before it was marked"
                " published; it announces with the same idempotency key",
                run_key=run,
                announced=published,
            )
        self.config.faults.maybe_fail("after_mark")
        self.cache.add_announced(run.key)
        return Result(
            outcome,
            f"announced {published['state']} with {published['outputs_count']} outputs"
            f" (idempotency key {published['idempotency_key']})",
            run_key=run,
            announced=published,
            manifest_generation=generation,
        )

    def _existing_claim(
        self, delivery: Delivery, run: RunKey, mine: dict, ops: StorageOps, now: datetime
    ) -> tuple[dict, int] | Result:
        """Someone created the manifest first: resume, take over, or stand aside."""
        name = run.prefix + self.config.manifest_name
        found = self.storage.download(run.bucket, name, ops)
        if found is None:  # deleted in between: claim again from scratch next time
            return Result(Outcome.DEFERRED, "the manifest vanished during the claim", run_key=run)
        data, generation = found
        try:
            existing = manifests.parse_manifest(data)
        except ValueError as exc:
            return Result(
                Outcome.AFTER_COMPLETION,
                f"{name} exists but is not a tally manifest ({exc}); move it away and reconcile",
                run_key=run,
            )
        claim = existing.get("claim") or {}
        mine_claimant = claimant_of(delivery)
        if existing.get("status") == "published":
            self.cache.add_announced(run.key)
            if claim.get("claimant") == mine_claimant:
                # This very message announced the run; only its event row is left to write.
                return Result(
                    Outcome.FAILED if existing.get("state") == "FAILED" else Outcome.COMPLETED,
                    f"announced {existing['state']} by an earlier attempt of this message"
                    f" (idempotency key {existing['idempotency_key']})",
                    run_key=run,
                )
            return Result(
                Outcome.AFTER_COMPLETION,
                f"the run was announced by delivery {claim.get('delivery_id')}"
                f" at {existing.get('published_at')}",
                run_key=run,
            )
        if claim.get("claimant") == mine_claimant:
            return existing, generation  # a redelivery of the claiming message resumes
        if manifests.claim_is_stale(existing, now, self.config.claim_lease_seconds):
            try:
                generation = self.storage.write(
                    run.bucket, name, manifests.to_bytes(mine), ops, if_generation_match=generation
                )
            except PreconditionFailed:
                return Result(
                    Outcome.AFTER_COMPLETION,
                    "another delivery took over the stale claim first",
                    run_key=run,
                )
            return mine, generation
        return Result(
            Outcome.AFTER_COMPLETION,
            f"delivery {claim.get('delivery_id')} claimed the run at {claim.get('claimed_at')}"
            f" and is announcing it; a claim older than {self.config.claim_lease_seconds} s"
            " is taken over",
            run_key=run,
        )

    def _failure_reason(self, run: RunKey, verdict: Failed, ops: StorageOps) -> str:
        found = self.storage.download(
            run.bucket, run.prefix + self.config.failure_marker, ops, max_bytes=FAILURE_REASON_BYTES
        )
        if found is None:
            return "the failure marker was removed"
        return found[0].decode("utf-8", errors="replace").strip() or "no reason given"


def claimant_of(delivery: Delivery) -> str:
    """Who holds a claim: the message, not just its id (emulator ids restart at m0)."""
    return f"{delivery.source}:{delivery.delivery_id}:{delivery.publish_time or ''}"
