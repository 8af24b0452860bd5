"""The scratch-file baseline: the design tally replaces, as an HTTP Cloud Function.

The scratch-file aggregation proposed for WFL's ``sg_update_clio`` (broadinstitute/wfl pull
request 286), written from that description, not from tally's code. Per finalize event of an
object `{workflow}/{version}/{run_id}/{path}`:

* an expected output: read the scratch file `output.json` of the run folder (with its
  generation), add the output's path, write it back with `ifGenerationMatch` (0 when it does not
  exist yet). A `412` means another invocation won the race: back off a little (jittered), read it
  down again and retry; the retries are bounded by the number of expected outputs, as in the
  proposal. If the path is already listed, another invocation did the job: exit without effect.
* the scratch file itself (its writes trigger invocations too): read its metadata; if it is
  already claimed, or does not list every expected output, exit. Otherwise claim it by adding a
  custom metadata key with `ifMetagenerationMatch` (a losing invocation gets `412` and exits) and
  announce the run on the completions topic.

The local Storage (fake-gcs-server) does not enforce `ifMetagenerationMatch`, so several
invocations that read the complete scratch file may all "win" the claim: the benchmark counts
those double announcements and reports them as a finding.

Expected outputs come from tally's registry over HTTP (cached per instance), as tally's own
handler gets them, so that both designs make the same Storage requests for the same reason only.
Every delivery appends one JSON line with its own Storage counters to BASELINE_EVENTS_LOG.

Environment: BASELINE_PROJECT, BASELINE_REGISTRY_URL, BASELINE_COMPLETIONS_TOPIC,
BASELINE_EVENTS_LOG, STORAGE_EMULATOR_HOST, PUBSUB_EMULATOR_HOST.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

SCRATCH = "output.json"
CLAIM_KEY = "announced-by"  # the custom metadata key of the claim
BACKOFF_SECONDS = 0.02  # the jittered backoff after a 412 grows up to 5 times this

_lock = threading.Lock()
_clients: dict[str, Any] = {}
_expected: dict[tuple[str, str], frozenset[str]] = {}


class RetriesExhausted(Exception):
    """More 412s than expected outputs: let Pub/Sub redeliver."""


@dataclass
class Counters:
    reads: int = 0
    writes: int = 0  # attempts, including the ones refused with 412
    precondition_failures: int = 0
    metadata_writes: int = 0


def _client(name: str) -> Any:
    with _lock:
        if name not in _clients:
            if name == "storage":
                from google.auth.credentials import AnonymousCredentials
                from google.cloud import storage

                _clients[name] = storage.Client(
                    project=os.environ["BASELINE_PROJECT"], credentials=AnonymousCredentials()
                )
            elif name == "publisher":
                from google.cloud import pubsub_v1

                _clients[name] = pubsub_v1.PublisherClient(
                    batch_settings=pubsub_v1.types.BatchSettings(max_latency=0.001)
                )
            else:
                import requests

                _clients[name] = requests.Session()
        return _clients[name]


def expected_outputs(workflow: str, version: str) -> frozenset[str]:
    """The spec's exact paths, from the registry (versions are immutable: cached forever)."""
    key = (workflow, version)
    if key not in _expected:
        base = os.environ["BASELINE_REGISTRY_URL"].rstrip("/")
        resp = _client("http").get(f"{base}/workflows/{workflow}/versions/{version}", timeout=10)
        resp.raise_for_status()
        paths = frozenset(e["path"] for e in resp.json()["expected_outputs"] if "path" in e)
        _expected[key] = paths
    return _expected[key]


def _read_scratch(blob: Any, counters: Counters) -> tuple[list[str], int]:
    """The paths listed in the scratch file and its generation (0: it does not exist).

    `blob` must be fresh: a Blob that knows a generation downloads that generation, which is
    gone (404) once the scratch file has been rewritten.
    """
    from google.api_core.exceptions import NotFound

    counters.reads += 1
    try:
        data = blob.download_as_bytes()
    except NotFound:
        return [], 0
    return json.loads(data)["outputs"], int(blob.generation)


def add_output(bucket: Any, prefix: str, path: str, expected: frozenset[str], c: Counters) -> str:
    """Read-modify-write of the scratch file under a generation precondition."""
    from google.api_core.exceptions import PreconditionFailed

    for attempt in range(len(expected) + 1):
        blob = bucket.blob(prefix + SCRATCH)
        outputs, generation = _read_scratch(blob, c)
        if path in outputs:
            return "duplicate"  # another invocation already did this one's job
        body = json.dumps({"outputs": sorted([*outputs, path])}).encode()
        c.writes += 1
        try:
            blob.upload_from_string(
                body, content_type="application/json", if_generation_match=generation
            )
        except PreconditionFailed:
            c.precondition_failures += 1
            time.sleep(random.uniform(0, BACKOFF_SECONDS * min(attempt + 1, 5)))
            continue
        return "recorded"
    raise RetriesExhausted(f"{len(expected) + 1} attempts lost the race for {prefix}{SCRATCH}")


def claim_and_announce(
    bucket: Any, prefix: str, expected: frozenset[str], run: tuple[str, str, str], c: Counters
) -> str:
    """On a scratch-file event: claim a complete, unclaimed scratch file and announce the run."""
    from google.api_core.exceptions import NotFound, PreconditionFailed

    c.reads += 1
    blob = bucket.get_blob(prefix + SCRATCH)  # metadata: the claim key and metageneration
    if blob is None:
        return "gone"
    if (blob.metadata or {}).get(CLAIM_KEY):
        return "already-claimed"
    c.reads += 1
    content = bucket.blob(prefix + SCRATCH)  # fresh: get_blob's mediaLink bypasses the tap
    try:
        outputs = json.loads(content.download_as_bytes(if_generation_match=blob.generation))[
            "outputs"
        ]
    except (NotFound, PreconditionFailed):
        return "superseded"  # rewritten since: that write's own event decides
    if not expected <= set(outputs):
        return "incomplete"
    blob.metadata = {CLAIM_KEY: f"{os.getpid()}-{threading.get_ident()}-{time.time_ns()}"}
    c.writes += 1
    c.metadata_writes += 1
    try:
        blob.patch(if_metageneration_match=blob.metageneration)
    except PreconditionFailed:
        c.precondition_failures += 1
        return "claim-lost"
    workflow, version, run_id = run
    topic = _client("publisher").topic_path(
        os.environ["BASELINE_PROJECT"], os.environ["BASELINE_COMPLETIONS_TOPIC"]
    )
    announcement = {"workflow": workflow, "version": version, "run_id": run_id}
    body = json.dumps({**announcement, "outputs": sorted(outputs)}).encode()
    _client("publisher").publish(
        topic, body, workflow=workflow, version=version, run_id=run_id
    ).result(30)
    return "announced"


def _log(line: dict[str, Any]) -> None:
    with _lock, open(os.environ["BASELINE_EVENTS_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps(line) + "\n")


def process(envelope: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """One push delivery: (log line, HTTP status)."""
    message = envelope.get("message") or {}
    attributes = message.get("attributes") or {}
    name = attributes.get("objectId", "")
    line: dict[str, Any] = {"message_id": message.get("messageId"), "object": name}
    line["at"] = time.time()  # when processing started (the driver compares with its writes)
    parts = name.split("/", 3)
    if attributes.get("eventType") != "OBJECT_FINALIZE" or len(parts) < 4:
        return {**line, "outcome": "ignored"}, 200
    workflow, version, run_id, path = parts
    line.update(workflow=workflow, version=version, run_id=run_id, path=path)
    counters = Counters()
    started = time.perf_counter()
    status = 200
    try:
        expected = expected_outputs(workflow, version)
        bucket = _client("storage").bucket(attributes["bucketId"])
        prefix = f"{workflow}/{version}/{run_id}/"
        if path == SCRATCH:
            run = (workflow, version, run_id)
            outcome = claim_and_announce(bucket, prefix, expected, run, counters)
        elif path in expected:
            outcome = add_output(bucket, prefix, path, expected, counters)
        else:
            outcome = "unexpected"
    except RetriesExhausted:
        outcome, status = "retries-exhausted", 503
    except Exception as exc:  # Pub/Sub redelivers
        outcome, status = f"error: {type(exc).__name__}: {exc}", 503
    line.update(asdict(counters), outcome=outcome, status=status)
    line["ms"] = (time.perf_counter() - started) * 1000
    return line, status


def handle(request: Any) -> tuple[str, int]:
    if request.method == "GET":
        return "ok", 200
    envelope = request.get_json(silent=True) or {}
    line, status = process(envelope)
    line["attempt"] = envelope.get("deliveryAttempt")
    _log(line)
    return json.dumps({"outcome": line["outcome"]}), status
