"""The end-to-end driver: write runs of N outputs, let the notifications flow, measure each run.

Both designs get the same event stream: the same spec (registered once in tally's registry,
which both read), the same object names written in the same shuffled order by the same number
of concurrent writers, as fast as they can (a workflow's final copy step is a burst). The
notifications go through the real Pub/Sub emulator and a push bridge with delivery concurrency 8
to each design's function. A run is measured alone, one after the other, tally's and the
baseline's runs interleaved so both see the same machine noise.

Per run: Storage operations by kind from the design's own counters (tally: the SUM of its events
table columns; baseline: its own JSON lines) and, independently, from the counting proxy in front
of its Storage (reset before the run); the time from the last output's write (the writer's
response) to the first completion message seen; announcements; deliveries.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

from devstack import sample

WRITERS = 8
SETTLE_QUIET_SECONDS = 0.3


class BenchError(RuntimeError):
    """A run did not finish as the benchmark expects (no announcement within the timeout)."""


@dataclass
class OwnCounters:
    """What a design's own per-delivery counters say about one run."""

    deliveries: int = 0
    reads: int = 0
    lists: int = 0
    list_entries: int = 0
    writes: int = 0  # attempts, including those refused with 412
    precondition_failures: int = 0
    operations: int = 0
    during_run: int = 0  # deliveries processed before the last output was written
    outcomes: dict[str, int] = field(default_factory=dict)
    completing: dict[str, float] = field(default_factory=dict)  # the announcing delivery's ops
    serialized_writes: int = 0  # successful writes to one object name (the baseline's scratch)


@dataclass
class RunRecord:
    design: str
    variant: str
    n: int
    run_id: str
    write_seconds: float
    latency_s: float | None  # last output written -> first completion message
    announcements: int
    bridge_attempts: int
    own: OwnCounters
    tap: dict[str, int]  # read / list / write / other / http_412 from the counting proxy
    settle_seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Design(Protocol):
    """What the driver needs from a design under test."""

    name: str

    def bucket(self) -> Any: ...
    def tap(self) -> Any: ...
    def bridge(self) -> Any: ...
    def completions_for(self, workflow: str, version: str, run_id: str) -> list[Any]: ...
    def min_deliveries(self, n: int) -> int: ...
    def counters(
        self, workflow: str, version: str, run_id: str, last_write: float
    ) -> OwnCounters: ...


class TallyDesign:
    """tally's event handler on the platform (`Stack`); its own counters are the rows it wrote
    to the events table: read back with SQL from bqemulator, or from the full run's sink."""

    name = "tally"
    COLUMNS = (
        "outcome",
        "received_time",
        "duration_ms",
        "storage_reads",
        "storage_lists",
        "storage_list_entries",
        "listing_reason",
        "storage_writes",
        "storage_precondition_failures",
        "storage_operations",
        "output_path",
    )

    def __init__(self, stack: Any, sink: Any = None) -> None:
        self.stack = stack
        self.sink = sink

    def bucket(self) -> Any:
        return self.stack.storage_client().bucket(self.stack.outputs_bucket)

    def tap(self) -> Any:
        return self.stack.storage_tap

    def bridge(self) -> Any:
        return self.stack.bridge

    def completions_for(self, workflow: str, version: str, run_id: str) -> list[Any]:
        return self.stack.completions.for_run(workflow, version, run_id)

    def min_deliveries(self, n: int) -> int:
        return n + 2  # every output, and the manifest's two writes (claim, mark)

    def event_rows(self, workflow: str, version: str, run_id: str) -> list[dict[str, Any]]:
        if self.sink is not None:
            key = (workflow, version, run_id)
            return [
                row
                for row in self.sink.rows("events")
                if (row.get("workflow"), row.get("version"), row.get("run_id")) == key
            ]
        sql = (
            f"SELECT {', '.join(self.COLUMNS)} FROM `${{dataset}}.events` "  # noqa: S608
            f"WHERE workflow = '{workflow}' AND version = '{version}' AND run_id = '{run_id}'"
        )
        return self.stack.query(sql, timeout=60)

    def counters(self, workflow: str, version: str, run_id: str, last_write: float) -> OwnCounters:
        return sum_event_rows(self.event_rows(workflow, version, run_id), last_write)


def epoch(value: Any) -> float:
    """A TIMESTAMP as the BigQuery client returns it (datetime) or as streamed (RFC 3339)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.timestamp()


def sum_event_rows(rows: list[dict[str, Any]], last_write: float) -> OwnCounters:
    """The SUM of the events table's storage columns over a run's rows, and its outcomes."""
    own = OwnCounters(deliveries=len(rows))
    outcomes: Counter[str] = Counter()
    completed = []
    for row in rows:
        own.reads += int(row["storage_reads"] or 0)
        own.lists += int(row["storage_lists"] or 0)
        own.list_entries += int(row["storage_list_entries"] or 0)
        own.writes += int(row["storage_writes"] or 0)
        own.precondition_failures += int(row["storage_precondition_failures"] or 0)
        own.operations += int(row["storage_operations"] or 0)
        received = epoch(row["received_time"])
        own.during_run += received <= last_write
        outcomes[row["outcome"]] += 1
        if row["outcome"] == "completed":
            completed.append((row, received))
    own.outcomes = dict(outcomes)
    if len(completed) == 1:
        row, received = completed[0]
        own.completing = {
            "reads": int(row["storage_reads"] or 0),
            "lists": int(row["storage_lists"] or 0),
            "list_entries": int(row["storage_list_entries"] or 0),
            "writes": int(row["storage_writes"] or 0),
            "wait_s": received - last_write,
            "handler_s": float(row["duration_ms"] or 0) / 1000,
        }
    return own


class BaselineDesign:
    """The scratch-file baseline (bench/baseline.py) on its own slice of the platform. Its
    accessors mirror TallyDesign's line for line: both implement `Design` over another platform."""

    name = "scratch-file"

    def __init__(self, platform: Any) -> None:
        self.platform = platform
        self._offset = 0  # events log lines already parsed
        self._lines: list[dict[str, Any]] = []

    def bucket(self) -> Any:
        return self.platform.storage_client().bucket(self.platform.bucket)

    def tap(self) -> Any:
        return self.platform.tap

    def bridge(self) -> Any:
        return self.platform.bridge

    def completions_for(self, workflow: str, version: str, run_id: str) -> list[Any]:
        return self.platform.completions.for_run(workflow, version, run_id)

    def min_deliveries(self, n: int) -> int:
        return 2 * n  # every output, and every successful write of the scratch file

    def _read_log(self) -> list[dict[str, Any]]:
        with self.platform.events_log.open(encoding="utf-8") as log:
            log.seek(self._offset)
            chunk = log.read()
        complete = chunk[: chunk.rfind("\n") + 1]
        self._offset += len(complete.encode("utf-8"))
        self._lines.extend(json.loads(line) for line in complete.splitlines() if line)
        return self._lines

    def counters(self, workflow: str, version: str, run_id: str, last_write: float) -> OwnCounters:
        lines = [
            x
            for x in self._read_log()
            if (x.get("workflow"), x.get("version"), x.get("run_id")) == (workflow, version, run_id)
        ]
        own = OwnCounters(deliveries=len(lines))
        outcomes: Counter[str] = Counter()
        for line in lines:
            own.reads += line["reads"]
            own.writes += line["writes"]
            own.precondition_failures += line["precondition_failures"]
            own.during_run += line["at"] <= last_write
            outcomes[line["outcome"]] += 1
            if line["outcome"] == "recorded":
                own.serialized_writes += 1
            elif line["outcome"] == "announced" and not own.completing:
                own.completing = {
                    "reads": line["reads"],
                    "writes": line["writes"],
                    "wait_s": line["at"] - last_write,
                    "handler_s": line["ms"] / 1000,
                }
        own.operations = own.reads + own.writes
        own.outcomes = dict(outcomes)
        return own


# -- one run ---------------------------------------------------------------------------------


def register(stack: Any, spec: dict[str, Any]) -> None:
    """Register a workflow version in the registry over HTTP, as an authorised writer."""
    resp = stack.register(spec)
    if resp.status_code not in (200, 201):
        raise BenchError(f"registering {spec['workflow']} failed: {resp.status_code} {resp.text}")


def write_outputs(bucket: Any, prefix: str, paths: list[str], writers: int) -> float:
    """Write every output with `writers` concurrent writers; returns when the last one landed."""

    def write(path: str) -> float:
        bucket.blob(prefix + path).upload_from_string(b"x")
        return time.time()

    with cf.ThreadPoolExecutor(writers) as pool:
        return max(pool.map(write, paths))


def _wait(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")


def settle(design: Design, attempts_before: int, minimum: int, timeout: float) -> None:
    """Wait until the design got at least `minimum` deliveries and its bridge stays idle."""
    bridge = design.bridge()
    _wait(
        lambda: len(bridge.stats.attempts) - attempts_before >= minimum,
        timeout,
        f"{minimum} deliveries to {design.name}",
        interval=0.02,
    )
    quiet_since = [time.monotonic()]

    def quiet() -> bool:
        if not bridge.idle():
            quiet_since[0] = time.monotonic()
        return time.monotonic() - quiet_since[0] >= SETTLE_QUIET_SECONDS

    _wait(quiet, timeout, f"{design.name}'s push bridge to go idle", interval=0.02)


def run_once(
    design: Design,
    spec: dict[str, Any],
    run_id: str,
    paths: list[str],
    variant: str = "cache on",
    writers: int = WRITERS,
    timeout: float = 600.0,
) -> RunRecord:
    workflow, version = spec["workflow"], spec["version"]
    tap, bridge = design.tap(), design.bridge()
    tap.reset()
    attempts_before = len(bridge.stats.attempts)
    started = time.time()
    last_write = write_outputs(design.bucket(), f"{workflow}/{version}/{run_id}/", paths, writers)
    completions = _wait(
        lambda: design.completions_for(workflow, version, run_id),
        timeout,
        f"{design.name} to announce {workflow}/{version}/{run_id}",
    )
    latency = min(c.received_at for c in completions) - last_write
    settle_started = time.time()
    settle(design, attempts_before, design.min_deliveries(len(paths)), timeout)
    own = design.counters(workflow, version, run_id, last_write)
    counts, statuses = dict(tap.counts), dict(tap.statuses)
    return RunRecord(
        design=design.name,
        variant=variant,
        n=len(paths),
        run_id=run_id,
        write_seconds=last_write - started,
        latency_s=latency,
        announcements=len(design.completions_for(workflow, version, run_id)),
        bridge_attempts=len(bridge.stats.attempts) - attempts_before,
        own=own,
        tap={
            "read": counts.get("read", 0),
            "list": counts.get("list", 0),
            "write": counts.get("write", 0),
            "other": counts.get("other", 0),
            "http_412": statuses.get(412, 0),
        },
        settle_seconds=time.time() - settle_started,
    )


# -- scenarios -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Runs per run size, per design. `tally_large` runs on a fresh platform when the caller
    can start one: the local Storage writes more slowly the more objects its bucket holds."""

    tally: dict[int, int]
    baseline: dict[int, int]
    tally_no_cache: dict[int, int]
    tally_large: dict[int, int] = field(default_factory=dict)


FULL = Plan(  # make bench: within its 15 minutes beside the sharded matrix
    tally={10: 10, 100: 3, 1000: 1},
    baseline={10: 10, 100: 3, 1000: 1},  # a run of 1,000 takes the baseline ~60 s
    tally_no_cache={1000: 1},
)
LARGE = Plan(  # make bench-full: more runs per size, and N = 10,000 (10 minutes alone)
    tally={10: 20, 100: 5, 1000: 2},
    baseline={10: 20, 100: 5, 1000: 1},
    tally_no_cache={1000: 1},
    tally_large={10000: 1},
)
QUICK = Plan(tally={10: 3, 100: 1}, baseline={10: 2, 100: 1}, tally_no_cache={})


def spec_for(tag: str, n: int) -> dict[str, Any]:
    return sample.exact_spec(f"bench-{tag}-n{n}", "1.0.0", n)


def run_sizes(
    stack: Any,
    designs: list[Design],
    plan_for: dict[str, dict[int, int]],
    tag: str,
    progress: Callable[[str], None],
    variant: str = "cache on",
) -> list[RunRecord]:
    """Every run size of the plan; per size the designs' runs interleaved, same paths/order."""
    records: list[RunRecord] = []
    sizes = sorted({n for design in designs for n in plan_for[design.name]})
    for n in sizes:
        spec = spec_for(tag, n)
        register(stack, spec)
        runs = max(plan_for[d.name].get(n, 0) for d in designs)
        for index in range(runs):
            paths = sample.shuffled(sample.output_paths(spec), random.Random(n * 1000 + index))
            run_id = f"run-{variant.replace(' ', '-')}-{index:03d}"
            for design in designs:
                if index >= plan_for[design.name].get(n, 0):
                    continue
                record = run_once(design, spec, run_id, paths, variant)
                records.append(record)
                progress(_one_line(record))
    return records


def _one_line(r: RunRecord) -> str:
    latency = "-" if r.latency_s is None else f"{r.latency_s * 1000:.0f} ms"
    return (
        f"  {r.design:<12} {r.variant:<9} N={r.n:<6} {r.run_id}: "
        f"{r.own.operations} ops ({r.own.writes} writes, {r.own.precondition_failures} x 412), "
        f"{r.own.deliveries} deliveries, {r.announcements} announcement(s), "
        f"last write -> completion {latency}"
    )
