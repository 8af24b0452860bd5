"""Every benchmark: `python -m bench [--quick | --full | --report-only]`.

Standard (`make bench`, within 15 minutes on 2 cores): starts its own local platform
(devstack.Stack) and the baseline's slice next to it, runs tally and the scratch-file baseline
side by side, times the handler's CPU per delivery, the cold starts, reconciliation, the sharded
runs of 1,000 (every write order, 1 and 4 instances, full speed and 100 writes/s; N = 10,000
derived by bench/sharded_sim.py) and the registry; prints a table, writes bench/results/*.json
and regenerates docs/benchmarks.md and its plots (docs/img/bench-*.png).

Full (`make bench-full`, an hour or more): the same with more runs per size, an end-to-end run
of 10,000 outputs, the sharded runs of 10,000 measured, the slow pace and today's design.

Quick (`make bench-quick`, `make test` through tests/integration/test_bench_quick.py, about a
minute): fewer runs and sizes; writes bench/results/quick.json only, never the page.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import coldstart, cpu, driver, reconcile, report, sharded
from bench.bqsink import BigQuerySink
from bench.realcloud import Model

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
NO_CACHE_ENV = {"TALLY_PRESENCE_CACHE_RUNS": "0"}


_STARTED = time.monotonic()


def _say(text: str) -> None:
    print(f"[{time.monotonic() - _STARTED:5.0f} s] {text}", flush=True)


def plan_text(plan: driver.Plan) -> str:
    def runs(sizes: dict[int, int]) -> str:
        return ", ".join(f"{count} × N={n:,}" for n, count in sorted(sizes.items())) or "none"

    return (
        f"tally {runs(plan.tally)}; scratch-file {runs(plan.baseline)}; tally with the presence "
        f"cache off {runs(plan.tally_no_cache)}; {driver.WRITERS} concurrent writers, delivery "
        "concurrency 8"
    )


def run_end_to_end(
    stack: Any,
    plan: driver.Plan,
    progress: Callable[[str], None] = _say,
    sink: Any = None,
    fresh_stack: Callable[[], AbstractContextManager[Any]] | None = None,
) -> dict[str, Any]:
    """tally and the baseline on an existing, started Stack (the test suite's, or our own);
    `plan.tally_large` on a platform from `fresh_stack` when given."""
    from bench.baseline_platform import BaselinePlatform

    tag = uuid.uuid4().hex[:6]
    tally = driver.TallyDesign(stack, sink)
    records: list[driver.RunRecord] = []
    with BaselinePlatform(stack, stack.state_dir / "baseline") as platform:
        baseline = driver.BaselineDesign(platform)
        plans = {tally.name: plan.tally, baseline.name: plan.baseline}
        records += driver.run_sizes(stack, [tally, baseline], plans, tag, progress)
    if plan.tally_no_cache:
        previous = dict(stack.handler_env)
        progress("  restarting tally's handler with TALLY_PRESENCE_CACHE_RUNS=0")
        stack.restart_handler({**previous, **NO_CACHE_ENV})
        try:
            records += driver.run_sizes(
                stack, [tally], {tally.name: plan.tally_no_cache}, tag, progress, "cache off"
            )
        finally:
            stack.restart_handler(previous)
    memory = process_memory_mb(stack)
    if plan.tally_large:
        with fresh_stack() if fresh_stack else nullcontext(stack) as large:
            progress(f"  a fresh platform for {sorted(plan.tally_large)} outputs")
            design = driver.TallyDesign(large, sink)
            records += driver.run_sizes(
                large, [design], {design.name: plan.tally_large}, tag, progress
            )
    return {
        "tag": tag,
        "memory_mb_after": memory,
        "plan": {
            "tally": plan.tally,
            "baseline": plan.baseline,
            "tally_no_cache": plan.tally_no_cache,
            "tally_large": plan.tally_large,
        },
        "platform": stack.describe(),
        "how": (
            f"one local platform (fake-gcs-server, pstest, functions-framework; the handler's "
            f"event log {'in bqemulator' if sink is None else 'streamed to bench/bqsink.py'}); the "
            f"baseline on a second fake-gcs-server that publishes to its own topic on the same "
            f"Pub/Sub emulator, delivered by its own push bridge (bench/baseline_platform.py). "
            f"Per run size, each run's outputs are written to both designs' buckets in the same "
            f"shuffled order by {driver.WRITERS} concurrent writers, tally's run first, then the "
            f"baseline's; the next run starts when the previous one is announced and its "
            f"deliveries have drained. "
            + (
                f"The runs of {', '.join(f'{n:,}' for n in sorted(plan.tally_large))} outputs "
                "ran on a second, fresh platform (an empty bucket: the local Storage writes "
                "more slowly the more objects its bucket holds)."
                if plan.tally_large and fresh_stack
                else ""
            )
        ),
        "records": [r.to_json() for r in records],
    }


def process_memory_mb(stack: Any) -> dict[str, float]:
    """Resident memory of the platform's processes (the emulators grow with what they hold)."""
    sizes: dict[str, float] = {}
    for name, proc in stack.processes().items():
        pid = getattr(getattr(proc, "proc", None), "pid", None)
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except (OSError, TypeError):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                sizes[name] = round(int(line.split()[1]) / 1024, 1)
    return sizes


def run_all(
    stack: Any,
    quick: bool,
    full: bool = False,
    progress: Callable[[str], None] = _say,
    sink: Any = None,
    fresh_stack: Callable[[], AbstractContextManager[Any]] | None = None,
    sharded_stack: Callable[[int], AbstractContextManager[Any]] | None = None,
) -> dict[str, Any]:
    """Every benchmark on an existing Stack; returns the results document. With `sink` (the
    full run), the handler's event log goes to a BigQuerySink instead of bqemulator. The
    sharded runs start a platform per instance count with `sharded_stack` (else: `stack`)."""
    from bench import registry

    started = time.monotonic()
    timings: dict[str, float] = {}
    plan = driver.QUICK if quick else (driver.LARGE if full else driver.FULL)
    model = Model()
    results: dict[str, Any] = {
        "quick": quick,
        "command": "make bench-quick" if quick else ("make bench-full" if full else "make bench"),
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": report.machine(),
        "plan_text": plan_text(plan),
        "model": model.describe(),
    }

    def timed(name: str, work: Callable[[], Any]) -> Any:
        progress(f"{name} ...")
        t = time.monotonic()
        value = work()
        timings[name] = time.monotonic() - t
        return value

    results["cold_start"] = timed("cold start", lambda: coldstart.run(quick))
    progress(coldstart.report(results["cold_start"]))
    results["cpu"] = timed("handler CPU", lambda: cpu.run(quick))
    progress(cpu.report(results["cpu"]))
    results["e2e"] = timed(
        "end to end", lambda: run_end_to_end(stack, plan, progress, sink, fresh_stack)
    )
    results["e2e"]["event_log"] = "bqemulator, SQL" if sink is None else "sink (bench/bqsink.py)"
    results["summary"] = report.summarize(results["e2e"]["records"], model)
    results["reconcile"] = timed("reconcile", lambda: reconcile.run(quick, progress))
    shards_plan = sharded.QUICK if quick else (sharded.LARGE if full else sharded.FULL)
    results["sharded"] = timed(
        "sharded runs",
        lambda: sharded.run(
            shards_plan,
            sharded_stack or (lambda _k: nullcontext(stack)),
            results["e2e"]["tag"],
            progress,
            sink,
        ),
    )
    results["registry"] = timed("registry", lambda: registry.run(quick))
    results["registry_report"] = registry.report(results["registry"])
    progress(results["registry_report"])
    results["timings"] = timings
    results["elapsed_s"] = time.monotonic() - started
    return results


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n")
    tmp.replace(path)


def publish(results: dict[str, Any], results_dir: Path = RESULTS_DIR) -> None:
    """Full run only: the results files, the page and its plots."""
    write_json(results_dir / "benchmarks.json", results)
    write_json(results_dir / "registry.json", results["registry"])
    write_json(results_dir / "reconcile.json", results["reconcile"])
    write_json(results_dir / "sharded.json", results["sharded"])
    render(results)


def render(results: dict[str, Any]) -> None:
    for name in ("reconcile", "sharded"):  # sections kept in their own results files
        path = RESULTS_DIR / f"{name}.json"
        if results.get(name) is None and path.exists():
            results[name] = json.loads(path.read_text())
    extra = RESULTS_DIR / sharded.EXTRA
    if extra.exists():
        results["sharded"] = sharded.with_extra(
            results.get("sharded"), json.loads(extra.read_text())
        )
    model = Model(**results["model"]["values"])
    results["summary"] = report.summarize(results["e2e"]["records"], model)
    for path in report.plots(results["summary"], model):
        _say(f"  plot {path.relative_to(ROOT)}")
    report.DOC.write_text(report.markdown(results))
    _say(f"  page {report.DOC.relative_to(ROOT)}")


def quick(stack: Any, results_dir: Path = RESULTS_DIR) -> dict[str, Any]:
    """The smoke run on an existing Stack; writes quick.json only."""
    results = run_all(stack, quick=True)
    write_json(results_dir / "quick.json", results)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a smoke run; writes quick.json only")
    mode.add_argument(
        "--full",
        action="store_true",
        help="more runs, N = 10,000 measured and today's design (an hour or more on 2 cores)",
    )
    mode.add_argument(
        "--report-only", action="store_true", help="regenerate the page from benchmarks.json"
    )
    args = parser.parse_args(argv)
    if args.report_only:
        render(json.loads((RESULTS_DIR / "benchmarks.json").read_text()))
        return 0
    from devstack import Stack

    if args.quick:
        with Stack(state_dir=ROOT / ".devstack" / "bench-quick", concurrency=8) as stack:
            _say(f"local platform ready in {stack.timings['ready']:.1f} s")
            results = quick(stack)
    else:
        with BigQuerySink() as sink:
            environ = {**os.environ, "TALLY_BIGQUERY_ENDPOINT": sink.url}

            def fresh() -> Stack:
                return Stack(state_dir=ROOT / ".devstack" / "bench-large", environ=environ)

            with Stack(state_dir=ROOT / ".devstack" / "bench", environ=environ) as stack:
                _say(f"local platform ready in {stack.timings['ready']:.1f} s")
                results = run_all(
                    stack,
                    quick=False,
                    full=args.full,
                    sink=sink,
                    fresh_stack=fresh,
                    sharded_stack=lambda k: Stack(
                        state_dir=ROOT / ".devstack" / f"bench-shards-{k}",
                        instances=k,
                        environ=environ,
                    ),
                )
    print("\n" + report.printed_table(results), flush=True)
    if args.quick:
        _say(f"written to {(RESULTS_DIR / 'quick.json').relative_to(ROOT)}")
    else:
        publish(results)
        _say(f"written to {RESULTS_DIR.relative_to(ROOT)}/benchmarks.json and registry.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
