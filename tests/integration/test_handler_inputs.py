"""What reaches the event handler over HTTP besides ordinary push deliveries: CloudEvents, a
last attempt, and the claim of a very large run (always a single-request upload)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import parse_qs

import pytest
import requests
from tally_handler.announce import Actor
from tally_handler.app import App
from tally_handler.completeness import Complete, Entry, Output
from tally_handler.config import Config
from tally_handler.layout import RunOutput
from tally_handler.outcomes import Outcome
from tally_handler.spec import ExpectedPath

from tests.conftest import ROOT, poll
from tests.integration.platform_helpers import events, manifest

pytestmark = pytest.mark.integration


def _fixture(name: str) -> dict:
    return json.loads((ROOT / "tests" / "events" / f"{name}.json").read_text())


@pytest.mark.parametrize(
    "name", ["cloudevent_binary_storage_finalized", "cloudevent_structured_message_published"]
)
def test_cloudevents_are_accepted_and_logged(stack, unique, name):
    event = _fixture(name)
    headers = dict(event["headers"])
    body = event["body"]
    # A unique id per test session keeps this test's row apart.
    if "ce-id" in headers:
        headers["ce-id"] = f"{unique}-{headers['ce-id']}"
        delivery_id = headers["ce-id"]
    else:
        delivery_id = f"{unique}-{body['id']}"
        message = {**body["data"]["message"], "messageId": delivery_id}
        body = {**body, "id": delivery_id, "data": {**body["data"], "message": message}}
    resp = requests.post(stack.handler_url, data=json.dumps(body), headers=headers, timeout=30)
    assert resp.status_code == 200, resp.text
    rows = poll(
        lambda: events(stack, f"delivery_id = '{delivery_id}'"),
        timeout=30,
        message=f"the row of CloudEvent {delivery_id}",
    )
    assert rows[0]["source"] == "cloudevent"
    assert rows[0]["event_type"] == "OBJECT_FINALIZE"
    assert rows[0]["object"].startswith("variant-calling/")
    # Its bucket is not the platform's, and its version is unknown here: logged, acknowledged.
    assert rows[0]["outcome"] in ("unknown-workflow", "ignored")


def test_the_last_attempt_before_dead_lettering_says_so(stack, unique):
    envelope = _fixture("push_finalize_emulator")["body"]
    envelope["message"]["messageId"] = envelope["message"]["message_id"] = f"last-{unique}"
    envelope["deliveryAttempt"] = stack.max_attempts
    resp = requests.post(stack.handler_url, json=envelope, timeout=30)
    assert resp.status_code == 200
    row = poll(
        lambda: events(stack, f"delivery_id = 'last-{unique}'"),
        timeout=30,
        message="the last attempt's row",
    )[0]
    assert row["last_attempt"] is True and row["delivery_attempt"] == stack.max_attempts
    assert "dead-letter" in row["detail"]


@pytest.mark.parametrize("outputs", [10_000, 40_000])
def test_the_claim_of_a_huge_run_is_a_single_request_upload(stack, unique, monkeypatch, outputs):
    """The local Storage ignores ifGenerationMatch on resumable uploads: the claim must never be
    one, even when the manifest lists tens of thousands of outputs (it is split beyond 4 MiB)."""
    env = stack.handler_process_env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    handler, _ = App(Config.from_env(env)).wire()
    workflow = f"huge-{unique}"
    run = handler.layout.run(stack.outputs_bucket, RunOutput(workflow, "1.0.0", "run-1", "x"))
    now = datetime.now(UTC).isoformat()
    items = tuple(
        Output(
            Entry(
                f"out/part-{i:06d}.parquet",
                1_700_000_000_000_000 + i,
                1024,
                "AAAAAA==",
                "1B2M2Y8AsgTpgAmY7PhCfg==",
                "application/octet-stream",
                now,
                now,
            ),
            ExpectedPath(f"out/part-{i:06d}.parquet"),
        )
        for i in range(outputs)
    )
    actor = Actor(f"huge-{unique}", f"pubsub-push:huge-{unique}:{now}")
    stack.storage_tap.record(True)
    try:
        result = handler.announcer.announce(run, Complete(items, ()), actor, Outcome.COMPLETED)
        log = list(stack.storage_tap.log or [])
    finally:
        stack.storage_tap.record(False)
    assert result.outcome is Outcome.COMPLETED  # type: ignore[union-attr]
    uploads = [parse_qs(query) for method, path, query, _ in log if path.startswith("/upload/")]
    # The object name travels in the multipart body; the open-run index entry, the claim,
    # output.json and the mark carry preconditions.
    guarded = [q for q in uploads if "ifGenerationMatch" in q]
    assert guarded[1]["ifGenerationMatch"] == ["0"], "the claim: create-if-absent"
    assert [q["ifGenerationMatch"] == ["0"] for q in guarded] == [True, True, True, False], (
        "the index entry, the claim, output.json, the mark"
    )
    assert all(q["uploadType"] == ["multipart"] for q in guarded), uploads
    # Only the split-off output list (content-addressed, no precondition) may be large enough
    # for google-cloud-storage to switch to a resumable upload.
    resumable = [q for q in uploads if q["uploadType"] == ["resumable"]]
    assert len(resumable) <= 2 and all("ifGenerationMatch" not in q for q in resumable)
    assert bool(resumable) == (outputs == 40_000)
    stored = manifest(stack, run.prefix)
    assert stored["revision"] == 1 and stored["outputs_count"] == outputs
    if outputs == 40_000:
        assert stored["outputs_object"].startswith("_tally/outputs-") and stored["outputs"] == []
