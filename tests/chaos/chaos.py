"""One chaos run on a running platform: plan, storm, repair, check. Used by `python -m tests.chaos`
(its own platform) and by tests/integration/test_chaos_small.py (the session's platform); the
platform is left as it was found (handler restarted without faults, taps up, bridge settings back).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from tests.chaos.checker import Figures, RunTruth, check, failing_histories
from tests.chaos.plan import DUPLICATES, After, Duplicates, KillKind, Plan, make_plan
from tests.chaos.repair import RepairStats, repair
from tests.chaos.storm import Baseline, Ledger, Storm, StormStats, faults_setting

WRITER = "writer@tally.test"
FAULT_LINE = re.compile(r"InjectedFault: fault injected (\w+)")


@dataclass(frozen=True)
class ChaosConfig:
    runs: int = 1000
    seed: int = 0
    concurrency: int = 16
    fault_rate: float = 0.05
    lease_seconds: int = 5
    quiet_seconds: float = 1.0  # TALLY_REVISION_QUIET_SECONDS during the chaos run
    whole_bucket: bool = False  # the repair's every-run pass walks the whole bucket (own platform)
    duplicates: Duplicates = DUPLICATES  # weights of 0, 1 and 2 extra publishes of a notification
    timeout: float = 1500.0  # the storm and the repair together


@dataclass
class ChaosResult:
    config: ChaosConfig
    plan: Plan
    storm: StormStats
    repair: RepairStats
    figures: Figures
    truths: dict[str, RunTruth]
    injections: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    histories: list[str] = field(default_factory=list)
    platform: str = ""  # Stack.describe(): instances and retry timing

    @property
    def ok(self) -> bool:
        return self.figures.ok


def register(stack: Any, spec: dict[str, Any]) -> None:
    url = f"{stack.registry_url}/workflows/{spec['workflow']}/versions/{spec['version']}"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {stack.mint_token()}"}
    resp = requests.put(url, data=json.dumps(spec), headers=headers, timeout=30)
    if resp.status_code not in (200, 201):
        raise RuntimeError(f"registering {url} failed: {resp.status_code} {resp.text[:300]}")


def check_handler(stack: Any, tries: int = 10) -> None:
    """The restarted handler answers (a configuration error would answer 503 to everything)."""
    resp = None
    for _ in range(tries):  # a 500 is an injected crash: try again
        resp = requests.post(stack.handler_url, data=b"", timeout=30)
        if resp.status_code == 200:
            return
    assert resp is not None
    raise RuntimeError(f"the event handler does not work: {resp.status_code} {resp.text[:500]}")


def handler_log(stack: Any) -> Any:
    return stack.log_dir / "handler.log"


def take_baseline(stack: Any) -> tuple[Baseline, frozenset[str]]:
    s = stack.bridge.stats
    log = handler_log(stack)
    baseline = Baseline(
        acked=len(s.acked),
        dead=len(s.dead_lettered),
        suppressed=len(s.suppressed),
        attempts=len(s.attempts),
        registry_503=stack.registry_tap.statuses[503],
        bigquery_503=stack.bigquery_tap.statuses[503],
        handler_log_offset=log.stat().st_size if log.exists() else 0,
        started=time.time(),
    )
    return baseline, frozenset(s.acked)


def injections(
    stack: Any, plan: Plan, baseline: Baseline, storm: StormStats, log_end: int
) -> dict[str, Any]:
    s = stack.bridge.stats
    attempts = s.attempts[baseline.attempts :]
    statuses = Counter(a.status for a in attempts)
    windows: dict[str, list[float]] = {}
    for target, _start, duration in storm.windows:
        windows.setdefault(target, []).append(duration)
    runs = plan.runs
    with_log = handler_log(stack)
    text = ""
    if with_log.exists():
        with with_log.open("rb") as f:
            f.seek(baseline.handler_log_offset)
            text = f.read(max(0, log_end - baseline.handler_log_offset)).decode("utf-8", "replace")
    return {
        "platform": stack.describe(),
        "runs": len(runs),
        "runs_by_plan": dict(Counter(str(r.kind) for r in runs)),
        "outputs_per_run": _spread([r.version.size for r in runs]),
        "versions": len(plan.versions),
        "sharded_versions": sum(1 for v in plan.versions if v.shards),
        "waves": plan.waves,
        "objects_written": storm.objects,
        "overwrites": storm.overwrites,
        "runs_with_overwrites": sum(1 for r in runs if r.overwrites),
        "runs_with_unexpected_objects": sum(
            1 for r in runs if any(p.startswith("extra/") for p in r.writes)
        ),
        "storage_notifications": storm.notifications,
        "duplicate_publishes": storm.duplicates,
        "malformed_messages": len(storm.malformed_ids),
        "suppressed_runs": sum(1 for r in runs if r.suppressed),
        "suppressed_messages": len(s.suppressed) - baseline.suppressed,
        "crashes_by_step": dict(sorted(Counter(FAULT_LINE.findall(text)).items())),
        # Every in-code crash, and every request a kill cut short, is answered 500 or 503.
        "answered_500": statuses.get(500, 0),
        "delivery_attempts": len(attempts),
        "attempt_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "acknowledged": len(s.acked) - baseline.acked,
        "dead_lettered": len(s.dead_lettered) - baseline.dead,
        "registry_windows": _spread(windows.get("registry", [])),
        "registry_503": stack.registry_tap.statuses[503] - baseline.registry_503,
        "bigquery_windows": _spread(windows.get("bigquery", [])),
        "bigquery_503": stack.bigquery_tap.statuses[503] - baseline.bigquery_503,
        "write_errors": storm.write_errors[:20],
        **real_faults(plan, storm),
    }


def real_faults(plan: Plan, storm: StormStats) -> dict[str, Any]:
    """The real faults (issue 13): planned (seeded) and carried out (timing)."""
    planned_post: Counter[str] = Counter(str(a.kind) for r in plan.runs for a in r.post)
    kills = storm.kills
    at_publish = [k for k in kills if k["kind"] == str(KillKind.AFTER_PUBLISH)]
    long_outages: dict[str, list[dict[str, Any]]] = {}
    for outage in storm.long_outages:
        long_outages.setdefault(outage["target"], []).append(outage)
    return {
        "kills_planned": dict(Counter(str(k.kind) for k in plan.kills)),
        "kills": dict(Counter(k["kind"] for k in kills)),
        "processes_killed": sum(len(k["pids"]) for k in kills),
        "kills_left_claimed": sum(1 for k in at_publish if k.get("record_after_kill") == "claimed"),
        "kills_at_publish_records": dict(
            Counter(str(k.get("record_after_kill")) for k in at_publish)
        ),
        "pre_deletes_planned": sum(len(r.pre_deletes) for r in plan.runs),
        "pre_deletes": storm.pre_deletes,
        "post_planned": {str(k): planned_post.get(str(k), 0) for k in After},
        "post_done": {str(k): storm.post_done.get(str(k), 0) for k in After},
        "post_after_announcement": storm.post_after_announcement,
        "post_skipped": storm.post_skipped[:20],
        "runs_changed_after_completion": sum(1 for r in plan.runs if r.post),
        "foreign_manifests": storm.foreign_manifests,
        "long_outages_planned": dict(Counter(str(o.target) for o in plan.long_outages)),
        "long_outages": {
            target: {
                "count": len(items),
                "seconds": [round(i["seconds"], 1) for i in items],
                "dead_lettered_meanwhile": sum(i.get("dead_lettered_meanwhile", 0) for i in items),
            }
            for target, items in long_outages.items()
        },
        "late_registrations": storm.late_registrations,
        "late_version_runs": sum(1 for r in plan.runs if r.version.late),
    }


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "min": round(min(values), 2),
        "mean": round(sum(values) / len(values), 2),
        "max": round(max(values), 2),
        "total": round(sum(values), 2),
    }


def _restore(stack: Any, concurrency: int, suppress: Any) -> None:
    stack.bridge.suppress = suppress
    stack.registry_tap.down = stack.bigquery_tap.down = False
    stack.bridge.concurrency = concurrency
    stack.restart_handler(None)


def run_chaos(stack: Any, config: ChaosConfig, say: Callable[[str], None] = print) -> ChaosResult:
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    deadline = t0 + config.timeout
    plan = make_plan(config.seed, config.runs, uuid.uuid4().hex[:6], config.duplicates)
    for version in plan.versions:  # late versions are registered by the storm
        register(stack, version.spec())
    say(
        f"plan: {len(plan.runs)} runs of {len(plan.versions)} versions in {plan.waves} waves,"
        f" {sum(r.writes_count for r in plan.runs)} writes; names under {plan.root}"
    )
    saved = (stack.bridge.concurrency, stack.bridge.suppress)
    describe = getattr(stack, "describe", None)
    platform = describe() if describe is not None else "one handler process"
    say(f"platform: {platform}")
    ledger = Ledger()
    settings = {
        "TALLY_CLAIM_LEASE_SECONDS": str(config.lease_seconds),
        "TALLY_REVISION_QUIET_SECONDS": f"{config.quiet_seconds:g}",
    }
    try:
        stack.bridge.concurrency = config.concurrency
        stack.restart_handler(
            {"TALLY_FAULTS": faults_setting(config.fault_rate, config.seed), **settings}
        )
        check_handler(stack)
        timings["setup"] = time.monotonic() - t0
        baseline, acked_before = take_baseline(stack)
        storm = Storm(stack, plan, baseline, deadline, ledger).run(say)
        storm_end = time.monotonic()
        timings["storm"] = storm.seconds
        log = handler_log(stack)
        log_end = log.stat().st_size if log.exists() else 0
        say(f"storm over in {storm.seconds:.0f} s (drained: {storm.drained}); repairing")
        repaired = repair(
            stack,
            plan,
            config.lease_seconds,
            config.quiet_seconds,
            storm.last_change,
            storm_end,
            deadline,
            ledger,
            {**settings, "TALLY_RECONCILE_MAX_RUNS": "200"},
            config.whole_bucket,
        )
        timings["repair"] = repaired.seconds
        t = time.monotonic()
        acked = set(stack.bridge.stats.acked) - acked_before
        figures, truths = check(stack, plan, baseline, storm.malformed_ids, repaired, acked, ledger)
        timings["check"] = time.monotonic() - t
        found = injections(stack, plan, baseline, storm, log_end)
        found["platform"] = platform
        histories = [] if figures.ok else failing_histories(stack, figures, truths)
    finally:
        _restore(stack, *saved)
    timings["total"] = time.monotonic() - t0
    return ChaosResult(
        config, plan, storm, repaired, figures, truths, found, timings, histories, platform
    )
