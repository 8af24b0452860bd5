"""Reconciliation repairs what no retry can: lost notifications, late registrations, stuck
claims. Runs through the real platform: a reconcile request message on object-events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import poll
from tests.integration.platform_helpers import (
    events,
    manifest,
    register,
    run_paths,
    spec_with,
    wait_announced,
    wait_idle,
    write_outputs,
)

pytestmark = pytest.mark.integration


def reconcile(stack, prefix: str) -> None:
    before = len(events(stack, "outcome = 'reconciled' AND workflow IS NULL"))
    stack.publish_object_event(b"{}", {"tally-request": "reconcile", "prefix": prefix})
    poll(
        lambda: len(events(stack, "outcome = 'reconciled' AND workflow IS NULL")) > before,
        timeout=60,
        message=f"the reconcile request for {prefix} to be logged",
    )
    wait_idle(stack)


def test_a_lost_notification_is_repaired_once(stack, unique):
    workflow = f"lost-{unique}"
    spec = spec_with(workflow)
    register(stack, spec)
    prefix = f"{workflow}/1.0.0/run-1/"
    paths = run_paths(spec, 2)
    # The notification of the last required output is never sent.
    last = next(p for p in reversed(paths) if p != "optional.log")
    stack.bridge.suppress = lambda m: m.attributes.get("objectId") == prefix + last
    try:
        write_outputs(stack, prefix, [p for p in paths if p != last])
        poll(
            lambda: len(events(stack, f"workflow = '{workflow}'")) >= len(paths) - 1,
            timeout=30,
            message="the other deliveries logged",
        )
        write_outputs(stack, prefix, [last])
        poll(lambda: stack.bridge.stats.suppressed, timeout=30, message="the suppression")
        wait_idle(stack)
        assert stack.bridge.stats.suppressed, "nothing was suppressed: the test proves nothing"
        assert not stack.completions.for_run(workflow, "1.0.0", "run-1")
    finally:
        stack.bridge.suppress = None

    reconcile(stack, f"{workflow}/")
    completions = wait_announced(stack, workflow, "1.0.0", "run-1")
    assert len(completions) == 1
    # (the registration's own reconcile request logs its summary under the version, no run)
    rows = events(
        stack, f"workflow = '{workflow}' AND outcome = 'reconciled' AND run_id IS NOT NULL"
    )
    assert [r["run_id"] for r in rows] == ["run-1"]
    runs = stack.query(f"SELECT outcome FROM `${{dataset}}.runs` WHERE workflow = '{workflow}'")
    assert [r["outcome"] for r in runs] == ["reconciled"]

    reconcile(stack, f"{workflow}/")  # twice: nothing changes
    assert len(stack.completions.for_run(workflow, "1.0.0", "run-1")) == 1
    assert manifest(stack, prefix)["revision"] == 1


def test_a_version_registered_late_is_completed_by_reconciliation(stack, unique):
    workflow = f"late-{unique}"
    spec = spec_with(workflow)
    prefix = f"{workflow}/1.0.0/run-1/"
    write_outputs(stack, prefix, run_paths(spec, 3))
    rows = poll(
        lambda: [
            r
            for r in events(stack, f"workflow = '{workflow}'")
            if r["outcome"] == "unknown-workflow"
        ],
        timeout=30,
        message="unknown-workflow rows",
    )
    assert "register" in rows[0]["detail"]
    wait_idle(stack)
    assert not stack.completions.for_run(workflow, "1.0.0", "run-1")

    register(stack, spec)
    reconcile(stack, f"{workflow}/")
    assert len(wait_announced(stack, workflow, "1.0.0", "run-1")) == 1


def test_reconciliation_records_a_stalled_run_once(stack, unique, monkeypatch):
    """The same code path in-process (as `tally reconcile --local` runs it), an hour later."""
    from tally_handler.app import App
    from tally_handler.config import Config
    from tally_handler.delivery import Delivery, Reconcile, Source
    from tally_handler.reconcile import reconcile_runs
    from tally_handler.rows import StorageOps

    workflow = f"stalled-{unique}"
    register(stack, spec_with(workflow, deadline_minutes=30))
    prefix = f"{workflow}/1.0.0/run-1/"
    write_outputs(stack, prefix, ["a.txt"])
    for name, value in stack.handler_process_env().items():
        monkeypatch.setenv(name, value)
    app = App(Config.from_env(stack.handler_process_env()))
    handler, _ = app.wire()
    request = Delivery(Source.PUBSUB_PUSH, "test-reconcile", reconcile=Reconcile(f"{workflow}/"))
    later = datetime.now(UTC) + timedelta(hours=1)

    def reconcile_once():
        return reconcile_runs(
            handler,
            request,
            stack.outputs_bucket,
            Reconcile(f"{workflow}/"),
            10,
            StorageOps(),
            now=later,
        )

    first = reconcile_once()
    assert first.stalled == [f"{stack.outputs_bucket}/{prefix[:-1]}"]
    assert first.announced == [] and first.next_page_token is None
    stalled = first.results[0][1]
    assert stalled.outcome == "stalled"
    for missing in ("dir/b.txt", "c.csv", "shards/part-*.parquet (0 of 3)"):
        assert missing in stalled.detail
    assert reconcile_once().stalled == [], "a stalled run is recorded once"
    assert not stack.completions.for_run(workflow, "1.0.0", "run-1")
