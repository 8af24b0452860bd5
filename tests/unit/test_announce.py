"""The announcement protocol over the in-memory ports: each numbered failure of issue 12, as a
plain scenario (the model-based test in test_announce_model.py explores the rest)."""

from __future__ import annotations

import json

import pytest
from tally_handler.announce import OPEN_INDEX, Action, next_action
from tally_handler.manifest import Claim, ClaimStatus, Record, to_bytes
from tally_handler.outcomes import Outcome, RunState

from tests.unit.world import BUCKET, LEASE, OPTIONAL, QUIET, REQUIRED, World, config, outcome


def complete_run(world: World, run_id: str = "r1") -> list:
    results = [world.deliver(world.write(run_id, path)) for path in REQUIRED]
    assert outcome(results[-1]) is Outcome.COMPLETED, results[-1]
    return results


def test_a_complete_run_is_announced_once_with_its_record() -> None:
    world = World()
    results = complete_run(world)
    assert [outcome(r) for r in results[:-1]] == [Outcome.RECORDED] * 3
    ((data, attributes),) = world.messages("r1")
    record = world.record("r1")
    assert record is not None and record.claim_status is ClaimStatus.PUBLISHED
    assert record.manifest == data  # the record holds the published bytes
    assert world.storage.get(BUCKET, "wf/1/r1/output.json").data == data  # type: ignore[union-attr]
    assert attributes["revision"] == "1"
    assert world.event_log.runs[0]["idempotency_key"] == attributes["idempotency_key"]
    # announced: the open-run index no longer names it
    assert not [name for (_, name) in world.storage.objects if name.startswith(OPEN_INDEX)]


def test_a_duplicate_after_completion_costs_no_storage_on_a_warm_instance() -> None:
    world = World()
    complete_run(world)
    name = "wf/1/r1/a.txt"
    stored = world.storage.get(BUCKET, name)
    duplicate = world.message(name, stored.generation, world_event("finalize"))  # type: ignore[union-attr]
    result = world.deliver(duplicate)
    assert outcome(result) is Outcome.AFTER_COMPLETION


def world_event(kind: str):
    from tally_handler.delivery import EventType

    return {"finalize": EventType.OBJECT_FINALIZE, "delete": EventType.OBJECT_DELETE}[kind]


def test_failure_1_a_takeover_publishes_the_claimed_bytes_not_a_new_listing() -> None:
    """Issue 12 #1: claimant dies after the publish, a late optional output lands, the lease
    passes: the takeover publishes exactly the bytes claimed, under the same key."""
    world = World()
    for path in REQUIRED[:-1]:
        world.deliver(world.write("r1", path))
    last = world.write("r1", REQUIRED[-1])
    # crash right after the publish (the publisher ticks once before and once after sending)
    for crash_after in range(0, 40):
        trial = World()
        for path in REQUIRED[:-1]:
            trial.deliver(trial.write("r1", path))
        final = trial.write("r1", REQUIRED[-1])
        if trial.deliver(final, crash_after=crash_after) is None and trial.publisher.messages:
            break
    else:
        pytest.fail("no crash point between publish and mark")
    world = trial
    first = world.publisher.messages[0]
    world.deliver(world.write("r1", OPTIONAL[0]), instance=1)  # late optional output
    world.clock.advance(LEASE + 1)
    taker = world.write("r1", "b.txt", b"rewritten")  # any later delivery touches the run
    world.deliver(taker, instance=1)
    per_key = world.contents_per_key()
    assert len(per_key[first[1]["idempotency_key"]]) == 1, "two contents under one key"
    record = world.record("r1")
    assert record is not None and record.claim_status is ClaimStatus.PUBLISHED
    assert last is not None


def test_failure_2_a_rewrite_after_completion_is_announced_as_a_revision() -> None:
    world = World()
    complete_run(world)
    rewrite = world.write("r1", "a.txt", b"new")
    result = world.deliver(rewrite)
    assert outcome(result) is Outcome.DEFERRED  # the latest change waits for quiet
    assert result.run_state is RunState.CHANGED  # type: ignore[union-attr]
    world.clock.advance(QUIET + 1)
    result = world.deliver(rewrite)  # Pub/Sub's redelivery
    assert outcome(result) is Outcome.REVISED, result
    messages = world.messages("r1")
    assert [m[1]["revision"] for m in messages] == ["1", "2"]
    assert messages[0][1]["idempotency_key"] != messages[1][1]["idempotency_key"]
    body = json.loads(messages[1][0])
    assert body["supersedes"] == {
        "revision": 1,
        "idempotency_key": messages[0][1]["idempotency_key"],
    }
    assert {o["path"]: o["generation"] for o in body["outputs"]} == world.current_outputs("r1")
    assert world.manifest("r1") == body  # output.json describes the latest revision
    # the old generation's delete, sent by Storage for the overwrite, changes nothing
    assert outcome(world.deliver(world.last_overwritten)) is Outcome.IGNORED


def test_failure_2_a_deleted_required_output_leaves_the_run_changed_until_complete() -> None:
    world = World()
    complete_run(world)
    result = world.deliver(world.delete("r1", "b.txt"))  # type: ignore[arg-type]
    assert outcome(result) is Outcome.CHANGED
    assert result.run_state is RunState.CHANGED and result.severity == "ERROR"  # type: ignore[union-attr]
    world.clock.advance(QUIET + 1)
    report = world.reconcile()
    assert report is not None and report.changed == ["outs/wf/1/r1"]
    world.write("r1", "b.txt", b"again")
    world.clock.advance(QUIET + 1)
    report = world.reconcile()
    assert report is not None and report.announced == ["outs/wf/1/r1"]
    assert [m[1]["revision"] for m in world.messages("r1")] == ["1", "2"]


def test_a_rewrite_storm_coalesces_into_one_revision() -> None:
    world = World()
    complete_run(world)
    storm = []
    for _ in range(3):
        for path in (*REQUIRED, *OPTIONAL):
            storm.append(world.write("r1", path, b"storm"))
            world.clock.advance(0.5)
    results = [world.deliver(d, instance=i % 2) for i, d in enumerate(storm)]
    assert {outcome(r) for r in results} <= {Outcome.CHANGED, Outcome.DEFERRED}
    world.clock.advance(QUIET + 1)
    for i, d in enumerate(storm):  # every unacknowledged one comes back
        if outcome(results[i]) is Outcome.DEFERRED:
            world.deliver(d)
    world.reconcile()
    assert [m[1]["revision"] for m in world.messages("r1")] == ["1", "2"]
    body = json.loads(world.messages("r1")[-1][0])
    assert {o["path"]: o["generation"] for o in body["outputs"]} == world.current_outputs("r1")


def test_failure_3_a_deleted_manifest_is_restored_never_announced_again() -> None:
    world = World()
    complete_run(world)
    deleted = world.delete("r1", "output.json")
    assert outcome(world.deliver(deleted, instance=1)) is Outcome.RESTORED  # type: ignore[arg-type]
    assert world.manifest("r1") is not None
    world.delete("r1", "output.json")  # its notification lost this time
    report = world.reconcile(prefix="wf/")
    assert report is not None and report.restored == ["outs/wf/1/r1"]
    stored = world.storage.get(BUCKET, "wf/1/r1/a.txt")
    late = world.message("wf/1/r1/a.txt", stored.generation, world_event("finalize"))  # type: ignore[union-attr]
    world.restart(0)
    assert outcome(world.deliver(late)) is Outcome.AFTER_COMPLETION
    assert len(world.messages("r1")) == 1
    assert len(world.event_log.runs) == 1


def test_failure_3_an_edited_manifest_is_restored() -> None:
    world = World()
    complete_run(world)
    published = world.messages("r1")[0][0]
    edit = world.write("r1", "output.json", b'{"edited": true}')
    assert outcome(world.deliver(edit)) is Outcome.RESTORED
    assert world.storage.get(BUCKET, "wf/1/r1/output.json").data == published  # type: ignore[union-attr]


def test_failure_4_a_stuck_claim_shows_announcing_then_is_taken_over() -> None:
    world = World()
    for path in REQUIRED[:-1]:
        world.deliver(world.write("r1", path))
    final = world.write("r1", REQUIRED[-1])
    # find the crash point right after the claim write
    world.storage.crash_in = None
    claimed = None
    for crash_after in range(40):
        trial = World()
        for path in REQUIRED[:-1]:
            trial.deliver(trial.write("r1", path))
        last = trial.write("r1", REQUIRED[-1])
        if trial.deliver(last, crash_after=crash_after) is None and trial.record("r1"):
            claimed = trial
            break
    assert claimed is not None and final is not None
    world = claimed
    dup = world.write("r1", OPTIONAL[0])
    result = world.deliver(dup, instance=1)
    assert result is not None and result.run_state is RunState.ANNOUNCING
    world.clock.advance(LEASE + 1)
    report = world.reconcile()
    # the takeover publishes the claimed bytes; the optional output written after the claim
    # then makes revision 2 (the run has been quiet for longer than the window)
    assert report is not None and report.announced == ["outs/wf/1/r1", "outs/wf/1/r1"]
    assert [m[1]["revision"] for m in world.messages("r1")][-2:] == ["1", "2"]
    assert all(len(contents) == 1 for contents in world.contents_per_key().values())


def test_failure_5_a_cold_instance_says_after_completion_for_a_failed_run() -> None:
    world = World()
    world.deliver(world.write("r1", "a.txt"))
    result = world.deliver(world.write("r1", "_FAILED", b"out of memory"))
    assert outcome(result) is Outcome.FAILED
    world.restart(1)
    late = world.write("r1", "b.txt")
    result = world.deliver(late, instance=1)
    assert outcome(result) is Outcome.AFTER_COMPLETION, result
    assert result.run_state is RunState.FAILED  # type: ignore[union-attr]


def test_failure_7_a_foreign_manifest_blocks_the_run_then_it_is_announced() -> None:
    world = World()
    world.write("r1", "output.json", b'{"workflow": "its own"}')
    results = [world.deliver(world.write("r1", path)) for path in REQUIRED]
    assert outcome(results[-1]) is Outcome.BLOCKED
    assert "output.json" in results[-1].detail and results[-1].log_severity == "ERROR"  # type: ignore[union-attr]
    assert not world.publisher.messages
    world.delete("r1", "output.json")
    report = world.reconcile()
    assert report is not None and report.announced == ["outs/wf/1/r1"]


def test_next_action_maps_every_record_state() -> None:
    claim = Claim("m1", "push:m1:t", "2026-11-30T12:00:00.000000Z")
    claimed = Record(1, ClaimStatus.CLAIMED, claim, b"{}")
    from datetime import UTC, datetime, timedelta

    at = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
    assert next_action(claimed, "push:m1:t", at, 600) is Action.RESUME
    assert next_action(claimed, "push:m2:t", at, 600) is Action.WAIT
    assert next_action(claimed, "push:m2:t", at + timedelta(seconds=601), 600) is Action.TAKE_OVER
    published = Record(1, ClaimStatus.PUBLISHED, claim, b"{}")
    assert next_action(published, "push:m1:t", at, 600) is Action.DONE


def test_a_run_announced_before_revisions_is_adopted_never_announced_again() -> None:
    """Upgrading tally: a format-1 published manifest becomes revision 1's record."""
    world = World()
    complete_run(world)
    body = json.loads(world.messages("r1")[0][0])
    legacy = {
        k: v for k, v in body.items() if k not in ("revision", "supersedes", "announced_time")
    }
    legacy |= {"format": 1, "status": "published", "published_at": body["announced_time"]}
    legacy["claim"] = {
        "claimed_at" if k == "claimed_time" else k: v for k, v in body["claim"].items()
    }
    world.storage.remove(BUCKET, "wf/1/r1/_tally/announcement.json")
    world.storage.put(BUCKET, "wf/1/r1/output.json", json.dumps(legacy).encode())
    world.publisher.messages.clear()
    world.restart(0)
    stored = world.storage.get(BUCKET, "wf/1/r1/a.txt")
    late = world.message("wf/1/r1/a.txt", stored.generation, world_event("finalize"))  # type: ignore[union-attr]
    assert outcome(world.deliver(late)) is Outcome.AFTER_COMPLETION
    record = world.record("r1")
    assert record is not None and record.revision == 1
    assert record.claim_status is ClaimStatus.PUBLISHED
    assert record.manifest == json.dumps(legacy).encode()  # adopted with its exact bytes
    assert not world.publisher.messages
    world.deliver(world.write("r1", "notes.txt"))  # a late optional output: a change
    world.clock.advance(QUIET + 1)
    world.reconcile()
    assert [m[1]["revision"] for m in world.messages("r1")] == ["2"]


def test_a_claim_made_before_the_upgrade_is_finished_with_its_old_bytes() -> None:
    """Upgrading tally mid-claim: a format-1 record holding format-2 manifest bytes. The takeover
    publishes those bytes unchanged under the same key (never re-serialised as format 3), writes
    them to output.json and logs the runs row of the same instant."""
    world = World()
    complete_run(world)
    ((data, attributes),) = world.messages("r1")
    body = json.loads(data)
    claim = body.pop("claim")
    claim["claimed_at"] = claim.pop("claimed_time")
    announced_time = body.pop("announced_time")
    old = to_bytes(body | {"format": 2, "claim": claim, "announced_at": announced_time})
    record = {
        "kind": "tally#announcement",
        "format": 1,
        "revision": 1,
        "status": "claimed",
        "claim": claim | {"claimant": "a claimant that died before the upgrade"},
        "manifest": old.decode(),
        "published_at": None,
        "manifest_generation": None,
        "history": [],
    }
    world.storage.put(BUCKET, "wf/1/r1/_tally/announcement.json", to_bytes(record))
    world.storage.remove(BUCKET, "wf/1/r1/output.json")
    world.publisher.messages.clear()
    world.event_log.runs.clear()
    world.restart(0)
    world.clock.advance(LEASE + 1)
    stored = world.storage.get(BUCKET, "wf/1/r1/a.txt")
    late = world.message("wf/1/r1/a.txt", stored.generation, world_event("finalize"))  # type: ignore[union-attr]
    world.deliver(late)
    ((republished, again),) = world.messages("r1")
    assert republished == old
    assert again["idempotency_key"] == attributes["idempotency_key"]
    assert again["state"] == "COMPLETE"
    assert world.storage.get(BUCKET, "wf/1/r1/output.json").data == old  # type: ignore[union-attr]
    (row,) = world.event_log.runs
    assert row["announced_time"] == claim["claimed_at"] == announced_time
    assert row["idempotency_key"] == attributes["idempotency_key"]
    finished = world.record("r1")
    assert finished is not None and finished.claim_status is ClaimStatus.PUBLISHED
    assert finished.manifest == old
    rewritten = world.storage.get(BUCKET, "wf/1/r1/_tally/announcement.json")
    assert json.loads(rewritten.data)["format"] == 2  # type: ignore[union-attr]


def test_failure_8_a_spec_requiring_a_reserved_name_is_blocked_not_retried() -> None:
    """Issue 12 #8: with TALLY_MANIFEST_NAME=result.json, a spec requiring result.json can never
    complete: every delivery is acknowledged and logged BLOCKED, never answered 503."""
    from tally_handler.spec import Spec

    spec = Spec.from_json(
        {
            "workflow": "wf",
            "version": "1",
            "expected_outputs": [{"path": "result.json"}, {"path": "a"}],
        }
    )
    world = World(cfg=config(TALLY_MANIFEST_NAME="result.json"), spec=spec)
    result = world.deliver(world.write("r1", "a"))
    assert outcome(result) is Outcome.BLOCKED and result.outcome.acknowledged  # type: ignore[union-attr]
    assert "result.json" in result.detail and "new version" in result.detail  # type: ignore[union-attr]


def test_tallys_own_manifest_write_is_ignored_even_without_an_md5() -> None:
    """Payload format NONE carries no md5Hash: tally must not take its own write for an edit
    (restoring it would write again, and loop)."""
    from dataclasses import replace

    world = World()
    complete_run(world)
    stored = world.storage.get(BUCKET, "wf/1/r1/output.json")
    own = world.message("wf/1/r1/output.json", stored.generation, world_event("finalize"))  # type: ignore[union-attr]
    own = replace(own, notification=replace(own.notification, md5=None))  # type: ignore[arg-type]
    assert outcome(world.deliver(own)) is Outcome.IGNORED
    assert world.storage.get(BUCKET, "wf/1/r1/output.json").generation == stored.generation  # type: ignore[union-attr]


def test_a_deleted_record_is_rebuilt_from_output_json_never_announced_again() -> None:
    world = World()
    complete_run(world)
    world.storage.remove(BUCKET, "wf/1/r1/_tally/announcement.json")
    world.restart(0)
    stored = world.storage.get(BUCKET, "wf/1/r1/b.txt")
    late = world.message("wf/1/r1/b.txt", stored.generation, world_event("finalize"))  # type: ignore[union-attr]
    assert outcome(world.deliver(late)) is Outcome.AFTER_COMPLETION
    assert len(world.publisher.messages) == 1
    record = world.record("r1")
    assert record is not None and record.claim_status is ClaimStatus.PUBLISHED


def test_a_broken_record_blocks_the_run_and_is_acknowledged() -> None:
    """A record someone overwrote with garbage is a permanent problem: BLOCKED, never 503."""
    world = World()
    complete_run(world)
    world.storage.put(BUCKET, "wf/1/r1/_tally/announcement.json", b"garbage")
    world.restart(0)
    result = world.deliver(world.write("r1", "notes.txt"))
    assert outcome(result) is Outcome.BLOCKED and result.outcome.acknowledged  # type: ignore[union-attr]
    assert "announcement" in result.detail  # type: ignore[union-attr]


def test_an_announcement_logs_its_completion_latency() -> None:
    """The log-based completion latency metric (terraform/monitoring.tf) extracts this field."""
    import contextlib
    import io

    from tally_handler import app

    world = World()
    world.deliver(world.write("r1", "a.txt"))
    world.clock.advance(12)
    results = [world.deliver(world.write("r1", path)) for path in REQUIRED[1:]]
    announced = results[-1]
    assert outcome(announced) is Outcome.COMPLETED
    assert announced.completion_seconds == 12.0  # type: ignore[union-attr]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        app._log("NOTICE", "x", app._with_latency({"outcome": "completed"}, announced))  # type: ignore[arg-type]
    assert json.loads(out.getvalue())["completion_seconds"] == 12.0
    assert results[0].completion_seconds is None  # type: ignore[union-attr]
