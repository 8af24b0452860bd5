"""`python -m devstack run` (make run) and `python -m devstack demo` (make demo)."""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import time
from typing import Any

import requests

from devstack import sample
from devstack.stack import Stack, StackError

DEMO_WORKFLOW = "variant-calling"


def _say(text: str = "") -> None:
    print(text, flush=True)


def _event_rows(stack: Stack, run_id: str) -> list[dict[str, Any]]:
    return stack.query(
        "SELECT delivery_id, delivery_attempt, output_path, outcome, detail, storage_operations,"
        " received_time FROM `${dataset}.events`"
        f" WHERE run_id = '{run_id}' ORDER BY received_time",
        timeout=10,
    )


def demo(stack: Stack, seed: int = 7) -> bool:
    """Write one sample run, follow its deliveries, show the announcement. True if announced once."""
    registry = stack.registry_url
    resp = requests.get(f"{registry}/workflows/{DEMO_WORKFLOW}/default", timeout=10)
    resp.raise_for_status()
    doc = resp.json()
    spec = doc.get("spec", doc)
    version = spec["version"]
    _say(f"\n1. The registry's default version of {DEMO_WORKFLOW} is {version}; a run must produce:")
    for expected in spec["expected_outputs"]:
        what = expected.get("path") or f"{expected['pattern']} (exactly {expected['count']})"
        optional = "" if expected.get("required", True) else "  (optional)"
        _say(f"     {what}{optional}")

    run_id = time.strftime("demo-%Y%m%d-%H%M%S")
    rng = random.Random(seed)
    paths = sample.shuffled(sample.output_paths(spec), rng)
    bucket = stack.storage_client().bucket(stack.outputs_bucket)
    prefix = f"{DEMO_WORKFLOW}/{version}/{run_id}/"
    _say(f"\n2. Writing run {run_id}: {len(paths)} outputs in shuffled order (seed {seed})")
    wrote_at = 0.0
    for path in paths:
        bucket.blob(prefix + path).upload_from_string(f"demo output {path}\n")
        wrote_at = time.time()
        _say(f"     wrote gs://{stack.outputs_bucket}/{prefix}{path}")
    # Storage delivers at least once: publish one notification a second time.
    first = bucket.get_blob(prefix + paths[0])
    data = json.dumps({**first._properties, "kind": "storage#object"}).encode()
    stack.publish_object_event(
        data,
        {
            "bucketId": stack.outputs_bucket,
            "objectId": first.name,
            "objectGeneration": str(first.generation),
            "eventType": "OBJECT_FINALIZE",
            "eventTime": first.time_created.isoformat().replace("+00:00", "Z"),
            "payloadFormat": "JSON_API_V1",
        },
    )
    _say(f"     published a duplicate notification for {paths[0]}")

    _say("\n3. Deliveries as the event handler logs them to BigQuery (tally.events):")
    expected_rows = len(paths) + 1
    seen: set[tuple[str, int]] = set()
    deadline = time.time() + 60
    completions = []
    while time.time() < deadline:
        try:
            rows = _event_rows(stack, run_id)
        except Exception as exc:  # the emulator is busy; try again
            _say(f"     (query failed: {exc}; retrying)")
            rows = []
        for row in rows:
            key = (row["delivery_id"], row["delivery_attempt"] or 0)
            if key not in seen:
                seen.add(key)
                _say(
                    f"     {row['delivery_id']:>6} attempt {row['delivery_attempt']}"
                    f"  {row['outcome']:<17} {row['output_path'] or '-':<28} {row['detail'] or ''}"
                )
        completions = stack.completions.for_run(DEMO_WORKFLOW, version, run_id)
        if len(seen) >= expected_rows and completions:
            break
        time.sleep(0.3)

    _say("\n4. The completion message on the run-completions topic:")
    if not completions:
        _say("     none arrived within 60 s: read .devstack/logs/handler.log")
        return False
    first_completion = completions[0]
    latency = first_completion.received_at - wrote_at
    _say(f"     attributes: {json.dumps(first_completion.attributes, sort_keys=True)}")
    _say(f"     {latency * 1000:.0f} ms after the last output was written")

    manifest_blob = bucket.get_blob(prefix + "output.json")
    _say(f"\n5. The manifest gs://{stack.outputs_bucket}/{prefix}output.json:")
    if manifest_blob is not None:
        manifest = json.loads(manifest_blob.download_as_bytes())
        _say(f"     status {manifest.get('status')}, state {manifest.get('state')},"
             f" {len(manifest.get('outputs', []))} outputs, idempotency key"
             f" {manifest.get('idempotency_key')}")
        for output in manifest.get("outputs", [])[:6]:
            _say(f"       {output.get('path')}  generation {output.get('generation')}"
                 f"  {output.get('size')} bytes")

    _say("\n6. A BigQuery query on the event log:")
    sql = (
        "SELECT outcome, COUNT(*) AS deliveries FROM `${dataset}.events`"
        f" WHERE run_id = '{run_id}' GROUP BY outcome ORDER BY outcome"
    )
    _say(f"     {sql.replace('${dataset}', stack.names.project + '.' + stack.names.dataset)}")
    for row in stack.query(sql):
        _say(f"       {row['outcome']:<18} {row['deliveries']}")

    keys = {c.attributes.get("idempotency_key") for c in completions}
    once = len(keys) == 1
    _say(f"\nRun {run_id} announced {'exactly once' if once else f'{len(keys)} times'}.")
    return once


def _print_endpoints(stack: Stack, env_file: str) -> None:
    _say(
        f"""
The platform keeps serving until Ctrl-C.
  registry       {stack.registry_url}
  event handler  {stack.handler_url}
  storage        {stack.storage_url}   (bucket {stack.outputs_bucket})
  pubsub         {stack.pubsub_host}
  bigquery       {stack.bigquery_url}   (dataset {stack.names.project}.{stack.names.dataset})
  logs           {stack.log_dir}

Try:
  source {env_file}
  curl -s $TALLY_REGISTRY_URL/workflows | python3 -m json.tool
  curl -s $TALLY_REGISTRY_URL/workflows/{DEMO_WORKFLOW}/default | python3 -m json.tool
"""
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("command", choices=["run", "demo"], help="run: demo, then serve; demo: exit")
    parser.add_argument("--seed", type=int, default=7, help="seed of the demo's output order")
    args = parser.parse_args(argv)

    # SIGTERM ends the platform as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    _say("Starting the local platform (fake-gcs-server, pstest, bqemulator, two functions)")
    stack = Stack(quiet=False)
    try:
        stack.start()
        env_file = stack.write_env_file()
        _say(f"Platform ready in {stack.timings['ready']:.1f} s; clients: source {env_file}")
        ok = demo(stack, args.seed)
        if args.command == "demo":
            return 0 if ok else 1
        _print_endpoints(stack, str(env_file))
        while True:
            time.sleep(3600)
    except StackError as exc:
        _say(f"\nThe local platform could not start: {exc}")
        return 2
    except KeyboardInterrupt:
        _say("\nStopping the local platform")
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
