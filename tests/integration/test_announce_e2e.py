"""Issue 12's eight failures, end to end on the local platform: real Storage notifications, the
push bridge, the handler's instances (restarted, crashed by fault injection), BigQuery held down,
reconciliation in process. Each test says what the code before issue 12 did, and so why it failed.

The handler runs this module with TALLY_REVISION_QUIET_SECONDS=1 (the default 30 s would outlast
the bridge's retries, leaving revisions to reconciliation) and TALLY_CLAIM_LEASE_SECONDS=4 (so a
takeover is seconds away); tests that need more restart it and come back to BASE.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import poll
from tests.integration.platform_helpers import (
    duplicate_notification,
    events,
    manifest,
    record,
    register,
    run_paths,
    spec_with,
    wait_announced,
    wait_idle,
    write_outputs,
)
from tests.integration.test_cli import tally_json

pytestmark = pytest.mark.integration

LEASE = 4
BASE = {"TALLY_REVISION_QUIET_SECONDS": "1", "TALLY_CLAIM_LEASE_SECONDS": str(LEASE)}
VERSION = "1.0.0"


@pytest.fixture(scope="module", autouse=True)
def base_handler(stack: Any) -> Iterator[None]:
    stack.restart_handler(BASE)
    try:
        yield
    finally:
        stack.restart_handler(None)


@contextmanager
def handler_with(stack: Any, **env: str) -> Iterator[None]:
    """The handler redeployed with BASE plus ``env``; BASE again afterwards."""
    stack.restart_handler({**BASE, **env})
    try:
        yield
    finally:
        stack.restart_handler(BASE)


# -- helpers -----------------------------------------------------------------------------------


def bucket(stack: Any) -> Any:
    return stack.storage_client().bucket(stack.outputs_bucket)


def run_key(stack: Any, prefix: str) -> str:
    return f"{stack.outputs_bucket}/{prefix.rstrip('/')}"


def generations(stack: Any, prefix: str) -> dict[str, int]:
    """The run folder's outputs as Storage lists them now (tally's objects left out)."""
    return {
        b.name[len(prefix) :]: b.generation
        for b in stack.storage_client().list_blobs(stack.outputs_bucket, prefix=prefix)
        if not b.name[len(prefix) :].startswith(("_tally/", "output.json", "_FAILED"))
    }


def announced(manifest_doc: dict[str, Any]) -> dict[str, int]:
    return {o["path"]: o["generation"] for o in manifest_doc["outputs"]}


def contents_by_key(stack: Any, workflow: str, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """Completion bodies grouped by idempotency key, de-duplicated as a consumer would compare."""
    found: dict[str, list[dict[str, Any]]] = {}
    for c in stack.completions.for_run(workflow, VERSION, run_id):
        bodies = found.setdefault(c.attributes["idempotency_key"], [])
        if c.manifest not in bodies:
            bodies.append(c.manifest)
    return found


def revision(stack: Any, workflow: str, run_id: str, number: int, timeout: float = 30) -> Any:
    """The first completion message of revision ``number`` of a run."""

    def find() -> Any:
        for c in stack.completions.for_run(workflow, VERSION, run_id):
            if c.attributes.get("revision") == str(number):
                return c
        return None

    return poll(find, timeout=timeout, message=f"revision {number} of {workflow}/{run_id}")


def run_rows(stack: Any, workflow: str) -> list[dict[str, Any]]:
    return stack.query(f"SELECT * FROM `${{dataset}}.runs` WHERE workflow = '{workflow}'")


def claim_age(stack: Any, prefix: str) -> float:
    claimed_time = record(stack, prefix)["claim"]["claimed_time"]
    claimed = datetime.fromisoformat(claimed_time.replace("Z", "+00:00"))
    return (datetime.now(UTC) - claimed).total_seconds()


def wait_lease_over(stack: Any, prefix: str) -> None:
    """Until the run's claim is older than the lease (the handler's clock is this machine's)."""
    poll(
        lambda: claim_age(stack, prefix) > LEASE + 1,
        timeout=LEASE + 30,
        interval=0.25,
        message="the claim's lease to pass",
    )


def logged(stack: Any, workflow: str, where: str, timeout: float = 30) -> list[dict[str, Any]]:
    return poll(
        lambda: events(stack, f"workflow = '{workflow}' AND {where}"),
        timeout=timeout,
        message=f"an event row of {workflow} with {where}",
    )


def in_process(stack: Any, monkeypatch: Any) -> Any:
    """The event handler's App in this process, configured as the platform's handler."""
    from tally_handler.app import App
    from tally_handler.config import Config

    env = stack.handler_process_env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return App(Config.from_env(env))


def reconcile(stack: Any, monkeypatch: Any, **request: Any) -> Any:
    """One reconciliation page in this process, as `tally reconcile --local` runs it."""
    from tally_handler.delivery import Reconcile

    return in_process(stack, monkeypatch).reconcile_locally(Reconcile(**request), 50, False)


def crashed_claim(stack: Any, workflow: str, prefix: str, paths: list[str], step: str) -> dict:
    """Write ``paths`` while every delivery crashes at ``step``: the claimant dies at each of its
    attempts and is dead-lettered. Returns the claimed record; the handler is BASE again."""
    crashes_before = sum(a.status == 500 for a in stack.bridge.stats.attempts)
    dead_before = len(stack.bridge.stats.dead_lettered)
    # lease 600 s while crashing: nobody takes the claim over before the test says so
    with handler_with(stack, TALLY_FAULTS=f"{step}=1", TALLY_CLAIM_LEASE_SECONDS="600"):
        write_outputs(stack, prefix, paths)
        poll(
            lambda: len(stack.bridge.stats.dead_lettered) > dead_before,
            timeout=60,
            message="the crashing claimant dead-lettered",
        )
        wait_idle(stack)
    assert sum(a.status == 500 for a in stack.bridge.stats.attempts) > crashes_before
    stuck = record(stack, prefix)
    assert stuck is not None and stuck["claim_status"] == "claimed", stuck
    return stuck


# -- 1. one content per key ---------------------------------------------------------------------


def test_1_a_takeover_after_a_crash_after_publish_publishes_the_claimed_bytes(stack, unique):
    """A claimant crashes after publishing (every attempt, until dead-lettered); a late optional
    output lands after the lease and its delivery takes the claim over. Before issue 12 the claim
    lived in output.json and the takeover published a *new* listing (now with the optional
    output) under the same key, with a second runs row: two contents for one key. Now every
    message and runs row of the key carries the claimed bytes."""
    workflow = f"takeover-{unique}"
    spec = spec_with(workflow)
    register(stack, spec)
    prefix = f"{workflow}/{VERSION}/run-1/"
    required = [p for p in run_paths(spec, 1) if p != "optional.log"]
    stuck = crashed_claim(stack, workflow, prefix, required, "after_publish")
    claimed = json.loads(stuck["manifest"])
    key1 = claimed["idempotency_key"]
    poll(
        lambda: contents_by_key(stack, workflow, "run-1") == {key1: [claimed]},
        timeout=30,
        message="the claimed bytes published before the crash",
    )
    published_before = len(stack.completions.for_run(workflow, VERSION, "run-1"))

    wait_lease_over(stack, prefix)
    write_outputs(stack, prefix, ["optional.log"])
    # The takeover publishes revision 1's claimed bytes again; the late output, written after
    # the claim, is then announced as revision 2 by the same delivery.
    second = revision(stack, workflow, "run-1", 2).manifest
    wait_idle(stack)
    assert second["supersedes"] == {"revision": 1, "idempotency_key": key1}
    assert "optional.log" in announced(second)
    assert len(stack.completions.for_run(workflow, VERSION, "run-1")) > published_before + 1
    assert contents_by_key(stack, workflow, "run-1")[key1] == [claimed], "one content per key"
    assert "optional.log" not in announced(claimed)
    rows = poll(
        lambda: [r for r in run_rows(stack, workflow) if r["idempotency_key"] == key1],
        timeout=30,
        message="revision 1's runs row",
    )
    contents = {(r["outputs_count"], r["state"], r["announced_time"], r["revision"]) for r in rows}
    assert contents == {(claimed["outputs_count"], "COMPLETE", contents.copy().pop()[2], 1)}
    assert manifest(stack, prefix) == second, "output.json holds the latest revision"


def test_1_a_late_output_whose_delivery_takes_over_is_announced_as_revision_2(
    stack, unique, monkeypatch
):
    """A claim older than the lease (its claimant gone) holds the required outputs; a late
    optional output's delivery takes it over. The contract: the change is never silent, and once
    quiet the run has a revision whose manifest matches the bucket (optional.log included),
    reached by a delivery or by the default reconcile (the open-run index)."""
    from tally_handler.completeness import evaluate
    from tally_handler.manifest import Claim, ClaimStatus, Record, State, build_manifest

    workflow = f"takenchange-{unique}"
    spec = spec_with(workflow)
    register(stack, spec)
    wait_idle(stack)  # the registration's own reconcile request, done before the run exists
    prefix = f"{workflow}/{VERSION}/run-1/"
    required = [p for p in run_paths(spec, 10) if p != "optional.log"]
    suppressed = len(stack.bridge.stats.suppressed)
    stack.bridge.suppress = lambda m: m.attributes.get("objectId", "").startswith(prefix)
    try:
        write_outputs(stack, prefix, required)
        poll(
            lambda: len(stack.bridge.stats.suppressed) >= suppressed + len(required),
            message="the outputs' notifications lost",
        )
    finally:
        stack.bridge.suppress = None
    # What a claimant that died two hours ago had claimed: the run as it was then.
    app = in_process(stack, monkeypatch)
    handler, _ = app.wire()
    run = handler.layout.run(stack.outputs_bucket, handler.layout.match(prefix + "x"))
    verdict = evaluate(
        handler.spec_for(workflow, VERSION),
        handler.announcer.list_run(run),
        "output.json",
        "_FAILED",
    )
    claim = Claim.at("gone", "pubsub-push:gone:", datetime.now(UTC) - timedelta(hours=2))
    claimed = build_manifest(
        run,
        revision=1,
        state=State.COMPLETE,
        outputs=verdict.outputs,
        unexpected=verdict.unexpected,
        failure_reason=None,
        claim=claim,
        handler_version="crashed",
    ).to_bytes()
    stale = Record(1, ClaimStatus.CLAIMED, claim, claimed).to_bytes()
    bucket(stack).blob(prefix + "_tally/announcement.json").upload_from_string(stale)

    write_outputs(stack, prefix, ["optional.log"])
    logged(stack, workflow, "output_path = 'optional.log'")
    wait_idle(stack)
    # Taken over (revision 1's bytes published as claimed), then the change: revision 2, by the
    # delivery itself or, if it had to wait for quiet, by the scheduled reconcile.
    first = revision(stack, workflow, "run-1", 1, timeout=60).manifest
    assert first == json.loads(claimed), "the takeover published the claimed bytes"
    reconcile(stack, monkeypatch)  # the scheduled reconcile: the open-run index
    second = revision(stack, workflow, "run-1", 2, timeout=60).manifest
    assert announced(second) == generations(stack, prefix)


# -- 2. manifests true to the bucket ------------------------------------------------------------


def test_2_an_output_rewritten_after_completion_is_announced_as_revision_2(stack, unique):
    """Before issue 12 the rewrite was logged after-completion, the old generation's delete
    ignored, and the manifest kept naming a generation that no longer exists: no revision ever
    came, so waiting for one timed out."""
    workflow = f"rewrite-{unique}"
    spec = spec_with(workflow)
    register(stack, spec)
    prefix = f"{workflow}/{VERSION}/run-1/"
    write_outputs(stack, prefix, run_paths(spec, 2))
    first = wait_announced(stack, workflow, VERSION, "run-1")[0].manifest
    wait_idle(stack)

    write_outputs(stack, prefix, ["a.txt"], content=b"rewritten")
    second = revision(stack, workflow, "run-1", 2).manifest
    wait_idle(stack)
    assert announced(second) == generations(stack, prefix), "revision 2 names what is there"
    assert announced(second)["a.txt"] != announced(first)["a.txt"]
    assert second["supersedes"] == {"revision": 1, "idempotency_key": first["idempotency_key"]}
    assert second["idempotency_key"] != first["idempotency_key"]
    assert set(contents_by_key(stack, workflow, "run-1")) == {
        first["idempotency_key"],
        second["idempotency_key"],
    }, "one revision for one rewrite"
    assert poll(lambda: manifest(stack, prefix) == second, timeout=30, message="output.json")
    assert record(stack, prefix)["claim_status"] == "published"
    assert logged(stack, workflow, "outcome = 'revised'")


def test_2_a_deleted_required_output_is_changed_until_it_is_back(stack, unique):
    """Before issue 12 a deletion was `ignored` and the rewrite after-completion: the run stayed
    COMPLETE with a manifest naming a deleted object. Now the deletion is logged `changed` (ERROR,
    run_state CHANGED) and the rewrite brings revision 2 with the new generation."""
    workflow = f"deleted-{unique}"
    spec = spec_with(workflow)
    register(stack, spec)
    prefix = f"{workflow}/{VERSION}/run-1/"
    write_outputs(stack, prefix, run_paths(spec, 3))
    first = wait_announced(stack, workflow, VERSION, "run-1")[0].manifest
    wait_idle(stack)

    bucket(stack).blob(prefix + "dir/b.txt").delete()
    rows = logged(stack, workflow, "output_path = 'dir/b.txt' AND outcome = 'changed'")
    assert rows[0]["run_state"] == "CHANGED" and rows[0]["revision"] == 1
    assert "now incomplete" in rows[0]["detail"] and "dir/b.txt" in rows[0]["detail"]
    assert len(stack.completions.for_run(workflow, VERSION, "run-1")) == 1

    write_outputs(stack, prefix, ["dir/b.txt"], content=b"again")
    second = revision(stack, workflow, "run-1", 2).manifest
    assert announced(second) == generations(stack, prefix)
    assert second["supersedes"]["idempotency_key"] == first["idempotency_key"]


# -- 3. an announced run stays announced --------------------------------------------------------


def test_3_a_deleted_manifest_is_restored_and_never_announced_again(stack, unique, monkeypatch):
    """Before issue 12 a missing output.json meant "never announced": the manifest's own deletion
    was ignored, and both reconciliation and a late duplicate after a restart claimed the run
    again and published it a 2nd and 3rd time with new published times and runs rows. Now the
    record restores it (`restored`) and nothing is published again."""
    workflow = f"restore-{unique}"
    spec = spec_with(workflow)
    register(stack, spec)
    prefix = f"{workflow}/{VERSION}/run-1/"
    write_outputs(stack, prefix, run_paths(spec, 4))
    wait_announced(stack, workflow, VERSION, "run-1")
    wait_idle(stack)
    published = json.loads(record(stack, prefix)["manifest"])
    messages = len(stack.completions.for_run(workflow, VERSION, "run-1"))

    # deleted, notified: its own notification restores it
    bucket(stack).blob(prefix + "output.json").delete()
    logged(stack, workflow, "output_path = 'output.json' AND outcome = 'restored'")
    assert poll(lambda: manifest(stack, prefix) == published, timeout=30, message="restored")

    # deleted, notification lost; a cold instance gets a late duplicate of an output
    name = prefix + "output.json"
    suppressed = len(stack.bridge.stats.suppressed)
    stack.bridge.suppress = lambda m: (
        m.attributes.get("objectId") == name and m.attributes.get("eventType") == "OBJECT_DELETE"
    )
    try:
        bucket(stack).blob(name).delete()
        poll(lambda: len(stack.bridge.stats.suppressed) > suppressed, message="the suppression")
    finally:
        stack.bridge.suppress = None
    assert manifest(stack, prefix) is None
    stack.restart_handler(BASE)
    duplicate_notification(stack, prefix + "a.txt")
    logged(stack, workflow, "output_path = 'a.txt' AND outcome = 'after-completion'")
    wait_idle(stack)
    assert manifest(stack, prefix) is None, "a duplicate does not rewrite the manifest"

    report = reconcile(stack, monkeypatch, prefix=f"{workflow}/")
    assert report.restored == [run_key(stack, prefix)] and report.announced == []
    assert manifest(stack, prefix) == published
    assert reconcile(stack, monkeypatch, prefix=f"{workflow}/").restored == [], "restored once"

    wait_idle(stack)
    assert len(stack.completions.for_run(workflow, VERSION, "run-1")) == messages
    announcing = events(
        stack,
        f"workflow = '{workflow}' AND run_id = 'run-1'"
        " AND outcome IN ('completed', 'reconciled', 'revised')",
    )
    assert len(announcing) == 1, [r["outcome"] for r in announcing]
    runs = {(r["idempotency_key"], r["announced_time"]) for r in run_rows(stack, workflow)}
    assert len(runs) == 1 and next(iter(runs))[0] == published["idempotency_key"], runs


# -- 4. truthful states -------------------------------------------------------------------------


def test_4_status_and_runs_show_announcing_and_changed(stack, unique):
    """A claimant dies after publishing and writing the runs row (claimed, not marked); another
    run is announced and then loses an output. Before issue 12 `tally status` and `tally runs`
    had no ANNOUNCING nor CHANGED state: the first run showed RUNNING (or COMPLETE, from its runs
    row), the second COMPLETE."""
    workflow = f"states-{unique}"
    spec = spec_with(workflow)
    register(stack, spec)
    stuck_prefix = f"{workflow}/{VERSION}/stuck/"
    crashed_claim(stack, workflow, stuck_prefix, run_paths(spec, 5), "after_runs_row")
    changed_prefix = f"{workflow}/{VERSION}/changed/"
    write_outputs(stack, changed_prefix, run_paths(spec, 6))
    wait_announced(stack, workflow, VERSION, "changed")
    wait_idle(stack)
    bucket(stack).blob(changed_prefix + "c.csv").delete()
    logged(stack, workflow, "run_id = 'changed' AND outcome = 'changed'")

    stuck = tally_json(stack, "status", f"{workflow}/{VERSION}/stuck")
    assert stuck["state"] == "ANNOUNCING"
    assert stuck["announcement"]["claim_status"] == "claimed"
    assert stuck["announcement"]["claimant"] and stuck["announcement"]["claim_age_seconds"] >= 0
    changed = tally_json(stack, "status", f"{workflow}/{VERSION}/changed")
    assert changed["state"] == "CHANGED" and changed["changes"] == ["c.csv: deleted"]

    def states() -> dict[str, str] | None:
        rows = tally_json(stack, "runs", "--workflow", workflow)["runs"]
        found = {r["run_id"]: r["state"] for r in rows}
        return found if found == {"stuck": "ANNOUNCING", "changed": "CHANGED"} else None

    poll(states, timeout=30, message="tally runs: stuck ANNOUNCING, changed CHANGED")


# -- 5. a cold instance knows a FAILED run ------------------------------------------------------


def test_5_a_cold_instance_logs_a_late_output_of_a_failed_run_after_completion(stack, unique):
    """Before issue 12 only an instance's memory said "announced": a restarted (cold) instance
    took a late output of a FAILED run for progress and logged it `recorded` ("expected output ...
    is not in the run folder yet"). Now one read of the record says FAILED."""
    workflow = f"cold-{unique}"
    register(stack, spec_with(workflow))
    prefix = f"{workflow}/{VERSION}/run-1/"
    write_outputs(stack, prefix, ["a.txt", "c.csv"])
    bucket(stack).blob(prefix + "_FAILED").upload_from_string("out of memory")
    assert wait_announced(stack, workflow, VERSION, "run-1")[0].attributes["state"] == "FAILED"
    wait_idle(stack)

    stack.restart_handler(BASE)  # every instance cold
    write_outputs(stack, prefix, ["dir/b.txt"])
    (row,) = logged(stack, workflow, "output_path = 'dir/b.txt'")
    assert (row["outcome"], row["run_state"]) == ("after-completion", "FAILED"), row
    wait_idle(stack)
    assert len(stack.completions.for_run(workflow, VERSION, "run-1")) == 1


# -- 6. time to recover -------------------------------------------------------------------------


def test_6_a_version_registered_after_its_outputs_is_announced_within_seconds(stack, unique):
    """Registration publishes a reconcile request for its version (the registry's half of issue
    12). Before it, a complete run of an unregistered version waited for `tally reconcile` or the
    next scheduled reconcile (60 minutes by default): this wait timed out."""
    workflow = f"register-{unique}"
    spec = spec_with(workflow)
    prefix = f"{workflow}/{VERSION}/run-1/"
    paths = run_paths(spec, 7)
    write_outputs(stack, prefix, paths)
    poll(
        lambda: (
            len(events(stack, f"workflow = '{workflow}' AND outcome = 'unknown-workflow'"))
            >= len(paths)
        ),
        timeout=30,
        message="every delivery logged unknown-workflow",
    )
    wait_idle(stack)
    assert not stack.completions.for_run(workflow, VERSION, "run-1")

    started = time.monotonic()
    register(stack, spec)
    wait_announced(stack, workflow, VERSION, "run-1", timeout=15)
    print(f"announced {time.monotonic() - started:.1f} s after its registration")
    logged(stack, workflow, "outcome = 'reconciled' AND run_id = 'run-1'")


def test_6_a_dead_lettered_claimant_is_finished_by_a_later_delivery_after_the_lease(stack, unique):
    """BigQuery is down while a run completes: its claimant publishes, fails to write the runs
    row, and is dead-lettered with its claim held. After the lease, the next delivery of the run
    (a late optional output) finishes it: runs row, output.json, mark. Before issue 12 an optional
    output was logged `recorded` without a look at the claim, and the run waited for a scheduled
    reconcile: this wait timed out."""
    workflow = f"deadletter-{unique}"
    spec = spec_with(workflow)
    register(stack, spec)
    prefix = f"{workflow}/{VERSION}/run-1/"
    dead_before = len(stack.bridge.stats.dead_lettered)
    stack.bigquery_tap.down = True
    # Each attempt spends ~8 s per BigQuery write before it gives up: one attempt stands for
    # Pub/Sub's five over a long outage.
    stack.bridge.max_attempts = 1
    try:
        write_outputs(stack, prefix, [p for p in run_paths(spec, 8) if p != "optional.log"])
        poll(
            lambda: (r := record(stack, prefix)) and r["claim_status"] == "claimed",
            timeout=30,
            message="the run claimed during the outage",
        )
        wait_idle(stack, timeout=90)
    finally:
        stack.bigquery_tap.down = False
        stack.bridge.max_attempts = stack.max_attempts
    assert len(stack.bridge.stats.dead_lettered) > dead_before
    stuck = record(stack, prefix)
    assert stuck["claim_status"] == "claimed", "the claimant was dead-lettered before it finished"
    assert manifest(stack, prefix) is None

    wait_lease_over(stack, prefix)
    started = time.monotonic()
    write_outputs(stack, prefix, ["optional.log"])
    poll(
        lambda: any(r["revision"] == 1 for r in run_rows(stack, workflow)),
        timeout=15,
        message="revision 1's runs row, written by the takeover",
    )
    print(f"finished {time.monotonic() - started:.1f} s after the later delivery")
    key1 = json.loads(stuck["manifest"])["idempotency_key"]
    assert contents_by_key(stack, workflow, "run-1")[key1] == [json.loads(stuck["manifest"])]
    assert poll(
        lambda: (r := record(stack, prefix)) and r["claim_status"] == "published",
        timeout=15,
        message="the record marked published",
    )


# -- 7. a foreign output.json -------------------------------------------------------------------


def test_7_a_workflows_own_output_json_blocks_the_run_until_moved(stack, unique, monkeypatch):
    """Before issue 12 the completing delivery found output.json unparsable and logged
    `after-completion` ("already announced") at INFO, and nothing ever announced the run. Now it
    is `blocked`, ERROR, naming the object; once it is moved away reconciliation announces."""
    workflow = f"foreign-{unique}"
    spec = spec_with(workflow)
    register(stack, spec)
    prefix = f"{workflow}/{VERSION}/run-1/"
    own = prefix + "output.json"
    bucket(stack).blob(own).upload_from_string(b'{"workflow": "its own summary"}')
    write_outputs(stack, prefix, run_paths(spec, 9))
    rows = logged(stack, workflow, "outcome = 'blocked' AND output_path != 'output.json'")
    wait_idle(stack)
    assert f"gs://{stack.outputs_bucket}/{own}" in rows[0]["detail"]
    assert rows[0]["run_state"] == "BLOCKED"
    assert not events(stack, f"workflow = '{workflow}' AND outcome = 'after-completion'")
    assert not stack.completions.for_run(workflow, VERSION, "run-1")

    source = bucket(stack)
    source.copy_blob(source.blob(own), source, f"{workflow}/moved-output.json")
    source.blob(own).delete()
    wait_idle(stack)
    report = reconcile(stack, monkeypatch, prefix=f"{workflow}/")
    assert report.announced == [run_key(stack, prefix)], report.summary()
    (completion,) = wait_announced(stack, workflow, VERSION, "run-1")
    assert manifest(stack, prefix) == completion.manifest


# -- 8. reserved names from one source ----------------------------------------------------------


def test_8_the_registry_refuses_a_spec_naming_its_configured_manifest():
    """The registry started with TALLY_MANIFEST_NAME=result.json (as Terraform sets it on both
    functions). Before issue 12 it hard-coded output.json, _FAILED and _tally and accepted
    result.json as an expected output."""
    import requests

    from devstack import RegistryStack

    with RegistryStack(handler_env={"TALLY_MANIFEST_NAME": "result.json"}) as reg:

        def put(version: str, path: str) -> Any:
            spec = {"workflow": "named", "version": version, "expected_outputs": [{"path": path}]}
            return requests.put(
                f"{reg.registry_url}/workflows/named/versions/{version}",
                data=json.dumps(spec),
                headers={
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {reg.mint_token()}",
                },
                timeout=30,
            )

        refused = put("1.0.0", "result.json")
        assert refused.status_code == 400, refused.text
        assert "result.json" in refused.text
        assert put("1.0.1", "output.json").status_code == 201, "an ordinary name there"


def test_8_a_spec_requiring_the_manifest_name_is_blocked_and_acknowledged(stack, unique):
    """The handler runs with TALLY_MANIFEST_NAME=result.json while its registry (default names)
    serves a spec requiring result.json: no run of it can complete. Before issue 12 the handler
    raised a bare ValueError and answered 503 to every delivery until it was dead-lettered. Now
    each is logged `blocked` (ERROR) and acknowledged."""
    workflow = f"reserved-{unique}"
    spec = {
        "workflow": workflow,
        "version": VERSION,
        "expected_outputs": [{"path": "a.txt"}, {"path": "result.json"}],
    }
    register(stack, spec)
    wait_idle(stack)  # the registration's reconcile request, served with the default names
    prefix = f"{workflow}/{VERSION}/run-1/"
    with handler_with(stack, TALLY_MANIFEST_NAME="result.json"):
        write_outputs(stack, prefix, ["a.txt"])
        (row,) = logged(stack, workflow, "output_path = 'a.txt'")
        wait_idle(stack)
    assert row["outcome"] == "blocked" and "result.json" in row["detail"], row
    attempts = [a.status for a in stack.bridge.stats.attempts if a.message_id == row["delivery_id"]]
    assert attempts == [200], f"one acknowledged attempt, not retries: {attempts}"
