"""Sharded runs at scale (issue 14): 3 exact paths + a required glob pattern of N outputs.

Per configuration (write order x handler instances x write pace), one run on a local platform
with that many handler instances: the outputs written by WRITERS concurrent writers in the given
order, as fast as they can or paced (a global rate), then measured from outside (the counting
proxy in front of Storage: requests) and from the handler's own rows (list entries, per-delivery
duration, handler time), and the time from the last write to the completion message.

`today` is the same handler with coalescing off (TALLY_LISTING_QUIET_MS=off): every delivery
lists the whole folder once the exact paths are present.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import driver
from bench.realcloud import Model

WRITERS = 16
PATTERN = "shards/part-*.parquet"
EXACT = ("_SUCCESS_INPUTS.json", "metrics.json", "report.html")
ORDERS = ("shuffled", "exact-first", "pattern-first", "sorted", "reverse-sorted")
OFF_ENV = {"TALLY_LISTING_QUIET_MS": "off"}
QUIET_S = 0.2  # tally_handler.coalesce.QUIET_S: the derived cloud figure's wait
LIST_PAGE = 1000


@dataclass(frozen=True)
class Config:
    n: int
    order: str
    instances: int
    pace: float | None  # writes per second, None: as fast as possible
    design: str = "coalesced"  # or "today"

    @property
    def label(self) -> str:
        pace = "full speed" if self.pace is None else f"{self.pace:g} writes/s"
        return f"{self.design} N={self.n:,} {self.order} {self.instances} inst {pace}"


@dataclass(frozen=True)
class Plan:
    configs: tuple[Config, ...]


def _matrix(n: int, instances: tuple[int, ...], paces: tuple[float | None, ...]) -> list[Config]:
    return [Config(n, o, k, p) for k in instances for p in paces for o in ORDERS]


FULL = Plan(  # make bench, 20 runs of 1,000 (10 to 15 s each); N = 10,000 derived below
    tuple(_matrix(1000, (1, 4), (None, 100.0)))  # every order, 1 and 4 instances, both paces
)
LARGE = Plan(  # make bench-full adds: the slow pace, today's design, N = 10,000 measured
    (
        *FULL.configs,
        Config(1000, "exact-first", 4, 25.0),  # issue 14's hardest pace: deliveries far apart
        Config(300, "exact-first", 4, None, "today"),  # O(N²): at N = 1,000 it takes minutes
        Config(300, "exact-first", 4, None),
        *_matrix(10000, (1, 4), (None,)),
    )
)
QUICK = Plan((Config(100, "exact-first", 2, None),))  # on make test's platform (2 instances)


def spec_for(tag: str, n: int) -> dict[str, Any]:
    return {
        "workflow": f"bench-shards-{tag}-n{n}",
        "version": "1.0.0",
        "description": f"3 exact outputs and {n} shards",
        "expected_outputs": [{"path": p} for p in EXACT] + [{"pattern": PATTERN, "count": n}],
    }


def ordered(n: int, order: str, seed: int) -> list[str]:
    shards = [f"shards/part-{i:05d}.parquet" for i in range(n)]
    everything = [*EXACT, *shards]
    if order == "shuffled":
        random.Random(seed).shuffle(everything)
        return everything
    random.Random(seed).shuffle(shards)
    if order == "exact-first":
        return [*EXACT, *shards]
    if order == "pattern-first":
        return [*shards, *EXACT]
    return sorted(everything, reverse=order == "reverse-sorted")


def write(bucket: Any, prefix: str, paths: list[str], pace: float | None) -> tuple[float, str]:
    """Write in order with WRITERS threads; paced: the i-th write starts no sooner than i/pace.
    Returns when the last write ended, and its path."""
    started = time.monotonic()
    last = (0.0, "")
    lock = threading.Lock()

    def one(item: tuple[int, str]) -> None:
        index, path = item
        if pace is not None:
            delay = started + index / pace - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        bucket.blob(prefix + path).upload_from_string(b"x")
        nonlocal last
        with lock:
            last = max(last, (time.time(), path))

    with cf.ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(one, enumerate(paths)))
    return last


def run_one(stack: Any, design: driver.TallyDesign, spec: dict[str, Any], c: Config, index: int):
    workflow, version = spec["workflow"], spec["version"]
    # unique across the platforms of one invocation: make bench streams them all to one sink
    run_id = f"run-{c.instances}i-{index:03d}-{c.order}"
    paths = ordered(c.n, c.order, index)
    tap, bridge = design.tap(), design.bridge()
    tap.reset()
    attempts_before = len(bridge.stats.attempts)
    started = time.time()
    last_write, last_path = write(design.bucket(), f"{workflow}/{version}/{run_id}/", paths, c.pace)
    completions = driver._wait(
        lambda: design.completions_for(workflow, version, run_id),
        900,
        f"the announcement of {run_id}",
    )
    latency = min(x.received_at for x in completions) - last_write
    driver.settle(design, attempts_before, design.min_deliveries(len(paths)), 900)
    rows = design.event_rows(workflow, version, run_id)
    counts = dict(tap.counts)
    durations = sorted(float(r["duration_ms"] or 0) for r in rows if r["outcome"] != "completed")
    own = driver.sum_event_rows(rows, last_write)
    done = own.completing  # the delivery that announced, if exactly one did
    return {
        **asdict(c),
        "instances": getattr(stack, "instance_count", c.instances),
        "label": c.label,
        "platform": stack.describe(),
        "write_seconds": last_write - started,
        "latency_s": latency,
        "announcements": len(design.completions_for(workflow, version, run_id)),
        "deliveries": len(rows),
        "outcomes": own.outcomes,
        "list_entries": own.list_entries,
        # the whole-folder listings by the gate's reason (events.listing_reason)
        "listings": dict(Counter(r["listing_reason"] for r in rows if r.get("listing_reason"))),
        "lists": own.lists,
        "reads": own.reads,
        "writes": own.writes,
        "requests": requests(counts),
        "tap": counts,
        "p99_delivery_ms": _p(durations, 0.99),
        "p50_delivery_ms": _p(durations, 0.5),
        "max_delivery_ms": durations[-1] if durations else 0.0,
        "handler_s": sum(float(r["duration_ms"] or 0) for r in rows) / 1000,
        "completing": {
            "reads": done["reads"],
            "lists": done["lists"],
            "ms": done["handler_s"] * 1000,
            # when it arrived after the last write (negative: before it, and it waited)
            "received_s": done["wait_s"],
        }
        if done
        else None,
        # when the platform first delivered the last object written: completion cannot follow
        # the last write sooner unless a delivery that arrived before it lists after it
        "last_delivered_s": min(
            (driver.epoch(r["received_time"]) for r in rows if r["output_path"] == last_path),
            default=last_write,
        )
        - last_write,
    }


def requests(tap: dict[str, int]) -> int:
    """Every request the handler made through the counting proxy: reads, list pages, writes and
    "other" (the client library's own bucket reads, which records before their fix excluded)."""
    return sum(tap.values())


def _p(values: list[float], q: float) -> float:
    return values[max(0, math.ceil(q * len(values)) - 1)] if values else 0.0


def derived_cloud_s(record: dict[str, Any], model: Model) -> float | None:
    """realcloud's model for the completing delivery, with its listing's key ranges in parallel:
    notification + the quiet wait (coalesced) + (reads + pages in the longest range + claim) x
    request + publish. A range holds about one page (split at the previous listing's every
    1,000th name) and at most two, as the folder grew since: counted as 2 pages when N > 1,000."""
    done = record.get("completing")
    if not done:
        return None
    depth = done["lists"] if record["design"] == "today" else min(done["lists"], 2)
    quiet = QUIET_S if record["design"] == "coalesced" else 0.0
    return (
        model.notification_s
        + quiet
        + (done["reads"] + depth + 1) * model.storage_request_s
        + model.publish_s
    )


def run(
    plan: Plan,
    stack_for: Callable[[int], AbstractContextManager[Any]],
    tag: str,
    progress: Callable[[str], None],
    sink: Any = None,
) -> list[dict[str, Any]]:
    """Every configuration, one platform per instance count (started by `stack_for`)."""
    records: list[dict[str, Any]] = []
    by_instances: dict[int, list[Config]] = {}
    for c in plan.configs:
        by_instances.setdefault(c.instances, []).append(c)
    for instances, configs in sorted(by_instances.items()):
        with stack_for(instances) as stack:
            design = driver.TallyDesign(stack, sink)
            registered: set[int] = set()
            previous = dict(stack.handler_env)
            current = "coalesced"
            for index, c in enumerate(sorted(configs, key=lambda x: (x.design, x.n))):
                if c.design != current:
                    env = {**previous, **OFF_ENV} if c.design == "today" else previous
                    progress(f"  restarting the handler: {c.design}")
                    stack.restart_handler(env)
                    current = c.design
                spec = spec_for(tag, c.n)
                if c.n not in registered:
                    driver.register(stack, spec)
                    registered.add(c.n)
                record = run_one(stack, design, spec, c, index)
                records.append(record)
                progress(
                    f"  {c.label}: {record['list_entries'] / c.n:,.1f} list entries and "
                    f"{record['requests'] / c.n:.2f} requests per output, p99 delivery "
                    f"{record['p99_delivery_ms']:,.0f} ms, completion {record['latency_s']:.2f} s"
                    f" (last object delivered after {record['last_delivered_s']:.2f} s),"
                    f" {record['announcements']} announcement(s)"
                )
            if current != "coalesced":
                stack.restart_handler(previous)
    return records


# -- the page --------------------------------------------------------------------------------

GOALS = {
    "list entries per output": 20.0,
    "requests per output": 2.0,
    "p99 delivery ms": 500.0,
    "completion s": 2.0,
    "derived cloud s": 1.0,
}


def _row_values(r: dict[str, Any], model: Model) -> dict[str, float | None]:
    return {
        "list entries per output": r["list_entries"] / r["n"],
        "requests per output": requests(r["tap"]) / r["n"],
        "p99 delivery ms": r["p99_delivery_ms"],
        "completion s": r["latency_s"],
        "derived cloud s": derived_cloud_s(r, model),
    }


def _reasons(by: dict[str, int]) -> str:
    """Listings by reason, in words: "4 first, 3 urgent, 3 due, 3 quiet"."""
    from tally_handler.coalesce import Reason

    return ", ".join(f"{by.get(reason.value, 0)} {reason.value}" for reason in Reason)


def _listings(r: dict[str, Any]) -> str:
    """The run's whole-folder listings by reason; "-" where not recorded (before
    events.listing_reason, or coalescing off)."""
    from bench.sharded_sim import by_reason

    return by_reason(r["listings"]) if r.get("listings") else "-"


def _met(r: dict[str, Any], model: Model) -> list[str]:
    values = _row_values(r, model)
    missed = [k for k, goal in GOALS.items() if values[k] is not None and values[k] > goal]
    if r["announcements"] != 1:
        missed.append(f"{r['announcements']} announcements")
    return missed


def section(records: list[dict[str, Any]] | None, model: Model) -> list[str]:
    """docs/benchmarks.md's section (empty without results)."""
    if not records:
        return []
    from bench.sharded_sim import REASONS_HEADER

    plot_path = plot(records, model)
    lines = [
        "## Sharded runs (issue 14)",
        "",
        f"3 exact paths and a required pattern of N outputs (`{PATTERN}`), written by {WRITERS} "
        "concurrent writers in the given order, as fast as they can or paced; one local platform "
        "per handler instance count. *coalesced*: this handler (tally_handler/coalesce.py: one "
        "listing per run in flight per instance, the newest waiting delivery owes it, a quiet "
        f"window of {QUIET_S * 1000:.0f} ms, key ranges listed in parallel); *today*: the same "
        "handler with coalescing off (every delivery lists the whole folder once the exact "
        "paths are present), where it is still runnable. Requests: the counting proxy in front "
        "of Storage (reads, list pages, writes, and the client library's own bucket reads after an "
        "object's 404, which tally turned off in 0dea6f3: see the handler README); list entries, "
        "delivery times and handler time: "
        "the handler's own event rows. p99 and max exclude the delivery that builds the "
        "manifest. Completion: last write to the completion message, measured locally; "
        "*cloud*: derived with bench/realcloud.py's assumptions (notification "
        f"{model.notification_s * 1000:.0f} ms, {model.storage_request_s * 1000:.0f} ms per "
        "request, publish), the completing delivery's quiet wait, reads, the pages of its longest "
        "key range (at most 2) and its claim. Goals: ≤ 20 list entries and ≤ 2 requests per "
        "output, p99 ≤ 500 ms, completion ≤ 2 s locally and ≤ 1 s derived, one announcement.",
        "",
        "| design | N | order | instances | writes | list entries / output "
        f"| {REASONS_HEADER} | requests / output "
        "| p50 / p99 / max delivery | handler time / run | completion | cloud (derived) "
        "| announcements | goals missed |",
        "|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in records:
        v = _row_values(r, model)
        pace = "full speed" if r["pace"] is None else f"{r['pace']:g}/s"
        cloud = v["derived cloud s"]
        lines.append(
            f"| {r['design']} | {r['n']:,} | {r['order']} | {r['instances']} | {pace} "
            f"| {v['list entries per output']:,.1f} | {_listings(r)} "
            f"| {v['requests per output']:.2f} "
            f"| {r['p50_delivery_ms']:,.0f} / {r['p99_delivery_ms']:,.0f} / "
            f"{r['max_delivery_ms']:,.0f} ms "
            f"| {r['handler_s']:,.1f} s | {r['latency_s']:.2f} s "
            f"| {'-' if cloud is None else f'{cloud:.2f} s'} | {r['announcements']} "
            f"| {', '.join(_met(r, model)) or 'none'} |"
        )
    notes = sorted({r["note"] for r in records if r.get("note")})
    lines += [f"Note: {note}." for note in notes]
    for n in sorted({r["n"] for r in records}):
        lines += _completion_paragraph(
            [r for r in records if r["n"] == n and "received_s" in (r.get("completing") or {})]
        )
    lines += ["", f"![Sharded runs: list entries per output](img/{plot_path.name})", ""]
    from tally_handler import coalesce

    from bench import sharded_sim

    derived = sharded_sim.run()
    slow = next(r for r in derived if (r.n, r.instances, r.pace) == (10_000, 4, 25.0))
    lines += [
        "Derived (bench/sharded_sim.py: the handler's own gate, `coalesce.Gate`, driven by a "
        "discrete-event model with realcloud.py's latencies and steady writes, whose rate the "
        "gate is told; deliveries spread uniformly over the instances; exact paths first; waits "
        "at the gate and listings only, not the handler's other work, nor a handler behind its "
        "writers). It covers the paces of issue 14 that `make bench` cannot run within 15 "
        "minutes on 2 cores (`make bench-full` measures 25 writes/s and today's design; "
        "`python -m bench.sharded` N = 10,000):",
        "",
        *sharded_sim.table(derived),
        "",
        "What remains, from these figures: with K instances each lists on its own, so once the "
        "exact paths are in a run costs K first listings, and about K more per estimate of when "
        "it may be complete. At 25 writes/s over 4 instances (400 s of writes at N = 10,000) "
        "each instance's estimate defers its next listing until the run may be complete at the "
        f"pace it saw (up to {coalesce.DUE_MAX_S:.0f} s): {slow.listings} listings "
        f"({_reasons(slow.reasons)}), {slow.list_entries / slow.n:.1f} list entries per output, "
        f"completion {slow.completion_s:.2f} s after the last write. The p99 wait "
        f"({slow.p99_delivery_s * 1000:.0f} ms) is the 99th percentile of the gaps between one "
        "instance's deliveries (a delivery per 160 ms, Poisson): the newest waits for the next "
        "one of its instance. Per-instance coordination cannot do better there: a delivery must "
        "list or hand over to a newer delivery of ITS instance within its own request. Sharing "
        "listings across instances (the progress object below) would remove the K factor.",
        "",
    ]
    lines += ["Alternatives measured or considered:", ""]
    lines += [f"- {text}" for text in ALTERNATIVES]
    lines.append("")
    return lines


def _completion_paragraph(timed: list[dict[str, Any]]) -> list[str]:
    """What completion at one N is made of, and what each configuration that missed the goal
    measured: a completing delivery that came late (its instance behind the writers), or a
    request that took long (compared with the same configuration on 1 instance)."""
    from tally_handler.coalesce import BEHIND_S, MAX_INTERVAL_S

    if not timed:
        return []

    def span(values: list[float], signed: str = "") -> str:
        low, high = f"{min(values):{signed}.2f}", f"{max(values):{signed}.2f}"
        return f"{low} s" if low == high else f"{low} to {high} s"

    missed = [r for r in timed if r["latency_s"] > GOALS["completion s"]]
    # came a quiet window or more after the last write, from an instance behind the writers
    late = [
        r
        for r in missed
        if r["completing"]["received_s"] > QUIET_S and r["last_delivered_s"] > BEHIND_S
    ]
    other = [r for r in missed if r not in late]
    text = (
        f"At N = {timed[0]['n']:,} completion is the completing delivery's request: it "
        f"arrived {span([r['completing']['received_s'] for r in timed], '+')} after the "
        "last write (before it: it waited at the gate) and took "
        f"{span([r['completing']['ms'] / 1000 for r in timed])} (the wait included) to list "
        "every entry (key ranges in parallel), build the manifest, claim, publish and mark."
    )
    if late:
        text += (
            f" Where it missed {GOALS['completion s']:g} s in {len(late)} of {len(timed)} "
            "configurations, that delivery came "
            f"{span([r['completing']['received_s'] for r in late])} after the last write: "
            f"the local instances ran behind the {WRITERS} writers (the last object written was "
            f"first delivered {span([r['last_delivered_s'] for r in late])} after its write), so "
            "the listing after the last write came when an instance's next listing was due (up "
            f"to the greatest interval, {MAX_INTERVAL_S:g} s, after its previous one)."
        )
    alone = {(r["order"], r["pace"]): r for r in timed if r["instances"] == 1}
    for r in other:
        text += (
            f" {r['label']} ({r['latency_s']:.2f} s): its completing delivery arrived "
            f"{r['completing']['received_s']:+.2f} s after the last write and its request "
            f"took {r['completing']['ms'] / 1000:.2f} s (waiting at the gate, listing, "
            "announcing)"
        )
        one = alone.get((r["order"], r["pace"]))
        if one is not None and r["instances"] > 1:
            text += (
                f"; on 1 instance the same configuration's completing request took "
                f"{one['completing']['ms'] / 1000:.2f} s, the other instances listing the same "
                "entries on the same 2 cores meanwhile"
            )
        text += "."
    text += (
        " The derived cloud figure counts the request's Storage calls, not its CPU, for a "
        "handler that keeps up, as Cloud Run's autoscaling makes it."
    )
    return ["", text]


ALTERNATIVES = (
    "today's design (a whole-folder listing per delivery once the exact paths are present): "
    "O(N²) entries. Issue 14 measured 506 list entries per output at N = 10,000 (1 instance, "
    "exact paths first) and 1,017 at N = 2,000 (4 instances, 25 writes/s); at N = 1,000 on "
    "this machine under a load average of 20 a single run did not finish within 4 minutes.",
    "coalescing with a fixed 1 s interval and this instance's own counts (first version, same "
    "machine, load average 12 to 20, N = 1,000): 1 instance 12.0 (exact-first, full speed), "
    "5.0 (shuffled), 39.6 (exact-first, 100 writes/s) list entries per output; 4 instances "
    "57.5 (full speed) and 115.7 (100 writes/s): each instance listed about once a second "
    "while its deliveries had gaps over the quiet window, and a backlog of deliveries of "
    "already-listed outputs made runs look urgent. Fixed: outputs already listed are no news, "
    "the interval grows with the run's listing history, the estimate is scaled by the "
    "instance's share.",
    "a backlog's next listing when the run may be complete at the write rate over the whole "
    "listing (first version of the behind rule, N = 10,000, 4 instances, exact paths first, "
    "`python -m bench.sharded`, 2026-12-01): 205 list entries per output, p99 3.5 s, the writes "
    "took 174 s. The local writers slowed from about 600 to 4 writes/s as the platform loaded "
    "(fake-gcs-server scans its bucket for every key range listed), the whole-span average kept "
    "promising objects that were not coming, and each instance listed 10,000 entries every "
    "second or two. The rate over as many of the newest objects as the run misses, up to 30 s: "
    "30.4 (writes 85 s); no sooner than the grown interval, and a delivery of a run counted "
    "complete waiting for the announcement in flight on its instance instead of listing again "
    "(one more listing per instance after completion): 19.7, p99 211 ms on a fresh platform, "
    "44.6 in the matrix, right after another 10,000-object run on the same platform (not "
    "traced). Then the due time for deliveries on time too and a run quiet for 8 gaps "
    "listing whatever the due time (dd9a44c): exact-first 19.0, sorted 138.4 -> 24.6 (its "
    "second run on the platform); with the share ratio taken only from two listings, shuffled "
    "completed 8.4 and 11.6 s after the last write (47 to 50 entries per output): urgency at "
    "the end of a backlog needs the first listing's share. Restored in e9e27b6.",
    "each delivery making its own reads (before ports.SharedReads, 6a8f9e8), against shared "
    "reads (b9c5f80), each pair on fresh platforms one after the other (2026-12-01): requests "
    "per output at N = 1,000 on 1 instance pattern-first 0.14 -> 0.09, reverse-sorted 0.25 -> "
    "0.10, shuffled 0.43 -> 0.13, on 4 instances 0.15 -> 0.13, 0.41 -> 0.31, 0.51 -> 0.44; at N "
    "= 10,000 pattern-first 0.83 -> 0.22 (1 instance) and 1.16 -> 0.88 (4). When the handler "
    "keeps up with the writers (a platform after another 10,000-object run: writes took 275 s), "
    "pattern-first stays at 2.006: an instance's deliveries then rarely overlap, and each of "
    "them needs its two reads (a required path missing, and no record: a run announced before "
    "a deletion must be told apart). Merging the two into one request (a listing with "
    "`matchGlob`) was not tried: a list request is a class A operation, priced more than ten "
    "times a read (class B) in Standard storage, so it would trade two cheap requests for one "
    "dear one; and fake-gcs-server supports `matchGlob` only in recent releases.",
    "Blob's accessors for a listing's entries (before 3d9b0eb): 0.29 s of CPU per 10,000 "
    "entries against 0.07 s from the listed resource, and the manifest parsed every time again "
    "(build 0.16 s -> 0.015 s). Traced at N = 10,000 on 4 instances, shuffled (b9c5f80): "
    "completion 4.92 s = 2.5 s at the gate after the last write, listing 1.33 s (three other "
    "instances listing the same 10,000 entries at once on 2 cores), manifest 0.50 s, claim, "
    "publish and mark 0.6 s; with the listed resource (e43b5a3): 1.65 s.",
    "one early listing when the write rate says the run may be complete before the interval "
    "is over (7329a2e, reverted): measured at N = 10,000 over 4 instances on fresh platforms, "
    "shuffled 19.9 list entries per output and completion 5.86 s (11.9 and 1.67 s without), "
    "exact-first 23.7 and 5.75 s (20.1 and 4.47 s). The local instances were 18 to 35 s "
    "behind the writers: every instance made the early listing, and one that found the run "
    "incomplete put its next a whole interval (8 s) later. bench/sharded_sim.py, which has no "
    "backlog, had derived completion 1.25 -> 0.41 s at 25 writes/s with the same 39 listings.",
    "the share at an instance's first listing counted over the deliveries that reached the "
    "gate only (before 143afa4). In a shuffled run most deliveries come before the last exact "
    "path is written and never reach it: traced at N = 10,000 over 4 instances at 50 writes/s, "
    "a first listing after 13 of some 2,450 deliveries counted 9,820 matches, so the share "
    "came out 64 (the cap) and each later delivery was urgent: 31.7 list entries per output "
    "(28.8 and 4.0 in two earlier runs: 4.0 where the first listings came after the last "
    "write). Counted over every output delivered on the instance (143afa4): shares 3.9 to 4.1, "
    "and 6.0, 14.8, 26.9 and 20.0 list entries per output in four runs of that configuration. "
    "What still varies is the end of the run, traced in the 26.9 one: the last exact path came "
    "about 9 s before the last write, the four instances listed 10,000 entries at once on 2 "
    "cores, the writers slowed (the matches grew about 20 a second against the 50 of the pace) "
    "and deliveries came late and in bursts, so each instance's estimate of when the run may "
    "be complete fired again and again: 26 listings in 13 s (10 urgent, 7 after 1 s without a "
    "delivery, 5 due, 4 first), 5 to 7 per instance. At full speed, where the first listing's "
    "share drives urgency at the end of a backlog, shuffled over 4 instances, before and after "
    "in turn on fresh platforms: 11.9 and 15.9 list entries per output both, completion 3.73 "
    "and 5.41 s before, 2.52 and 2.50 s after.",
    "urgency estimated before a listing, a share taken over any number of outputs, and the "
    "write rate deferring the next listing at most 60 s (before 731bc10). In the derived "
    "model (bench/sharded_sim.py) every urgent listing was followed by a second one at once: a "
    "delivery that arrived during a listing kept the urgency estimated before it, and the "
    "listing that had just counted the matches did not change it. A first listing after 1 or "
    "2 deliveries took a share of 6 to 11 from notifications still in flight (each instance then "
    "listed early again on it), and over 400 s of writes each instance listed every 60 s. "
    "Derived at N = 10,000 over 4 instances, seeds 1 to 4: 25 writes/s 23.7, 20.7, 18.7 and "
    "21.4 list entries per output -> 8.1, 11.1, 11.4 and 10.5; 50 writes/s 19.1, 14.4, 14.3, "
    "17.5 -> 10.8, 4.0, 7.9, 6.7; 100 writes/s 12.7, 13.9, 11.9, 14.7 -> 8.1, 6.4, 9.4, 7.3; "
    "completion 0.16 to 1.25 s -> 0.16 to 0.82 s. The 600 s deferral does most of it (with 60 s: "
    "18.7 to 21.1 at 25 writes/s); the share over at least 8 outputs is a wash in the model "
    "(8.6 to 14.5 without it at 25 writes/s) and is aimed at the bursts after stalls of the "
    "local platform (shares of 17 to 37 traced), which the model does not have. Measured at N = "
    "10,000 over 4 instances at 50 writes/s (`python -m bench.sharded`, a fresh platform "
    "each, 143afa4 -> c3eb976; in brackets other runs): shuffled 20.0 (6.0, 14.8, 26.9) -> 4.0 "
    "(17.0), exact-first 21.9 (18.9) -> 5.9 (8.3), sorted 16.8 -> 11.1 (13.4), pattern-first "
    "4.0 -> 2.0, reverse-sorted 4.0 -> 7.0; completion 1.30 to 2.91 s -> 1.11 to 2.02 s. At "
    "full speed, where the local instances run behind the writers, 8.0 to 19.4 -> 8.0 to 20.2 "
    "over 4 instances: there most listings are due ones (16 and 20 of 24 and 28 in exact-first "
    "and sorted, by events.listing_reason), which this change does not touch. Other runs at "
    "50 writes/s over 4 instances (d049b53, the same gate): shuffled 15.8 (16 listings: 4 "
    "first, 2 urgent, 4 due, 6 quiet: an instance's deliveries paused over a second while "
    "four instances listed at once; completion 2.50 s) and 4.0 (1.17 s), exact-first 5.5 "
    "(1.54 s) and 10.2 "
    "(1.73 s). make bench then "
    "missed 2 s at N = 1,000 and 100 writes/s in exact-first on 1 instance (3.42 s) and sorted "
    "on 4 (2.45 s), runs late in a sequence of 20 on one platform; on fresh platforms, before "
    "(1e53a62) and after (c3eb976) in turn, 3 pairs: exact-first 0.23, 0.24, 0.22 s before and "
    "0.22, 0.22, 0.19 s after, sorted on 4 instances 0.28, 0.21, 0.26 s and 0.23, 0.20, "
    "0.22 s, with 8.0 to 9.3 and 7.9 to 8.5 list entries per output.",
    "a per-instance deficit rule alone (skip listing while fewer than K - c new outputs were "
    "delivered here): unsafe with several instances, the run's last delivery may land on an "
    "instance that saw few of the others; kept only as an urgency estimate, never to skip.",
    "a progress object per run in Storage (`_tally/...`: the latest listing's start and count, so "
    "a delivery whose object predates a published listing start needs no listing): not built. "
    "It needs an order between one object's write and another instance's listing start, which "
    "Storage does not document (generations are per object; clocks differ), one read per "
    "delivery (+1 request per output, within the 2 N budget at the 0.2 to 0.5 measured here) "
    "and at most one write per second per run across instances. It is what would remove the "
    "K factor of paced runs.",
    "a delay queue (Cloud Tasks) to run the owed listing later: not needed, the wait stays "
    "inside the newest delivery's request (Cloud Run gives no CPU outside requests), bounded by "
    "the quiet window or the interval.",
)


def plot(records: list[dict[str, Any]], model: Model) -> Any:
    """List entries per output and p99 delivery per configuration (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(__file__).resolve().parent.parent / "docs" / "img" / "bench-sharded.png"
    labels = [
        f"{r['design'][:5]} {r['n'] // 1000}k {r['order']} {r['instances']}i "
        f"{'fast' if r['pace'] is None else 'paced'}"
        for r in records
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.32 * len(records) + 1.5), sharey=True)
    y = range(len(records))
    left.barh(y, [r["list_entries"] / r["n"] for r in records], color="tab:blue")
    left.axvline(GOALS["list entries per output"], color="red", linestyle="--", label="goal")
    left.set_xscale("log")
    left.set_xlabel("list entries per output")
    left.set_yticks(list(y), labels, fontsize=7)
    left.invert_yaxis()
    left.legend(fontsize=7)
    right.barh(y, [r["p99_delivery_ms"] for r in records], color="tab:orange")
    right.axvline(GOALS["p99 delivery ms"], color="red", linestyle="--")
    right.set_xscale("log")
    right.set_xlabel("p99 delivery (ms)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# -- chosen configurations, measured on their own -------------------------------------------

EXTRA = "sharded-extra.json"  # bench/results/: runs measured by `python -m bench.sharded`


def merge_extra(path: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The file's records with ``records`` replacing those of the same label."""
    import json

    kept = json.loads(path.read_text()) if path.exists() else []
    labels = {r["label"] for r in records}
    return [r for r in kept if r["label"] not in labels] + records


def with_extra(
    records: list[dict[str, Any]] | None, extra: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The page's rows: the last `make bench`, then the separately measured configurations it
    did not run."""
    records = list(records or [])
    labels = {r["label"] for r in records}
    return records + [r for r in extra if r["label"] not in labels]


def main(argv: list[str] | None = None) -> int:
    """Measure chosen configurations (e.g. N = 10,000, which `make bench` only derives) and keep
    them in bench/results/sharded-extra.json; `python -m bench --report-only` puts them on the
    page next to the last `make bench`."""
    import argparse
    import json
    import os
    import uuid
    from datetime import UTC, datetime

    from bench.bqsink import BigQuerySink
    from devstack import Stack

    parser = argparse.ArgumentParser(prog="python -m bench.sharded", description=main.__doc__)
    parser.add_argument("--n", type=int, default=10_000, help="outputs of the pattern (10000)")
    parser.add_argument("--orders", default=",".join(ORDERS), help="write orders, comma-separated")
    parser.add_argument("--instances", default="1,4", help="handler instance counts (1,4)")
    parser.add_argument("--pace", type=float, help="writes per second (default: full speed)")
    args = parser.parse_args(argv)
    orders = args.orders.split(",")
    unknown = sorted(set(orders) - set(ORDERS))
    if unknown:
        parser.error(f"unknown write order(s) {unknown}: choose from {', '.join(ORDERS)}")
    instances = tuple(int(k) for k in args.instances.split(","))
    plan = Plan(tuple(Config(args.n, o, k, args.pace) for k in instances for o in orders))
    root = Path(__file__).resolve().parent.parent
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:5.0f} s] {text}", flush=True)

    when = datetime.now(UTC).strftime("%Y-%m-%d")
    with BigQuerySink() as sink:
        environ = {**os.environ, "TALLY_BIGQUERY_ENDPOINT": sink.url}
        records = run(
            plan,
            lambda k: Stack(
                state_dir=root / ".devstack" / f"bench-shards-{k}", instances=k, environ=environ
            ),
            uuid.uuid4().hex[:6],
            say,
            sink,
        )
    for r in records:
        r["note"] = f"N = {r['n']:,} measured on its own by `python -m bench.sharded` on {when}"
    path = root / "bench" / "results" / EXTRA
    path.write_text(json.dumps(merge_extra(path, records), indent=2, default=str) + "\n")
    say(f"written to {path.relative_to(root)}; `python -m bench --report-only` renders the page")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
