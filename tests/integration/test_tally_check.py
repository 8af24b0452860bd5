"""`tally check` against the local platform: it passes on a working deployment, and fails with a
verdict that says what to fix when a part is broken (the registry refuses the writer, a BigQuery
table is missing, the event handler is down)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tally_cli.check import CHECK_WORKFLOW
from tests.conftest import ROOT
from tests.integration.test_cli import clean_environ

pytestmark = pytest.mark.integration


def check(
    stack: Any, *args: str, token: str | None = None, stdin: str | None = None
) -> tuple[int, dict]:
    """`tally check --json` in a subprocess, configured as a user would: the platform's
    environment (emulators), a writer's token, and optionally Terraform's outputs on stdin."""
    env = {**clean_environ(), **stack.client_env}
    env["TALLY_REGISTRY_TOKEN"] = token or stack.mint_token()
    done = subprocess.run(
        [sys.executable, "-m", "tally_cli", "check", "--json", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=180,
        check=False,
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert done.returncode in (0, 1), f"exit {done.returncode}: {done.stderr}"
    return done.returncode, json.loads(done.stdout)


def steps(doc: dict) -> dict[str, dict]:
    return {s["name"]: s for s in doc["steps"]}


def run_objects(stack: Any, run_id: str) -> list[str]:
    blobs = stack.storage_client().list_blobs(stack.outputs_bucket, prefix=f"{CHECK_WORKFLOW}/")
    return [b.name for b in blobs if f"/{run_id}/" in b.name]


def check_subscriptions(stack: Any) -> list[str]:
    project = f"projects/{stack.names.project}"
    return [
        s.name
        for s in stack.subscriber().list_subscriptions(request={"project": project})
        if "/tally-check-" in s.name
    ]


def test_check_passes_on_the_local_platform(stack):
    code, doc = check(stack, "--wait", "60")
    assert code == 0, json.dumps(doc, indent=1)
    assert doc["passed"] is True
    assert all(s["status"] == "ok" for s in doc["steps"]), doc["steps"]
    assert list(steps(doc)) == [
        "registry",
        "register",
        "refuse-unauth",
        "subscription",
        "write-run",
        "announcement",
        "manifest",
        "event-log",
        "runs-row",
        "cleanup",
    ]
    # It cleaned up what it wrote, and its temporary subscription.
    assert run_objects(stack, doc["run_id"]) == []
    assert check_subscriptions(stack) == []
    # Once more: the reserved spec is reused, a new run is announced.
    code, again = check(stack, "--wait", "60")
    assert code == 0, again
    assert steps(again)["register"]["detail"] == "already registered, unchanged"
    assert again["run_id"] != doc["run_id"]


def terraform_outputs(stack: Any, **overrides: str) -> str:
    names = stack.names
    values = {
        "registry_url": stack.registry_url,
        "outputs_bucket_name": names.outputs_bucket,
        "run_completions_topic_id": names.topic(names.completions_topic),
        "bigquery_dataset_id": f"{names.project}.{names.dataset}",
        "events_table_id": names.table("events"),
        "runs_table_id": names.table("runs"),
        **overrides,
    }
    return json.dumps(
        {k: {"sensitive": False, "type": "string", "value": v} for k, v in values.items()}
    )


def test_check_fails_when_the_registry_refuses_the_writer(stack):
    outputs = terraform_outputs(stack)
    code, doc = check(
        stack,
        "--terraform-outputs",
        "-",
        token=stack.mint_token(email="not-a-writer@tally.test"),
        stdin=outputs,
    )
    assert code == 1
    by_name = steps(doc)
    assert by_name["registry"]["status"] == "ok"
    assert by_name["register"]["status"] == "failed"
    assert "403" in by_name["register"]["detail"]
    assert "registry.writers" in by_name["register"]["fix"]
    assert by_name["write-run"]["status"] == "skipped"
    assert by_name["announcement"]["status"] == "skipped"


def test_check_fails_when_a_bigquery_table_is_missing(stack):
    missing = stack.names.table("runs_deleted")
    outputs = terraform_outputs(stack, runs_table_id=missing)
    code, doc = check(stack, "--terraform-outputs", "-", "--wait", "60", stdin=outputs)
    assert code == 1
    by_name = steps(doc)
    assert by_name["announcement"]["status"] == "ok"
    assert by_name["event-log"]["status"] == "ok"
    assert by_name["runs-row"]["status"] == "failed"
    assert missing in by_name["runs-row"]["detail"]
    assert "terraform apply creates" in by_name["runs-row"]["fix"]
    assert by_name["cleanup"]["status"] == "ok"
    assert run_objects(stack, doc["run_id"]) == []


def test_check_fails_when_the_event_handler_is_down(stack):
    """The handler is deployed but cannot start its work (an invalid setting): every push gets a
    503 and nothing is logged, as when it is down or unreachable."""
    stack.restart_handler({"TALLY_CLAIM_LEASE_SECONDS": "not-a-number"})
    try:
        code, doc = check(stack, "--wait", "10")
    finally:
        stack.restart_handler(None)
    assert code == 1
    by_name = steps(doc)
    assert by_name["write-run"]["status"] == "ok"
    announcement = by_name["announcement"]
    assert announcement["status"] == "failed"
    assert "logged no delivery" in announcement["detail"]
    assert "event handler is down" in announcement["fix"]
    assert by_name["manifest"]["status"] == "skipped"
    assert by_name["cleanup"]["status"] == "ok"
    assert check_subscriptions(stack) == []
