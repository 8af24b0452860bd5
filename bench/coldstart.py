"""Cold start: the import time of each function's `main` in a fresh interpreter.

    python -c "import time; t = time.perf_counter(); import main; print(time.perf_counter() - t)"

run with the function's directory as the working directory (as Cloud Functions loads it), the
median of several runs. The event handler creates its Google clients at the first delivery, not
at import, so this is what an instance pays before it can take its first request.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = {
    "registry": ROOT / "functions" / "registry",
    "event handler": ROOT / "functions" / "event_handler",
}
GOALS_MS = {"registry": 150.0, "event handler": 500.0}
PROGRAM = "import time; t = time.perf_counter(); import main; print(time.perf_counter() - t)"
# The event handler builds its Google clients at its first delivery: time that too, apart.
WIRE_PROGRAM = """import time
t = time.perf_counter()
import main
app = main._get_app()
(getattr(app, "wire", None) or app._wire)()
print(time.perf_counter() - t)"""
# Enough configuration to build the clients; nothing is contacted while building them.
WIRE_ENV = {
    "TALLY_PROJECT": "tally-local",
    "TALLY_OUTPUTS_BUCKET": "tally-outputs",
    "TALLY_REGISTRY_URL": "http://127.0.0.1:9",
    "TALLY_REGISTRY_AUTH": "none",
    "TALLY_COMPLETIONS_TOPIC": "run-completions",
    "TALLY_EVENTS_TABLE": "tally-local.tally.events",
    "TALLY_RUNS_TABLE": "tally-local.tally.runs",
    "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9",
    "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",
    "TALLY_BIGQUERY_ENDPOINT": "http://127.0.0.1:9",
}


def import_ms(
    directory: Path, program: str = PROGRAM, extra: dict[str, str] | None = None
) -> float:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONSTARTUP")
        and not k.startswith("TALLY_")
        and not k.endswith("_EMULATOR_HOST")
    }
    env.update(extra or {})
    out = subprocess.run(
        [sys.executable, "-c", program],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return float(out.strip().splitlines()[-1]) * 1000


def run(quick: bool = False) -> dict[str, Any]:
    runs = 3 if quick else 7
    results: dict[str, Any] = {"runs": runs, "functions": {}}
    for name, directory in FUNCTIONS.items():
        samples = [import_ms(directory) for _ in range(runs)]
        results["functions"][name] = {
            "median_ms": statistics.median(samples),
            "min_ms": min(samples),
            "max_ms": max(samples),
            "goal_ms": GOALS_MS[name],
            "meets_goal": statistics.median(samples) <= GOALS_MS[name],
        }
    wired = [import_ms(FUNCTIONS["event handler"], WIRE_PROGRAM, WIRE_ENV) for _ in range(runs)]
    results["event_handler_with_clients_ms"] = statistics.median(wired)
    return results


def report(results: dict[str, Any]) -> str:
    lines = [f"cold start: import of main in a fresh interpreter (median of {results['runs']})"]
    for name, row in results["functions"].items():
        lines.append(
            f"  {name:<14} median {row['median_ms']:.0f} ms (min {row['min_ms']:.0f}, "
            f"max {row['max_ms']:.0f}; goal <= {row['goal_ms']:.0f} ms)"
        )
    lines.append(
        f"  event handler, import + building its Google clients (first delivery): median "
        f"{results['event_handler_with_clients_ms']:.0f} ms"
    )
    return "\n".join(lines)
