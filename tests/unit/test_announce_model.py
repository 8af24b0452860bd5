"""The announcement protocol as a state machine, checked against a model of a hostile world.

Rules write, rewrite and delete outputs and failure markers, deliver every notification Storage
sent (tally's own writes included) at least once, in any order, on any of two instances, crash a
delivery or a reconciliation at any step boundary (before any Storage call, or right after a
write, a publish or a runs row took effect), restart instances, lose notifications, move the clock
past the quiet window and the lease, reconcile, and delete or edit ``output.json``.

Invariants after every step: never two contents under one key; never an announcement of a run
that was not complete (or failed) at its claim; revisions of a run differ in content. Whenever
the world goes quiet (the ``settle`` rule, and at the end): every complete run has exactly one
current revision whose manifest matches the bucket, ``output.json`` is that revision's bytes, and
no run is left ANNOUNCING.

Bounded and derandomized in `make test`; `make fuzz` runs 2,000 random examples
(TALLY_MODEL_EXAMPLES=2000 TALLY_MODEL_RANDOM=1; a failure prints the seed that replays it).
"""

from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from tally_handler.completeness import Complete, Failed, evaluate
from tally_handler.manifest import ClaimStatus
from tally_handler.outcomes import Outcome

from tests.unit.world import BUCKET, LEASE, QUIET, SPEC, World

RUNS = ("r0", "r1", "r2")
PATHS = ("a.txt", "b.txt", "notes.txt", "shards/0.bin", "shards/1.bin", "shards/2.bin", "stray")
MARKER = "_FAILED"
EXAMPLES = int(os.environ.get("TALLY_MODEL_EXAMPLES", "100"))
RANDOM = os.environ.get("TALLY_MODEL_RANDOM") == "1"
crash_points = st.none() | st.integers(min_value=0, max_value=14)


class AnnouncementMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World()
        self.versions = 0  # distinct contents written, so rewrites make new bytes
        self.lost = False  # a notification was lost since the last full walk

    # -- what workflows and users do to the bucket -------------------------------------------
    @rule(run=st.sampled_from(RUNS), path=st.sampled_from(PATHS))
    def write_output(self, run: str, path: str) -> None:
        self.versions += 1
        self.world.write(run, path, f"v{self.versions}".encode())

    @rule(run=st.sampled_from(RUNS), path=st.sampled_from((*PATHS, MARKER)))
    def delete_object(self, run: str, path: str) -> None:
        self.world.delete(run, path)

    @rule(run=st.sampled_from(RUNS))
    def write_failure_marker(self, run: str) -> None:
        self.world.write(run, MARKER, b"out of memory")

    @rule(run=st.sampled_from(RUNS))
    def delete_manifest(self, run: str) -> None:
        self.world.delete(run, "output.json")

    @rule(run=st.sampled_from(RUNS), foreign=st.booleans())
    def edit_manifest(self, run: str, foreign: bool) -> None:
        """A user edits output.json, or a workflow writes its own (a foreign object)."""
        self.world.write(run, "output.json", b'{"workflow": "its own"}' if foreign else b"{}")

    # -- what the platform does ------------------------------------------------------------------
    @rule(
        data=st.data(),
        instance=st.integers(0, 1),
        crash_after=crash_points,
        crash_after_publish=st.booleans(),
    )
    def deliver(
        self,
        data: st.DataObject,
        instance: int,
        crash_after: int | None,
        crash_after_publish: bool,
    ) -> None:
        if not self.world.pending:
            return
        index = data.draw(st.integers(0, len(self.world.pending) - 1), label="message")
        message = self.world.pending.pop(index)
        result = self.world.deliver(message, instance, crash_after, crash_after_publish)
        if result is None or not result.outcome.acknowledged:
            self.world.pending.append(message)  # not acknowledged: Pub/Sub redelivers

    @rule(run=st.sampled_from(RUNS), instance=st.integers(0, 1), first=st.integers(0, 1))
    def deliver_covered(self, run: str, instance: int, first: int) -> None:
        """A workflow writes the exact outputs and two shards; on one instance the delivery of
        one shard waits at the coalescing gate when the other's arrives: the first is covered
        (acknowledged without listing), the second owes the listing, but its request dies before
        it lists, so its message stays pending (Pub/Sub redelivers it)."""
        written = []
        for path in ("a.txt", "b.txt", "shards/0.bin", "shards/1.bin"):
            if (
                path.startswith("shards/")
                or self.world.storage.get(BUCKET, self.world.run_prefix(run) + path) is None
            ):
                self.versions += 1
                written.append(self.world.write(run, path, f"v{self.versions}".encode()))
        first_message, second = written[-2:][first], written[-2:][1 - first]
        handler = self.world.handlers[instance]
        coalescer = handler.coalescer
        assert coalescer is not None
        output = handler.layout.match(second.notification.name)
        assert output is not None
        key = handler.layout.run(BUCKET, output).key
        arrived: list[int] = []

        def newer_arrives(waiting: object) -> None:
            if waiting is handler and not arrived and coalescer.gate.busy(key):
                arrived.append(coalescer.gate.arrive(key, coalescer.clock(), output.path, 99))

        self.world.on_wait = newer_arrives
        try:
            self.world.pending.remove(first_message)
            result = self.world.deliver(first_message, instance)
        finally:
            self.world.on_wait = None
        if arrived:
            coalescer.gate.leave(key, arrived[0])  # the second's request died before listing
        if result is None or not result.outcome.acknowledged:
            self.world.pending.append(first_message)

    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        if self.world.pending:
            index = data.draw(st.integers(0, len(self.world.pending) - 1), label="duplicate")
            self.world.pending.append(self.world.pending[index])

    @rule(data=st.data())
    def lose_notification(self, data: st.DataObject) -> None:
        if self.world.pending:
            index = data.draw(st.integers(0, len(self.world.pending) - 1), label="lose")
            self.world.pending.pop(index)
            self.lost = True

    @rule(instance=st.integers(0, 1))
    def restart(self, instance: int) -> None:
        self.world.restart(instance)

    @rule(seconds=st.sampled_from((1, QUIET + 1, LEASE + 1)))
    def advance_clock(self, seconds: int) -> None:
        self.world.clock.advance(seconds)

    @rule(instance=st.integers(0, 1), crash_after=crash_points, every_run=st.booleans())
    def reconcile(self, instance: int, crash_after: int | None, every_run: bool) -> None:
        self.world.reconcile(instance, crash_after, every_run=every_run)

    @rule()
    def settle(self) -> None:
        """The world goes quiet: users fix foreign manifests, every message gets through,
        the quiet window and the lease pass, reconciliation runs."""
        world = self.world
        for run in RUNS:
            found = world.storage.get(BUCKET, world.run_prefix(run) + "output.json")
            if found is not None and b'"kind"' not in found.data and world.record(run) is None:
                world.delete(run, "output.json")  # a foreign object: its owner moves it away
        for _ in range(20):
            world.clock.advance(max(QUIET, LEASE) + 1)
            world.reconcile(instance=1)  # takes stale claims over before their messages return
            while world.pending:
                message = world.pending.pop(0)
                result = world.deliver(message)
                if result is not None and result.outcome is Outcome.DEFERRED:
                    world.clock.advance(QUIET + 1)
                    world.pending.append(message)
            world.clock.advance(max(QUIET, LEASE) + 1)
            # The scheduled request visits the open-run index only: every run whose change is not
            # announced yet must have stayed in it. Only a lost notification needs the periodic
            # full walk (a run none of whose notifications arrived is in no index).
            world.reconcile(every_run=self.lost)
            if not world.pending:
                break
        assert not world.pending, "the world never went quiet"
        self.check_settled()
        self.lost = False

    # -- invariants ------------------------------------------------------------------------------
    @invariant()
    def one_content_per_key(self) -> None:
        for key, contents in self.world.contents_per_key().items():
            assert len(contents) == 1, f"key {key} names {len(contents)} contents"

    @invariant()
    def announced_runs_were_complete_at_their_claim(self) -> None:
        for data, _ in self.world.publisher.messages:
            manifest = json.loads(data)
            if manifest["state"] == "FAILED":
                continue
            paths = [item["path"] for item in manifest["outputs"]]
            assert all(path in paths for path in SPEC.required_paths), manifest
            for pattern in SPEC.required_patterns:
                assert sum(pattern.matches(p) for p in paths) == pattern.count, manifest

    @invariant()
    def revisions_differ_in_content(self) -> None:
        """No announcement without a change (a deleted manifest is never a reason)."""
        by_run: dict[str, dict[int, tuple]] = {}
        for data, attributes in self.world.publisher.messages:
            manifest = json.loads(data)
            content = (
                manifest["state"],
                tuple(sorted((o["path"], o["generation"]) for o in manifest["outputs"])),
            )
            by_run.setdefault(attributes["run_id"], {})[int(attributes["revision"])] = content
        for run, revisions in by_run.items():
            for revision, content in revisions.items():
                if revision > 1 and revision - 1 in revisions:
                    assert content != revisions[revision - 1], f"{run} revision {revision}"

    def check_settled(self) -> None:
        world = self.world
        for run in RUNS:
            prefix = world.run_prefix(run)
            record = world.record(run)
            published = record is None or record.claim_status is ClaimStatus.PUBLISHED
            assert published, f"{run} ANNOUNCING"
            entries = world.entries(run)
            verdict = evaluate(SPEC, entries, "output.json", MARKER)
            if not isinstance(verdict, Complete | Failed):
                continue
            assert record is not None, f"{run} is complete and was never announced"
            announced = json.loads(record.manifest)
            stored = world.storage.get(BUCKET, prefix + "output.json")
            assert stored is not None and stored.data == record.manifest, f"{run} output.json"
            keys = [a["idempotency_key"] for _, a in world.messages(run)]
            assert announced["idempotency_key"] in keys, f"{run}: latest revision never published"
            if isinstance(verdict, Failed):
                assert announced["state"] == "FAILED", f"{run} failed, announced {announced}"
                continue
            current = {o.entry.path: o.entry.generation for o in verdict.outputs}
            listed = {o["path"]: o["generation"] for o in announced["outputs"]}
            assert announced["state"] == "COMPLETE" and listed == current, (
                f"{run}: revision {record.revision} lists {listed}, the bucket holds {current}"
            )

    def teardown(self) -> None:
        self.settle()


AnnouncementMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=40,
    # `make test`: the same examples every run; `make fuzz` (TALLY_MODEL_RANDOM=1): new ones,
    # and a failure prints the @seed / @reproduce_failure that replays it.
    derandomize=not RANDOM,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestAnnouncementProtocol = AnnouncementMachine.TestCase
