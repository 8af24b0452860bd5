"""The event handler through every real component: fake-gcs-server notifications, pstest, the push
bridge, the handler and registry served by functions-framework, and bqemulator."""

from __future__ import annotations

import base64
import concurrent.futures as cf
import hashlib
import json
import random
from datetime import UTC, datetime, timedelta

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tally_handler.layout import DEFAULT_TEMPLATE, Layout, RunOutput
from tally_handler.manifest import Claim, ClaimStatus, Record, build_manifest

from devstack import sample
from tests.conftest import ROOT, poll
from tests.integration.platform_helpers import (
    announced_as_written,
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

pytestmark = pytest.mark.integration


def _keys(completions) -> list[str]:
    return [c.attributes["idempotency_key"] for c in completions]


def test_a_run_completes_once_with_a_manifest_that_matches_the_bucket(stack, unique):
    workflow = f"wf-{unique}"
    spec = spec_with(workflow)
    register(stack, spec)
    prefix = f"{workflow}/1.0.0/run-1/"
    paths = run_paths(spec, seed=1)
    acked_before = set(stack.bridge.stats.acked)
    # The optional output first: written after the claim it would (rightly) make a revision 2.
    write_outputs(stack, prefix, ["optional.log"])
    write_outputs(stack, prefix, [p for p in paths if p != "optional.log"])

    wait_announced(stack, workflow, "1.0.0", "run-1")
    wait_idle(stack)
    completions = stack.completions.for_run(workflow, "1.0.0", "run-1")
    assert len(completions) == 1
    body = completions[0].manifest
    stored = manifest(stack, prefix)
    assert stored is not None and stored["state"] == "COMPLETE" and stored["revision"] == 1
    assert body == stored, "the message body is the manifest as published"
    announced = record(stack, prefix)
    assert announced is not None and announced["claim_status"] == "published"
    assert json.loads(announced["manifest"]) == body, "the record holds the published bytes"
    assert {o["path"] for o in stored["outputs"]} == set(paths)
    blobs = {
        b.name[len(prefix) :]: b
        for b in stack.storage_client().list_blobs(stack.outputs_bucket, prefix=prefix)
    }
    for output in stored["outputs"]:
        assert output["generation"] == blobs[output["path"]].generation
    assert completions[0].attributes["state"] == "COMPLETE"

    # Every delivery the push bridge acknowledged is in the event log.
    acked = set(stack.bridge.stats.acked) - acked_before
    rows = poll(
        lambda: (
            (r := events(stack, f"workflow = '{workflow}'"))
            and acked <= {x["delivery_id"] for x in r}
            and r
        ),
        timeout=30,
        message="every acknowledged delivery in the event log",
    )
    outcomes = {
        r["output_path"]: r["outcome"]
        for r in rows
        if r["outcome"] != "ignored" and r["source"] != "reconcile"  # registration reconciles
    }
    assert set(outcomes) == set(paths)
    assert list(outcomes.values()).count("completed") == 1
    assert outcomes["optional.log"] in ("recorded", "after-completion")


def test_fifty_runs_delivered_one_to_three_times_in_shuffled_order(stack, unique):
    seed = 50
    print(f"seed {seed}")
    rng = random.Random(seed)
    workflow = f"fifty-{unique}"
    spec = spec_with(workflow)
    register(stack, spec)
    writes = [
        (f"{workflow}/1.0.0/run-{i:02d}/", path) for i in range(50) for path in run_paths(spec, i)
    ]
    rng.shuffle(writes)
    bucket = stack.storage_client().bucket(stack.outputs_bucket)
    with cf.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda w: bucket.blob(w[0] + w[1]).upload_from_string(b"x"), writes))
    duplicates = [w for w in writes for _ in range(rng.randint(0, 2))]
    rng.shuffle(duplicates)
    with cf.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda w: duplicate_notification(stack, w[0] + w[1]), duplicates))

    def announced() -> bool:
        return all(stack.completions.for_run(workflow, "1.0.0", f"run-{i:02d}") for i in range(50))

    poll(announced, timeout=180, message=f"all 50 runs announced (seed {seed})")
    wait_idle(stack)
    paths_of: dict[str, set[str]] = {}
    for prefix, path in writes:
        paths_of.setdefault(prefix, set()).add(path)

    for i in range(50):
        prefix = f"{workflow}/1.0.0/run-{i:02d}/"
        announced_as_written(stack, workflow, f"run-{i:02d}", paths_of[prefix])


def _push_body(stack, object_name: str, message_id: str) -> dict:
    blob = stack.storage_client().bucket(stack.outputs_bucket).get_blob(object_name)
    data = json.dumps({**blob._properties, "kind": "storage#object"}).encode()
    return {
        "message": {
            "attributes": {
                "bucketId": stack.outputs_bucket,
                "objectId": object_name,
                "objectGeneration": str(blob.generation),
                "eventType": "OBJECT_FINALIZE",
                "payloadFormat": "JSON_API_V1",
            },
            "data": base64.b64encode(data).decode(),
            "messageId": message_id,
            "publishTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        },
        "subscription": "projects/tally-local/subscriptions/concurrent-test",
        "deliveryAttempt": 1,
    }


def test_final_outputs_delivered_by_sixteen_concurrent_deliveries(stack, unique):
    workflow = f"race-{unique}"
    spec = sample.exact_spec(workflow, "1.0.0", 24)
    register(stack, spec)
    prefix = f"{workflow}/1.0.0/run-1/"
    paths = sample.output_paths(spec)
    write_outputs(stack, prefix, paths)
    bodies = [
        _push_body(stack, prefix + p, f"race-{unique}-{i}") for i, p in enumerate(paths[-16:])
    ]
    with cf.ThreadPoolExecutor(16) as pool:
        statuses = list(
            pool.map(
                lambda b: requests.post(stack.handler_url, json=b, timeout=60).status_code, bodies
            )
        )
    assert statuses == [200] * 16
    wait_announced(stack, workflow, "1.0.0", "run-1")
    wait_idle(stack)
    assert len(stack.completions.for_run(workflow, "1.0.0", "run-1")) == 1


def test_crashes_at_every_step_boundary_still_announce_each_run_once(stack, unique):
    faults = (
        "after_listing=0.25,after_claim=0.25,after_publish=0.25,after_mark=0.25,"
        "before_logging=0.25;seed=11"
    )
    workflow = f"crash-{unique}"
    spec = spec_with(workflow)
    register(stack, spec)
    stack.restart_handler({"TALLY_FAULTS": faults})
    # Crashes this frequent would dead-letter some claims (reconciliation's job, tested apart):
    # here every message is retried until it gets through.
    stack.bridge.max_attempts = 100
    try:
        for i in range(12):
            write_outputs(stack, f"{workflow}/1.0.0/run-{i}/", run_paths(spec, i))
        for i in range(12):
            wait_announced(stack, workflow, "1.0.0", f"run-{i}", timeout=120)
        wait_idle(stack)
        crashes = [a for a in stack.bridge.stats.attempts if a.status == 500]
        assert crashes, "fault injection crashed nothing: the test proves nothing"
    finally:
        stack.bridge.max_attempts = stack.max_attempts
        stack.restart_handler(None)
    for i in range(12):
        announced_as_written(stack, workflow, f"run-{i}", set(run_paths(spec, i)))
        keys = set(_keys(stack.completions.for_run(workflow, "1.0.0", f"run-{i}")))
        stored = poll(
            lambda i=i: (
                (r := record(stack, f"{workflow}/1.0.0/run-{i}/"))
                and r["claim_status"] == "published"
                and json.loads(r["manifest"])
            ),
            timeout=30,
            message=f"run-{i}'s announcement record marked published",
        )
        assert stored["idempotency_key"] in keys


def test_registry_outage_defers_then_the_run_completes(stack, unique):
    workflow = f"outage-{unique}"
    spec = spec_with(workflow)
    register(stack, spec)
    stack.registry_tap.down = True
    try:
        write_outputs(stack, f"{workflow}/1.0.0/run-1/", run_paths(spec, 3))
        poll(
            lambda: [
                r for r in events(stack, f"workflow = '{workflow}'") if r["outcome"] == "deferred"
            ],
            timeout=60,
            message="a deferred delivery while the registry is down",
        )
        assert not stack.completions.for_run(workflow, "1.0.0", "run-1")
    finally:
        stack.registry_tap.down = False
    wait_announced(stack, workflow, "1.0.0", "run-1", timeout=90)
    wait_idle(stack)
    assert len(stack.completions.for_run(workflow, "1.0.0", "run-1")) == 1


def test_bigquery_outage_loses_no_acknowledged_delivery(stack, unique):
    workflow = f"bq-{unique}"
    spec = spec_with(workflow)
    register(stack, spec)
    acked_before = set(stack.bridge.stats.acked)
    failures_before = sum(a.status == 503 for a in stack.bridge.stats.attempts)
    stack.bigquery_tap.down = True
    # An outage longer than the retry budget dead-letters messages (replay's job, tested apart):
    # here every message is retried until BigQuery is back.
    stack.bridge.max_attempts = 1000
    try:
        write_outputs(stack, f"{workflow}/1.0.0/run-1/", run_paths(spec, 4))
        poll(
            lambda: sum(a.status == 503 for a in stack.bridge.stats.attempts) > failures_before + 3,
            timeout=60,
            message="deliveries refused while BigQuery is down",
        )
    finally:
        stack.bigquery_tap.down = False
        stack.bridge.max_attempts = stack.max_attempts
    wait_announced(stack, workflow, "1.0.0", "run-1", timeout=90)
    wait_idle(stack)
    acked = set(stack.bridge.stats.acked) - acked_before
    assert acked
    ids = ", ".join(f"'{i}'" for i in sorted(acked))
    logged = poll(
        lambda: (
            {r["delivery_id"] for r in events(stack, f"delivery_id IN ({ids})")} >= acked or None
        ),
        timeout=30,
        message="every acknowledged delivery in the event log",
    )
    assert logged
    # Retries of the announcing delivery may publish again: the same content per key each time.
    announced_as_written(stack, workflow, "run-1", set(run_paths(spec, 4)))
    runs = stack.query(f"SELECT * FROM `${{dataset}}.runs` WHERE workflow = '{workflow}'")
    assert {r["outcome"] for r in runs} <= {"completed", "revised"}


def test_failure_marker_announces_the_run_failed_once(stack, unique):
    workflow = f"failed-{unique}"
    spec = spec_with(workflow)
    register(stack, spec)
    prefix = f"{workflow}/1.0.0/run-1/"
    write_outputs(stack, prefix, ["a.txt", "c.csv"])
    bucket = stack.storage_client().bucket(stack.outputs_bucket)
    bucket.blob(prefix + "_FAILED").upload_from_string("aligner ran out of memory")
    completions = wait_announced(stack, workflow, "1.0.0", "run-1")
    wait_idle(stack)
    assert len(stack.completions.for_run(workflow, "1.0.0", "run-1")) == 1
    assert completions[0].attributes["state"] == "FAILED"
    stored = manifest(stack, prefix)
    assert stored["state"] == "FAILED" and stored["failure_reason"] == "aligner ran out of memory"
    assert {o["path"] for o in stored["outputs"]} == {"a.txt", "c.csv"}


def test_a_run_of_one_thousand_outputs_completes_once(stack, unique):
    workflow = f"big-{unique}"
    spec = sample.exact_spec(workflow, "1.0.0", 1000)
    register(stack, spec)
    paths = sample.shuffled(sample.output_paths(spec), random.Random(1000))
    write_outputs(stack, f"{workflow}/1.0.0/run-1/", paths, writers=16)
    completions = wait_announced(stack, workflow, "1.0.0", "run-1", timeout=180)
    wait_idle(stack)
    assert len(stack.completions.for_run(workflow, "1.0.0", "run-1")) == 1
    assert completions[0].manifest["outputs_count"] == 1000

    def totals():
        rows = stack.query(
            "SELECT COUNT(*) AS deliveries, SUM(storage_operations) AS ops,"
            " SUM(storage_writes) AS writes, SUM(storage_precondition_failures) AS refused"
            f" FROM `${{dataset}}.events` WHERE workflow = '{workflow}'"
        )
        return rows[0] if rows[0]["deliveries"] >= 1000 else None

    row = poll(totals, timeout=60, message="1,000 rows logged")
    ops, writes, refused = row["ops"], row["writes"], row["refused"]
    print(f"run of 1,000 outputs: {ops} Storage operations, {writes} writes ({refused} refused)")
    # the open-run index entry, the claim, output.json, the mark, the index entry's removal; an
    # instance that saw the run open just before may add the entry back (reconciliation drops it)
    assert 5 <= writes - refused <= 5 + stack.instance_count, "nothing per output"
    assert ops <= 3 * 1000


def test_odd_object_names_complete(stack, unique):
    workflow = f"odd-{unique}"
    long_name = (
        "l" * (1024 - len(f"{workflow}/1.0.0/run ü #?%/".encode()) - len("deep/") - 4) + ".txt"
    )
    paths = ["données/é #1?.txt", "100% done.txt", "deep/" + long_name, "emoji 🧬.bin"]
    spec = {
        "workflow": workflow,
        "version": "1.0.0",
        "description": "odd names",
        "expected_outputs": [{"path": p} for p in paths],
    }
    register(stack, spec)
    prefix = f"{workflow}/1.0.0/run ü #?%/"
    assert len((prefix + "deep/" + long_name).encode()) == 1024
    write_outputs(stack, prefix, paths)
    completions = wait_announced(stack, workflow, "1.0.0", "run ü #?%")
    assert {o["path"] for o in completions[0].manifest["outputs"]} == set(paths)


def test_a_stale_claim_is_taken_over(stack, unique):
    workflow = f"stale-{unique}"
    spec = spec_with(workflow)
    register(stack, spec)
    prefix = f"{workflow}/1.0.0/run-1/"
    old = datetime.now(UTC) - timedelta(hours=2)
    run = Layout.parse(DEFAULT_TEMPLATE).run(
        stack.outputs_bucket, RunOutput(workflow, "1.0.0", "run-1", "x")
    )
    claim = Claim.at("gone", "pubsub-push:gone:", old)
    claimed = build_manifest(
        run,
        revision=1,
        state="COMPLETE",
        outputs=[],
        unexpected=[],
        failure_reason=None,
        claim=claim,
        handler_version="crashed",
    ).to_bytes()
    abandoned = Record(1, ClaimStatus.CLAIMED, claim, claimed)
    bucket = stack.storage_client().bucket(stack.outputs_bucket)
    bucket.blob(prefix + "_tally/announcement.json").upload_from_string(abandoned.to_bytes())
    write_outputs(stack, prefix, run_paths(spec, 9))
    completions = wait_announced(stack, workflow, "1.0.0", "run-1")
    # one content per key: the takeover publishes the claimed bytes, not a new listing
    assert completions[0].manifest == json.loads(claimed)
    assert poll(
        lambda: record(stack, prefix)["claim_status"] == "published",
        timeout=30,
        message="the taken-over claim marked published",
    )


def _corpus() -> list[tuple[str, bytes]]:
    cases = json.loads((ROOT / "tests" / "events" / "malformed.json").read_text())["cases"]
    bodies = []
    for case in cases:
        if "body" in case:
            body = json.dumps(case["body"]).encode()
        elif "body_text" in case:
            body = case["body_text"].encode()
        elif "body_base64" in case:
            body = base64.b64decode(case["body_base64"])
        elif "nested_depth" in case:
            body = b"[" * case["nested_depth"] + b"]" * case["nested_depth"]
        else:
            body = b'{"message": {"messageId": "23", "data": "' + b"A" * (1024 * 1024 + 8) + b'"}}'
        bodies.append((case["name"], body))
    return bodies


def _rejected_rows(stack) -> int:
    return stack.query("SELECT COUNT(*) AS n FROM `${dataset}.events` WHERE outcome = 'rejected'")[
        0
    ]["n"]


def test_malformed_deliveries_are_logged_rejected_and_acknowledged(stack):
    corpus = _corpus()
    assert len(corpus) >= 10
    before = _rejected_rows(stack)
    for name, body in corpus:
        resp = requests.post(
            stack.handler_url, data=body, timeout=60, headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 200, (name, resp.text)
        assert resp.json()["outcome"] == "rejected", (name, resp.text)
    poll(
        lambda: _rejected_rows(stack) >= before + len(corpus),
        timeout=30,
        message=f"{len(corpus)} more rejected rows in the event log",
    )
    body = b"not json at all"
    requests.post(stack.handler_url, data=body, timeout=60)
    delivery_id = f"unparsed-{hashlib.sha256(body).hexdigest()[:32]}"
    rows = poll(
        lambda: events(stack, f"delivery_id = '{delivery_id}'"),
        timeout=30,
        message="the row of an unparsable body, under an id derived from the body",
    )
    assert rows[0]["outcome"] == "rejected" and "JSON" in rows[0]["detail"]


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda children: (
                st.lists(children, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "message",
                            "data",
                            "attributes",
                            "messageId",
                            "subscription",
                            "deliveryAttempt",
                            "x",
                        ]
                    ),
                    children,
                    max_size=5,
                )
            ),
            max_leaves=12,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_random_bodies_never_get_a_5xx(stack, body):
    resp = requests.post(
        stack.handler_url, data=body, timeout=60, headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["outcome"] in ("rejected", "ignored", "unknown-workflow", "reconciled")
