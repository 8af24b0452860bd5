"""Summaries, the printed table, docs/benchmarks.md and its plots, from the results document."""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench import reconcile, sharded
from bench.realcloud import Model

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
IMG_DIR = ROOT / "docs" / "img"
TALLY, BASELINE = "tally", "scratch-file"
COMMANDS = [
    ("make bench", "everything: rewrites bench/results/ and this page"),
    ("make bench-quick", "a smoke run (about a minute): bench/results/quick.json only"),
    (".venv/bin/python -m bench", "what `make bench` runs"),
    (".venv/bin/python -m bench --report-only", "this page again from bench/results/"),
    (
        ".venv/bin/python -m bench.reconcile",
        "the reconciliation benchmark alone: bench/results/reconcile.json and its section",
    ),
]

# Results recorded before the platform said how it served and retried (issue 13) had this one.
HISTORIC_PLATFORM = (
    "1 handler instance (never restarted), push retries 5 attempts with backoff 0.05 s to 1 s"
)


# -- machine ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    memory_gib = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(memory_gib, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# -- summaries -------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: with 20 samples, p99 is the largest."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def summarize(records: list[dict[str, Any]], model: Model) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["design"], record["variant"], record["n"])].append(record)
    rows = []
    for (design, variant, n), runs in sorted(
        groups.items(), key=lambda item: (item[0][0], item[0][1] != "cache on", item[0][2])
    ):
        own = [r["own"] for r in runs]
        latencies = [r["latency_s"] for r in runs if r["latency_s"] is not None]
        deliveries = sum(o["deliveries"] for o in own)
        row: dict[str, Any] = {
            "design": design,
            "variant": variant,
            "n": n,
            "runs": len(runs),
            "announcements": [r["announcements"] for r in runs],
            "double_announcements": sum(max(0, r["announcements"] - 1) for r in runs),
            "deliveries": _mean([o["deliveries"] for o in own]),
            "during_run_share": sum(o["during_run"] for o in own) / deliveries if deliveries else 0,
            "latency_p50_s": statistics.median(latencies) if latencies else None,
            "latency_p99_s": percentile(latencies, 0.99) if latencies else None,
            "write_seconds": _mean([r["write_seconds"] for r in runs]),
        }
        for key in ("reads", "lists", "list_entries", "writes", "precondition_failures"):
            row[key] = _mean([o[key] for o in own])
        row["operations"] = _mean([o["operations"] for o in own])
        names = sorted({k for o in own for k in o["outcomes"]})
        row["outcomes"] = {k: _mean([o["outcomes"].get(k, 0) for o in own]) for k in names}
        row["successful_writes"] = row["writes"] - row["precondition_failures"]
        for key in ("read", "list", "write", "other", "http_412"):
            row[f"tap_{key}"] = _mean([r["tap"][key] for r in runs])
        row["tap_operations"] = row["tap_read"] + row["tap_list"] + row["tap_write"]
        completing = [o["completing"] for o in own if o["completing"]]
        timed = [c for c in completing if "wait_s" in c]
        row["breakdown"] = {
            key: statistics.median([c[key] for c in timed]) if timed else None
            for key in ("wait_s", "handler_s")
        }
        if design == TALLY:
            reads = statistics.median([c["reads"] for c in completing]) if completing else 0
            lists = statistics.median([c["lists"] for c in completing]) if completing else 0
            row["completing"] = {"reads": reads, "lists": lists}
            row["derived_cloud_s"] = model.tally(reads, lists)
        else:
            serialized = _mean([o["serialized_writes"] for o in own])
            row["serialized_writes"] = serialized
            row["derived_cloud_s"] = model.scratch_file(serialized)
        rows.append(row)
    return rows


def find(summary: list[dict[str, Any]], design: str, n: int, variant: str = "cache on"):
    for row in summary:
        if (row["design"], row["n"], row["variant"]) == (design, n, variant):
            return row
    return None


# -- text ------------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


def _num(value: float) -> str:
    whole = abs(value - round(value)) < 1e-6
    return f"{value:,.0f}" if value >= 100 or whole else f"{value:,.1f}"


def _duration(seconds: float) -> str:
    if seconds >= 100:
        return f"{seconds:,.0f} s"
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.0f} ms"


def _design(r: dict[str, Any]) -> str:
    """A summary row's design, with its variant unless it is the default (presence cache on)."""
    return r["design"] if r["variant"] == "cache on" else f"{r['design']} ({r['variant']})"


# The tables share one shape (header, alignment row, a row per summary line): each spells out its
# columns next to the cells that fill them, which a table-of-columns helper would pull apart.
def e2e_table(summary: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| design | N | runs | deliveries / run | announcements per run | reads | list pages "
        "(entries) | writes (412) | Storage ops / run | proxy: reads / lists / writes (412) "
        "| last output → completion p50 / p99 | deliveries during the run |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary:
        counts = sorted(set(r["announcements"]))
        announced = ", ".join(str(c) for c in counts)
        if r["double_announcements"]:
            announced += f" (**{r['double_announcements']} double**)"
        lines.append(
            f"| {_design(r)} | {r['n']:,} | {r['runs']} | {_num(r['deliveries'])} | {announced} "
            f"| {_num(r['reads'])} | {_num(r['lists'])} ({_num(r['list_entries'])}) "
            f"| {_num(r['writes'])} ({_num(r['precondition_failures'])}) "
            f"| **{_num(r['operations'])}** "
            f"| {_num(r['tap_read'])} / {_num(r['tap_list'])} / {_num(r['tap_write'])} "
            f"({_num(r['tap_http_412'])}) "
            f"| {_ms(r['latency_p50_s'])} / {_ms(r['latency_p99_s'])} "
            f"| {r['during_run_share'] * 100:.0f} % |"
        )
    return lines


def breakdown_table(summary: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| design | N | last output → completion, p50 | the announcing delivery started "
        "(after the last output's write; negative: before it) | the announcing delivery's "
        "own time (includes its writes after the publish) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in summary:
        wait, handler = r["breakdown"]["wait_s"], r["breakdown"]["handler_s"]
        if wait is None or handler is None or r["latency_p50_s"] is None:
            continue
        lines.append(
            f"| {_design(r)} | {r['n']:,} | {_ms(r['latency_p50_s'])} | {_ms(wait)} "
            f"| {_ms(handler)} |"
        )
    return lines


def cloud_table(summary: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| design | N | measured basis | derived real-cloud time, last output → completion |",
        "|---|---:|---|---:|",
    ]
    for r in summary:
        if r["variant"] != "cache on":
            continue
        if r["design"] == TALLY:
            c = r["completing"]
            basis = f"completing delivery: {_num(c['reads'])} reads, {_num(c['lists'])} list pages"
        else:
            basis = f"{_num(r['serialized_writes'])} serialized writes of output.json"
        lines.append(
            f"| {r['design']} | {r['n']:,} | {basis} | **{_duration(r['derived_cloud_s'])}** |"
        )
    return lines


def cpu_table(cpu: dict[str, Any]) -> list[str]:
    lines = [
        "| N | presence cache | deliveries timed | p50 | p99 | mean incl. the completing one "
        "| the completing delivery (lists and manifests the run) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in cpu["sizes"]:
        lines.append(
            f"| {row['n']:,} | {'on' if row['presence_cache'] else 'off'} | {row['deliveries']:,} "
            f"| {row['p50_ms']:.3f} ms | {row['p99_ms']:.3f} ms "
            f"| {row['per_delivery_incl_completing_ms']:.3f} ms | {row['completing_ms']:.1f} ms |"
        )
    return lines


def goals_table(results: dict[str, Any], summary: list[dict[str, Any]]) -> list[str]:
    sizes = sorted({r["n"] for r in summary if r["design"] == TALLY and r["variant"] == "cache on"})
    base_sizes = sorted({r["n"] for r in summary if r["design"] == BASELINE})

    def per_size(design: str, pick, ns: list[int]) -> str:
        parts = []
        for n in ns:
            row = find(summary, design, n)
            if row is not None:
                parts.append(f"N={n:,}: {pick(row)}")
        return "; ".join(parts) or "-"

    def writes(r: dict[str, Any]) -> str:
        return f"{_num(r['successful_writes'])} (+{_num(r['precondition_failures'])} × 412)"

    def latency(r: dict[str, Any]) -> str:
        return f"{_ms(r['latency_p50_s'])} / {_ms(r['latency_p99_s'])}"

    top = find(summary, TALLY, 10000)
    ops_10k = "not run" if top is None else f"**{_num(top['operations'])}** (3N = 30,000)"
    t1k, b1k = find(summary, TALLY, 1000), find(summary, BASELINE, 1000)
    cpu_rows = [r for r in results["cpu"]["sizes"] if r["presence_cache"]]
    cpu_text = "; ".join(
        f"N={r['n']:,}: p50 {r['p50_ms']:.2f} / p99 {r['p99_ms']:.2f} ms" for r in cpu_rows
    )
    lines = [
        "| figure | scratch-file baseline (measured) | tally (measured) | tally goal |",
        "|---|---|---|---|",
        f"| Storage writes per run (successful; 412 refusals apart) "
        f"| {per_size(BASELINE, writes, base_sizes)} | {per_size(TALLY, writes, sizes)} | 2 |",
        "| Storage operations per run at N = 10,000 | not run (one run of 1,000 outputs "
        f"takes it about a minute here) | {ops_10k} | ≤ 3N |",
        f"| last output → completion message, local, p50 / p99 "
        f"| {per_size(BASELINE, latency, base_sizes)} | {per_size(TALLY, latency, sizes)} "
        f"| ≤ 200 ms / ≤ 1 s |",
        f"| derived real-cloud time to announce a run of 1,000 outputs "
        f"| {'-' if b1k is None else _duration(b1k['derived_cloud_s'])} "
        f"| {'-' if t1k is None else _duration(t1k['derived_cloud_s'])} after the last output "
        f"| ≤ 1 s after the last output |",
        f"| handler CPU per delivery (in-process, presence cache on) | not measured | {cpu_text} "
        f"| ≤ 2 ms |",
        f"| announcements per run | {per_size(BASELINE, _announced, base_sizes)} "
        f"| {per_size(TALLY, _announced, sizes)} | 1 |",
    ]
    return lines


def _announced(r: dict[str, Any]) -> str:
    text = "/".join(str(c) for c in sorted(set(r["announcements"])))
    return text + (f" ({r['double_announcements']} double)" if r["double_announcements"] else "")


def printed_table(results: dict[str, Any]) -> str:
    summary = results["summary"]
    lines = [
        f"{'design':<20}{'N':>7}{'runs':>5}{'deliv/run':>10}  {'announced':<10}{'ops/run':>9}"
        f"{'writes':>8}{'412s':>7}{'proxy ops':>10}{'p50':>11}{'p99':>11}{'cloud':>10}"
    ]
    for r in summary:
        name = r["design"] if r["variant"] == "cache on" else f"{r['design']} (no cache)"
        ann = "/".join(str(c) for c in sorted(set(r["announcements"])))
        lines.append(
            f"{name:<20}{r['n']:>7}{r['runs']:>5}{r['deliveries']:>10.0f}  {ann:<10}"
            f"{r['operations']:>9.0f}{r['writes']:>8.0f}{r['precondition_failures']:>7.0f}"
            f"{r['tap_operations']:>10.0f}{_ms(r['latency_p50_s']):>11}"
            f"{_ms(r['latency_p99_s']):>11}{_duration(r['derived_cloud_s']):>10}"
        )
    return "\n".join(lines)


# -- plots -----------------------------------------------------------------------------------


def plots(summary: list[dict[str, Any]], model: Model, img_dir: Path = IMG_DIR) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_dir.mkdir(parents=True, exist_ok=True)
    series = {
        (TALLY, "cache on"): ("tally", "tab:blue", "o-"),
        (TALLY, "cache off"): ("tally, presence cache off", "tab:cyan", "s--"),
        (BASELINE, "cache on"): ("scratch-file baseline", "tab:red", "^-"),
    }

    def points(design: str, variant: str, key: str) -> tuple[list[int], list[float]]:
        rows = [r for r in summary if (r["design"], r["variant"]) == (design, variant)]
        rows = [r for r in rows if r.get(key) is not None]
        return [r["n"] for r in rows], [r[key] for r in rows]

    paths = []
    all_n = sorted({r["n"] for r in summary})
    span = [min(all_n), max(all_n)] if all_n else [10, 10000]

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (design, variant), (label, color, style) in series.items():
        xs, ys = points(design, variant, "operations")
        if xs:
            ax.plot(xs, ys, style, color=color, label=f"{label}: all operations")
        xs, ys = points(design, variant, "writes")
        if xs and variant == "cache on":
            ax.plot(xs, ys, ":", marker="x", color=color, label=f"{label}: writes (incl. 412)")
    ax.plot(span, [3 * n for n in span], color="grey", lw=0.8, ls="--", label="3N (tally's goal)")
    ax.plot(span, span, color="grey", lw=0.8, ls=":", label="N")
    paths.append(
        _save(
            fig,
            ax,
            "Storage requests per run",
            "Storage operations per run",
            img_dir / "bench-storage-ops.png",
        )
    )

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (design, variant), (label, color, style) in series.items():
        xs, p50 = points(design, variant, "latency_p50_s")
        _, p99 = points(design, variant, "latency_p99_s")
        if xs:
            ax.plot(xs, [v * 1000 for v in p50], style, color=color, label=f"{label}: p50")
            p99_ms = [v * 1000 for v in p99]
            ax.plot(xs, p99_ms, ":", marker="v", color=color, label=f"{label}: p99")
    ax.axhline(200, color="grey", lw=0.8, ls="--", label="200 ms (tally's p50 goal)")
    ax.axhline(1000, color="grey", lw=0.8, ls=":", label="1 s (tally's p99 goal)")
    paths.append(
        _save(
            fig,
            ax,
            "ms",
            "Last output written → completion message (local)",
            img_dir / "bench-latency.png",
        )
    )

    fig, ax = plt.subplots(figsize=(7, 4.5))
    line = [10 ** (k / 4) for k in range(4, 17)]
    ax.plot(
        line,
        [model.scratch_file(n) for n in line],
        color="tab:red",
        lw=0.8,
        label="scratch-file model with W = N",
    )
    for design, label, color, style in (
        (BASELINE, "scratch-file (measured writes)", "tab:red", "^"),
        (TALLY, "tally (measured completing delivery)", "tab:blue", "o-"),
    ):
        xs, ys = points(design, "cache on", "derived_cloud_s")
        if xs:
            ax.plot(xs, ys, style, color=color, label=label)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--", label="1 s (tally's goal)")
    paths.append(
        _save(
            fig,
            ax,
            "seconds after the last output",
            "Derived real-cloud time to announce a run",
            img_dir / "bench-realcloud.png",
        )
    )
    return paths


def _save(fig: Any, ax: Any, ylabel: str, title: str, path: Path) -> Path:
    """Every plot: log-log over the run size, a legend and a grid."""
    ax.set(xscale="log", yscale="log", xlabel="outputs per run (N)", ylabel=ylabel, title=title)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# -- the page --------------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    summary = results["summary"]
    m = results["machine"]
    model = Model(**results["model"]["values"])
    e2e = results["e2e"]
    tally_during = [r for r in summary if r["design"] == TALLY and r["variant"] == "cache on"]
    base_during = [r for r in summary if r["design"] == BASELINE]
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by `python -m bench` (bench/report.py) from bench/results/benchmarks.json;"
        " edit the generator, not this page. -->",
        "",
        "tally against the design it replaces, the scratch-file baseline: the scratch-file "
        "aggregation proposed for WFL's `sg_update_clio` ([broadinstitute/wfl pull request 286]"
        "(https://github.com/broadinstitute/wfl/pull/286)), where every finalize event rewrites "
        "one `output.json` under a generation precondition and a metadata update claims the "
        "complete file (bench/baseline.py). Both are measured side by side in one run on the same "
        "local platform, with the handler's CPU per delivery, the functions' cold start and the "
        "registry. "
        f"Generated {results['generated_at']} by `{results.get('command', 'make bench')}` in"
        f" {results['elapsed_s']:.0f} s.",
        "",
        "Every figure on this page was measured with "
        + e2e.get("platform", HISTORIC_PLATFORM)
        + " (the local platform's push subscription and handler instances: README, Local"
        " platform).",
        "",
        "## Goals",
        "",
        *goals_table(results, summary),
        "",
        "## Findings",
        "",
        *[f"- {finding}" for finding in findings(results)],
        "",
        "## End to end, per run",
        "",
        "Storage requests are the design's own per-delivery counters summed over the run (tally: "
        "the `storage_*` columns of its events table; scratch-file: its JSON lines), averaged "
        "over the runs; *proxy* is the independent count of the counting proxy in front of that "
        "design's Storage (reset before each run). *Writes* count attempts, including those "
        "refused with `412`. *Deliveries during the run*: the share of deliveries that started "
        "before the last output was written.",
        "",
        *e2e_table(summary),
        "",
        "![Storage operations per run](img/bench-storage-ops.png)",
        "",
        "![Completion latency](img/bench-latency.png)",
        "",
        "Where the time goes (medians over the runs; the announcing delivery's start and "
        "duration from the design's own log):",
        "",
        *breakdown_table(summary),
        "",
        "How it ran: " + e2e["how"],
        "",
        "Why the full run's event log is a sink: bqemulator keeps about 0.7 MB of memory per "
        "single-row streaming insert (measured while building this benchmark: 600 events rows "
        "grew it from 197 MB to 635 MB) and its insert latency grows with it; a first full run "
        "on it reached 14 GB after about 7,000 deliveries and had to be stopped. The sink "
        "(bench/bqsink.py) keeps the rows exactly as the handler streams them, and the driver "
        "sums the same columns; `make test`'s quick run reads them back from bqemulator with "
        "SQL.",
        "",
        "Resident memory of the platform's processes after the end-to-end runs: "
        + ", ".join(f"{k} {v:,.0f} MB" for k, v in e2e.get("memory_mb_after", {}).items())
        + ".",
        "",
        "Does the handler keep up? The writers write as fast as they can; the local Storage "
        f"slows them as its bucket fills ({_rates(summary)}). Share of the deliveries that "
        f"started while the run was still being written: tally {_shares(tally_during)}; "
        f"scratch-file {_shares(base_during)}. Where it is low, the function (one instance, "
        f"8 concurrent deliveries, {m['nproc']} shared cores) fell behind and the deliveries "
        "queued in Pub/Sub; a tally delivery that arrives after its instance announced the run "
        "costs no Storage request, which is why the presence-cache-off rows matter.",
        "",
        "## Derived real-cloud time",
        "",
        "Locally one object can be rewritten as fast as the emulator goes; in Cloud Storage it "
        "cannot. The model, for a run whose outputs land faster than one per second:",
        "",
        *[f"- {f}" for f in model.formulas()],
        "",
        "| parameter | value | source |",
        "|---|---:|---|",
        *[
            f"| {key} | {value} s | {results['model']['sources'][key]} |"
            for key, value in results["model"]["values"].items()
        ],
        "",
        *cloud_table(summary),
        "",
        "![Derived real-cloud time](img/bench-realcloud.png)",
        "",
        "## Handler CPU per delivery",
        "",
        "tally's event handler in-process (`App.handle`: parse the push envelope, layout, "
        "completeness on the known set, event row and log line; the completing delivery also "
        "lists the whole folder and builds the manifest), Storage, registry, Pub/Sub and "
        "BigQuery replaced by in-memory doubles (bench/cpu.py). Outputs land one at a time in "
        "shuffled order, each followed by its delivery. Goal ≤ 2 ms per delivery.",
        "",
        *cpu_table(results["cpu"]),
        "",
        "## Cold start",
        "",
        f"Import of each function's `main` in a fresh interpreter, working directory = the "
        f"function's directory, median of {results['cold_start']['runs']} runs:",
        "",
        "| function | median | min | max | goal |",
        "|---|---:|---:|---:|---:|",
        *[
            f"| {name} | {row['median_ms']:.0f} ms | {row['min_ms']:.0f} ms "
            f"| {row['max_ms']:.0f} ms | ≤ {row['goal_ms']:.0f} ms |"
            for name, row in results["cold_start"]["functions"].items()
        ],
        "",
        "The event handler builds its Google clients (Storage, Pub/Sub, BigQuery) at its first "
        "delivery, not at import: import plus building them takes "
        f"{results['cold_start']['event_handler_with_clients_ms']:.0f} ms (median), paid once "
        "per instance before its first delivery.",
        "",
        "## Registry",
        "",
        "From bench/registry.py (`run()` / `report()`), also written to "
        "bench/results/registry.json:",
        "",
        "```",
        results["registry_report"],
        "```",
        "",
        *sharded.section(results.get("sharded"), model),
        *reconcile.section(results.get("reconcile")),
        "## Machine",
        "",
        f"- {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB memory, Python {m['python']},"
        f" {m['platform']}",
        f"- load average when the run started: {_loads(m)} (other sessions share this "
        "machine: compare the designs with each other, not with another day's figures)",
        "",
        "## Commands",
        "",
        *[f"- `{command}`: {what}" for command, what in COMMANDS],
        "",
        f"The run: {results['plan_text']}. Sections took: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in results["timings"].items())
        + ".",
        "",
    ]
    return "\n".join(lines)


def _loads(m: dict[str, Any]) -> str:
    return ", ".join(str(x) for x in m["load_average_at_start"])


def _rates(summary: list[dict[str, Any]]) -> str:
    rows = [r for r in summary if r["variant"] == "cache on" and r["design"] == TALLY]
    return ", ".join(
        f"{r['n'] / r['write_seconds']:,.0f} outputs/s at N = {r['n']:,}"
        for r in rows
        if r["write_seconds"] > 0
    )


def _shares(rows: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['during_run_share'] * 100:.0f} % at N = {r['n']:,}" for r in rows)


def findings(results: dict[str, Any]) -> list[str]:
    """Sentences computed from the figures (the page states only what was measured)."""
    summary = results["summary"]
    out = []
    base = [r for r in summary if r["design"] == BASELINE]
    if base:
        out.append(_double_finding(base))
    tally_rows = [r for r in summary if r["design"] == TALLY]
    bad = [r for r in tally_rows if set(r["announcements"]) != {1}]
    out.append(
        "tally announced every run exactly once."
        if not bad
        else "tally announced some runs other than once: "
        + ", ".join(f"N = {r['n']}: {r['announcements']}" for r in bad)
    )
    for r in base:
        t = find(summary, TALLY, r["n"])
        if t is None:
            continue
        out.append(
            f"N = {r['n']:,}: scratch-file {_num(r['operations'])} Storage requests per run "
            f"({_num(r['precondition_failures'])} refused with 412) vs tally "
            f"{_num(t['operations'])} ({_ratio(r['operations'], t['operations'])}); latency p50 "
            f"{_ms(r['latency_p50_s'])} vs {_ms(t['latency_p50_s'])} "
            f"({_ratio(r['latency_p50_s'], t['latency_p50_s'])})."
        )
    off = [r for r in summary if r["design"] == TALLY and r["variant"] == "cache off"]
    for r in off:
        on = find(summary, TALLY, r["n"])
        against = "" if on is None else f", against {_num(on['operations'])} with the cache"
        out.append(
            f"Presence cache off (every delivery on a fresh instance), N = {r['n']:,}: "
            f"{_num(r['operations'])} Storage requests per run ({r['operations'] / r['n']:.1f} N: "
            f"{_num(r['reads'])} reads, {_num(r['lists'])} list pages with "
            f"{_num(r['list_entries'])} entries, {_num(r['writes'])} writes of which "
            f"{_num(r['precondition_failures'])} refused){against}; "
            f"{r['during_run_share'] * 100:.0f} % of its deliveries ran while the run was "
            f"being written. {_num(r['outcomes'].get('after-completion', 0))} deliveries per run "
            "came after the run was complete: without the cache each of them probes, lists the "
            "whole run folder and tries the claim (hence the 412s), where a cached instance "
            "answers at once. The figure depends on how far the function falls behind the "
            "writers, so it varies between runs."
        )
    out.append(_latency_finding([r for r in summary if r["design"] == TALLY]))
    burst = find(summary, TALLY, 10)
    if burst is not None and burst["precondition_failures"]:
        out.append(
            f"tally at N = 10: the outputs land within {burst['write_seconds'] * 1000:.0f} ms, "
            "before the first delivery, so the deliveries in flight all find the run complete. "
            "On each instance one of them lists the run and tries the claim while the others "
            "wait for it (handler.Finishers); the instance that loses the claim gets a 412, as "
            "does the second write of the open-run index entry: "
            f"{_num(burst['precondition_failures'])} refused writes per run on average. Correct "
            "(one announcement); without the finisher every such delivery listed and tried the "
            "claim (14.7 refused writes per run)."
        )
    return out


def _latency_finding(rows: list[dict[str, Any]]) -> str:
    def sizes(key: str, goal: float) -> str:
        met = [r for r in rows if r["variant"] == "cache on" and (r[key] or goal + 1) <= goal]
        return ", ".join(f"N = {r['n']:,}" for r in met) or "no run size"

    text = (
        f"tally's local latency goals: p50 ≤ 200 ms is met at {sizes('latency_p50_s', 0.2)}; "
        f"p99 ≤ 1 s at {sizes('latency_p99_s', 1.0)}. Most of the time is the announcing "
        "delivery itself on the shared local platform: "
    )
    parts = [
        f"{_ms(r['breakdown']['handler_s'])} at N = {r['n']:,}"
        + ("" if r["variant"] == "cache on" else f" ({r['variant']})")
        for r in rows
        if r["breakdown"]["handler_s"] is not None
    ]
    return text + ", ".join(parts) + " (its CPU is a small part of it: see the CPU table)."


def _double_finding(base: list[dict[str, Any]]) -> str:
    counts = [c for r in base for c in r["announcements"]]
    several = sum(1 for c in counts if c > 1)
    text = (
        f"The scratch-file baseline announced {several} of its {len(counts)} runs more than once "
        f"({sum(c - 1 for c in counts if c > 1)} extra announcements). The local Storage accepts "
        "a metadata update whatever its `ifMetagenerationMatch` (it does not even bump the "
        "metageneration), so invocations that read the complete, unclaimed scratch file "
        "at about the same time all claim it; in the cloud the precondition would make all but "
        "one lose. A finding about the emulator (the baseline's exactly-once rests on that "
        "precondition), reported, not hidden. "
    )
    where = [
        f"N = {r['n']:,}: {sum(1 for c in r['announcements'] if c > 1)} of {r['runs']} runs"
        for r in base
        if r["double_announcements"]
    ]
    if where:
        return text + "By run size: " + ", ".join(where) + "."
    return text + "It did not happen in these runs."


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:,.1f}×"
