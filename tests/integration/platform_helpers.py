"""Helpers for tests that drive runs through the whole local platform."""

from __future__ import annotations

import concurrent.futures as cf
import json
import random
import time
from typing import Any

from devstack import sample
from tests.conftest import poll


def register(stack: Any, spec: dict[str, Any]) -> None:
    """Register a workflow version over HTTP, as an authorised writer, and let the reconcile
    request the registration publishes be handled first: a test's runs are then announced by
    their own deliveries, not by that reconciliation racing them."""
    resp = stack.register(spec)
    assert resp.status_code in (200, 201), resp.text
    if resp.headers.get("Tally-Reconcile") == "requested":
        wait_idle(stack)


def spec_with(workflow: str, version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "workflow": workflow,
        "version": version,
        "description": "test workflow",
        "expected_outputs": [
            {"path": "a.txt"},
            {"path": "dir/b.txt"},
            {"path": "c.csv"},
            {"pattern": "shards/part-*.parquet", "count": 3},
            {"path": "optional.log", "required": False},
        ],
    }
    spec.update(extra)
    return spec


def write_outputs(
    stack: Any, prefix: str, paths: list[str], writers: int = 8, content: bytes = b"x"
) -> None:
    bucket = stack.storage_client().bucket(stack.outputs_bucket)
    with cf.ThreadPoolExecutor(writers) as pool:
        list(pool.map(lambda p: bucket.blob(prefix + p).upload_from_string(content), paths))


def run_paths(spec: dict[str, Any], seed: int) -> list[str]:
    return sample.shuffled(sample.output_paths(spec), random.Random(seed))


def duplicate_notification(stack: Any, object_name: str, copies: int = 1) -> None:
    """Publish the finalize notification of an existing object again (at-least-once delivery)."""
    blob = stack.storage_client().bucket(stack.outputs_bucket).get_blob(object_name)
    data = json.dumps({**blob._properties, "kind": "storage#object"}).encode()
    attributes = {
        "bucketId": stack.outputs_bucket,
        "objectId": object_name,
        "objectGeneration": str(blob.generation),
        "eventType": "OBJECT_FINALIZE",
        "eventTime": blob.time_created.isoformat().replace("+00:00", "Z"),
        "payloadFormat": "JSON_API_V1",
    }
    for _ in range(copies):
        stack.publish_object_event(data, attributes)


def events(stack: Any, where: str) -> list[dict[str, Any]]:
    return stack.query(
        f"SELECT * FROM `${{dataset}}.events` WHERE {where} ORDER BY received_time", timeout=20
    )


def wait_announced(stack: Any, workflow: str, version: str, run_id: str, timeout: float = 60):
    return poll(
        lambda: stack.completions.for_run(workflow, version, run_id),
        timeout=timeout,
        message=f"an announcement of {workflow}/{version}/{run_id}",
    )


def manifest(stack: Any, prefix: str) -> dict[str, Any] | None:
    blob = stack.storage_client().bucket(stack.outputs_bucket).get_blob(prefix + "output.json")
    return None if blob is None else json.loads(blob.download_as_bytes())


def record(stack: Any, prefix: str) -> dict[str, Any] | None:
    """The run's announcement record (``_tally/announcement.json``), parsed."""
    name = prefix + "_tally/announcement.json"
    blob = stack.storage_client().bucket(stack.outputs_bucket).get_blob(name)
    return None if blob is None else json.loads(blob.download_as_bytes())


def wait_idle(stack: Any, timeout: float = 900, stall: float | None = None) -> None:
    """The bridge has nothing in flight or waiting, several times in a row.

    A loaded machine is slow, not stuck: this fails when no delivery attempt has ended for
    `stall` seconds while work remains (default: 90 s, or twice the longest backoff), or after
    `timeout` in all."""
    stall = stall or max(90.0, 2 * stack.max_backoff)
    streak = {"n": 0}
    progress = {"attempts": len(stack.bridge.stats.attempts), "at": time.monotonic()}

    def quiet() -> bool:
        attempts = len(stack.bridge.stats.attempts)
        if attempts != progress["attempts"]:
            progress.update(attempts=attempts, at=time.monotonic())
        idle = stack.bridge.idle()
        if not idle and time.monotonic() - progress["at"] > stall:
            raise TimeoutError(f"the push bridge made no delivery attempt for {stall:.0f} s")
        streak["n"] = streak["n"] + 1 if idle else 0
        return streak["n"] >= 10

    poll(quiet, timeout=timeout, interval=0.05, message="the push bridge to go idle")


def announced_as_written(stack: Any, workflow: str, run_id: str, paths: set[str]) -> None:
    """One content per key, and the latest revision lists every output written: a run announced
    before its optional output landed (parallel writers decide) gets revision 2 for it."""

    def latest():
        completions = stack.completions.for_run(workflow, "1.0.0", run_id)
        return max(completions, key=lambda c: int(c.attributes["revision"]))

    poll(
        lambda: {o["path"] for o in latest().manifest["outputs"]} == paths,
        timeout=60,
        message=f"{run_id}'s latest revision to list every output written",
    )
    contents: dict[str, set[str]] = {}
    for c in stack.completions.for_run(workflow, "1.0.0", run_id):
        contents.setdefault(c.attributes["idempotency_key"], set()).add(
            json.dumps(c.manifest, sort_keys=True)
        )
    assert all(len(c) == 1 for c in contents.values()), f"{run_id}: two contents under one key"
    assert len(contents) <= 2, f"{run_id}: {len(contents)} revisions for one late output"
