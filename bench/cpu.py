"""Handler CPU per delivery: tally's event handler in-process, without I/O.

Each delivery goes through the handler's own HTTP edge (`App.handle`: parse the push envelope,
match the layout, decide completeness against the run's known outputs, build the event row and
log line; for the completing delivery, list the whole folder and build the manifest), with its
Storage, registry, Pub/Sub and BigQuery replaced by in-memory doubles. Outputs land one at a
time in shuffled order, each followed by its own delivery (the handler keeping up), so the
figure is the decision a delivery makes while its run is in progress; the completing delivery,
which lists and manifests the whole run, is reported apart.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HANDLER_DIR = ROOT / "functions" / "event_handler"
BUCKET = "tally-outputs"
GOAL_MS = 2.0


def _handler_modules() -> Any:
    if str(HANDLER_DIR) not in sys.path:
        sys.path.insert(0, str(HANDLER_DIR))
    from tally_handler import adapters

    return adapters


class _NullPublisher:
    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        return "1"


class _NullLog:
    def write_event(self, row: dict[str, Any]) -> None:
        pass

    def write_run(self, row: dict[str, Any]) -> None:
        pass


def envelope(name: str, generation: int, message_id: int) -> bytes:
    """The push envelope of a finalize notification, as fake-gcs-server and Storage send it."""
    resource = {
        "kind": "storage#object",
        "bucket": BUCKET,
        "name": name,
        "generation": str(generation),
        "metageneration": "1",
        "size": "1",
        "contentType": "text/plain",
        "crc32c": "AAAAAA==",
        "md5Hash": "1B2M2Y8AsgTpgAmY7PhCfg==",
        "timeCreated": "2026-11-25T12:00:00.000000Z",
        "updated": "2026-11-25T12:00:00.000000Z",
    }
    message = {
        "attributes": {
            "bucketId": BUCKET,
            "objectId": name,
            "objectGeneration": str(generation),
            "eventType": "OBJECT_FINALIZE",
            "eventTime": "2026-11-25T12:00:00.000000Z",
            "payloadFormat": "JSON_API_V1",
            "notificationConfig": f"projects/_/buckets/{BUCKET}/notificationConfigs/1",
        },
        "data": base64.b64encode(json.dumps(resource).encode()).decode(),
        "messageId": str(message_id),
        "message_id": str(message_id),
        "publishTime": "2026-11-25T12:00:00.123Z",
        "publish_time": "2026-11-25T12:00:00.123Z",
    }
    body = {
        "message": message,
        "subscription": "projects/tally-local/subscriptions/object-events-push",
        "deliveryAttempt": 1,
    }
    return json.dumps(body).encode()


def _app(spec: Any, storage: Any, cache_runs: int) -> Any:
    _handler_modules()
    from tally_handler.app import App
    from tally_handler.config import Config

    config = Config.from_env(
        {
            "TALLY_PROJECT": "tally-local",
            "TALLY_OUTPUTS_BUCKET": BUCKET,
            "TALLY_REGISTRY_URL": "http://registry.invalid",
            "TALLY_COMPLETIONS_TOPIC": "run-completions",
            "TALLY_EVENTS_TABLE": "tally-local.tally.events",
            "TALLY_RUNS_TABLE": "tally-local.tally.runs",
            "TALLY_PRESENCE_CACHE_RUNS": str(cache_runs),
        }
    )
    log = _NullLog()
    app = App(
        config,
        storage=storage,
        publisher=_NullPublisher(),
        event_log=log,
        spec_for=lambda workflow, version: spec,
    )
    return app


def time_run(n: int, seed: int, cache_runs: int) -> tuple[list[float], float]:
    """(ms of every delivery but the completing one, ms of the completing one)."""
    _handler_modules()
    from tally_handler.spec import Spec

    from devstack import sample

    document = sample.exact_spec("cpu", "1.0.0", n)
    spec = Spec.from_json(document)
    from tally_handler.memory import MemoryStorage

    storage = MemoryStorage()
    app = _app(spec, storage, cache_runs)
    prefix = f"cpu/1.0.0/run-{seed}/"
    order = sample.shuffled(sample.output_paths(document), random.Random(seed))
    headers = {"Content-Type": "application/json", "User-Agent": "APIs-Google"}
    samples: list[float] = []
    completing = 0.0
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        for index, path in enumerate(order):
            body = envelope(prefix + path, storage.put(BUCKET, prefix + path), index)
            started = time.perf_counter()
            status, result = app.handle(body, headers)
            elapsed = (time.perf_counter() - started) * 1000
            if status != 200:
                raise RuntimeError(f"delivery {index} of N={n}: {status} {result}")
            if result["outcome"] == "completed":
                completing = elapsed
            else:
                samples.append(elapsed)
    if not completing:
        raise RuntimeError(f"the run of N={n} never completed")
    return samples, completing


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(quick: bool = False) -> dict[str, Any]:
    sizes = [10, 100, 1000] if quick else [10, 100, 1000, 10000]
    target = 300 if quick else 3000  # deliveries timed per size, at least one run
    results: dict[str, Any] = {"goal_ms": GOAL_MS, "sizes": []}
    time_run(10, -1, 1000)  # warm: the handler's lazy imports happen at its first delivery
    gc.collect()
    for n in sizes:
        for cache_runs in (1000, 0):
            samples: list[float] = []
            completing: list[float] = []
            for seed in range(max(1, target // n)):
                run_samples, last = time_run(n, seed, cache_runs)
                samples += run_samples
                completing.append(last)
            results["sizes"].append(
                {
                    "n": n,
                    "presence_cache": cache_runs > 0,
                    "deliveries": len(samples) + len(completing),
                    "p50_ms": percentile(samples, 0.50),
                    "p99_ms": percentile(samples, 0.99),
                    "mean_ms": statistics.fmean(samples) if samples else 0.0,
                    "completing_ms": statistics.median(completing),
                    "per_delivery_incl_completing_ms": (sum(samples) + sum(completing))
                    / (len(samples) + len(completing)),
                }
            )
    return results


def report(results: dict[str, Any]) -> str:
    lines = ["handler CPU per delivery (in-process, no I/O)"]
    for row in results["sizes"]:
        cache = "cache on " if row["presence_cache"] else "cache off"
        lines.append(
            f"  N={row['n']:<6} {cache} p50 {row['p50_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms"
            f"  mean (incl. completing) {row['per_delivery_incl_completing_ms']:.3f} ms"
            f"  completing delivery {row['completing_ms']:.1f} ms"
            f"  (goal <= {results['goal_ms']} ms)"
        )
    return "\n".join(lines)
