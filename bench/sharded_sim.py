"""Derived figures for sharded runs at sizes and paces the local platform cannot run here: the
handler's own coalescing gate (tally_handler.coalesce.Gate, pure, explicit times) driven by a
discrete-event model of the cloud. Measured figures are in bench/sharded.py; this says what the
same gate does at N = 10,000 with realcloud.py's latencies.

Model: output i is written at i / pace (full speed: FULL_SPEED_WRITES_S); its notification
reaches a uniformly random instance `notification_s` later (Pub/Sub push spreads deliveries);
exact paths are written first (the worst order: every later delivery needs the whole folder);
a listing of n objects takes one request per page of its longest key range (split at the
previous listing's every 1,000th name: 1 page, or 2 once the folder doubled). A listing sees
every object written before it started. `python -m bench.sharded_sim` prints the table.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tally_handler.coalesce import Covered, Gate, ListNow, Reason, Wait

from bench.realcloud import Model

FULL_SPEED_WRITES_S = 1000.0  # a bucket's initial object-write rate (request-rate guidelines)


@dataclass
class SimResult:
    n: int
    instances: int
    pace: float | None
    listings: int
    list_entries: int
    list_requests: int
    p99_delivery_s: float
    max_delivery_s: float
    completion_s: float
    reasons: dict[str, int] = field(default_factory=dict)  # listings by the gate's reason

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def simulate(
    n: int, instances: int, pace: float | None, model: Model | None = None, seed: int = 1
) -> SimResult:
    model = model or Model()
    rng = random.Random(seed)
    rate = pace or FULL_SPEED_WRITES_S
    gates = [Gate() for _ in range(instances)]
    write_at = [i / rate for i in range(n)]
    last_write = write_at[-1]
    events: list[tuple[float, int, str, int, int]] = []  # (time, seq, kind, instance, token)
    seq = 0
    splits = [0] * instances  # key ranges of each instance's next listing

    def push(t: float, kind: str, instance: int, token: int) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, instance, token))

    arrival: dict[tuple[int, int], float] = {}
    waiting: list[set[int]] = [set() for _ in range(instances)]  # gate tokens per instance
    latency: list[float] = []
    for i in range(n):
        push(write_at[i] + model.notification_s, "arrive", rng.randrange(instances), i)
    listings = entries = requests = 0
    reasons: Counter[str] = Counter()
    completion: float | None = None

    def written_by(t: float) -> int:
        return min(n, max(0, math.floor(t * rate) + 1))

    def step(t: float, instance: int, token: int) -> None:
        nonlocal listings, entries, requests, completion
        decision = gates[instance].step("run", token, t)
        if isinstance(decision, Covered):
            waiting[instance].discard(token)
            latency.append(t - arrival[(instance, token)])
        elif isinstance(decision, Wait):
            if decision.until is not None:
                push(decision.until, "wake", instance, token)
        elif isinstance(decision, ListNow):
            waiting[instance].discard(token)
            seen = written_by(t)
            pages = max(1, math.ceil(seen / 1000))
            depth = math.ceil(pages / max(1, splits[instance]))
            listings += 1
            reasons[decision.reason.value] += 1
            entries += seen
            requests += pages
            done = t + depth * model.storage_request_s
            splits[instance] = pages
            if seen >= n and completion is None:
                completion = done + model.storage_request_s + model.publish_s
            push(done, "finish", instance, token)

    while events:
        t, _, kind, instance, token = heapq.heappop(events)
        gate = gates[instance]
        if kind == "arrive":
            new = gate.arrive("run", t, f"s/{token}", n)
            arrival[(instance, new)] = t
            for other in sorted(waiting[instance]):  # notify_all: older waiters re-check
                step(t, instance, other)
            waiting[instance].add(new)
            step(t, instance, new)
        elif kind == "wake":
            if token in waiting[instance]:
                step(t, instance, token)
        else:  # a listing finished
            seen = written_by(t)
            listed = frozenset(f"s/{i}" for i in range(seen))
            gate.finish("run", token, seen, listed, rate if seen > 1 else None)  # steady writes
            latency.append(t - arrival[(instance, token)])
            for other in sorted(waiting[instance]):
                step(t, instance, other)
    latency.sort()
    return SimResult(
        n,
        instances,
        pace,
        listings,
        entries,
        requests,
        latency[max(0, math.ceil(0.99 * len(latency)) - 1)] if latency else 0.0,
        latency[-1] if latency else 0.0,
        (completion or math.inf) - last_write,
        dict(reasons),
    )


REASONS_HEADER = f"listings ({' / '.join(Reason)})"


def by_reason(counts: dict[str, int]) -> str:
    """Listings and their split by the gate's reason: "13 (4 / 3 / 3 / 3)"."""
    split = " / ".join(str(counts.get(reason.value, 0)) for reason in Reason)
    return f"{sum(counts.values())} ({split})"


def table(results: list[SimResult]) -> list[str]:
    lines = [
        f"| N | instances | writes | {REASONS_HEADER} | list entries / output "
        "| list requests / output "
        "| p99 / max delivery wait | completion after the last write |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        pace = "full speed" if r.pace is None else f"{r.pace:g}/s"
        lines.append(
            f"| {r.n:,} | {r.instances} | {pace} | {by_reason(r.reasons)} "
            f"| {r.list_entries / r.n:.1f} "
            f"| {r.list_requests / r.n:.3f} | {r.p99_delivery_s * 1000:.0f} / "
            f"{r.max_delivery_s * 1000:.0f} ms | {r.completion_s:.2f} s |"
        )
    return lines


def run() -> list[SimResult]:
    return [
        simulate(n, k, pace) for n in (1000, 10000) for k in (1, 4) for pace in (None, 25.0, 100.0)
    ]


if __name__ == "__main__":
    print("\n".join(table(run())))
