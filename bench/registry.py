"""Registry benchmark: cold import time, in-process and HTTP latency, requests per second.

    .venv/bin/python bench/registry.py [--quick]

Prints the figures and writes bench/results/registry.json. Not a test: goals are printed next to
the figures (import <= 150 ms, in-process p50 <= 2 ms, >= 1,500 req/s over HTTP). The HTTP figures
are of devstack's `RegistryStack`: the registry as the local platform serves it, alone.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REGISTRY_DIR = ROOT / "functions" / "registry"
RESULTS = ROOT / "bench" / "results" / "registry.json"
GOALS = {"import_ms": 150.0, "inprocess_p50_ms": 2.0, "http_rps": 1500.0}


# -- measurements ----------------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def import_time_ms(runs: int) -> dict[str, float]:
    """Cumulative import time of `main` (python -X importtime) in fresh interpreters."""
    totals = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import main"],
            cwd=REGISTRY_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        match = re.search(r"^import time:\s+\d+ \|\s+(\d+) \| main$", out, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no import time for main in:\n{out[-2000:]}")
        totals.append(int(match.group(1)) / 1000)
    return {"median": statistics.median(totals), "min": min(totals), "max": max(totals)}


def in_process(requests_n: int) -> dict[str, float]:
    """p50/p99 of a cached GET through a Flask app routed like functions-framework's."""
    sys.path.insert(0, str(REGISTRY_DIR))
    import flask
    import werkzeug.routing
    from tally_registry import entry
    from tally_registry.api import Api
    from tally_registry.registry import Registry
    from tally_registry.store import MemoryStore

    store = MemoryStore()
    for spec in sorted((ROOT / "workflows").glob("*/*.json")):
        store.write(f"workflows/{spec.parent.name}/{spec.name}", spec.read_bytes(), 0)
    entry._api = Api(Registry(store), authorizer=None)  # type: ignore[arg-type]  # reads only
    app = flask.Flask("bench")
    app.url_map.add(werkzeug.routing.Rule("/<path:path>", endpoint="run"))
    app.view_functions["run"] = lambda path: entry.handle(flask.request._get_current_object())
    client = app.test_client()
    path = "/workflows/variant-calling/versions/1.1.0"
    assert client.get(path).status_code == 200
    samples = []
    for _ in range(requests_n):
        t = time.perf_counter()
        resp = client.get(path)
        samples.append((time.perf_counter() - t) * 1000)
        assert resp.status_code == 200
    core = []
    from tally_registry.api import Request

    req = Request.of("GET", path)
    for _ in range(requests_n):
        t = time.perf_counter()
        entry._api.handle(req)
        core.append((time.perf_counter() - t) * 1000)
    entry._api = None
    return {
        "p50_ms": percentile(samples, 0.50),
        "p99_ms": percentile(samples, 0.99),
        "core_p50_ms": percentile(core, 0.50),
        "requests": requests_n,
    }


def _get_loop(host: str, path: str, deadline: float, out: list[float]) -> None:
    conn = http.client.HTTPConnection(host, timeout=10)
    try:
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"GET {path}: {resp.status}")
            out.append(time.perf_counter() - t)
    finally:
        conn.close()


def _rps_worker(host: str, path: str, seconds: float, connections: int) -> None:
    """Child process: `connections` keep-alive clients; prints its request count."""
    deadline = time.perf_counter() + seconds
    counts: list[list[float]] = [[] for _ in range(connections)]
    threads = [threading.Thread(target=_get_loop, args=(host, path, deadline, c)) for c in counts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(sum(len(c) for c in counts))


def over_http(url: str, seconds: float, latency_n: int) -> dict[str, float]:
    host = url.removeprefix("http://")
    path = "/workflows/variant-calling/versions/1.1.0"
    lat: list[float] = []
    _get_loop(host, path, time.perf_counter() + 1.0, [])  # warm: caches, connections
    deadline = time.perf_counter() + 60
    conn = http.client.HTTPConnection(host, timeout=10)
    while len(lat) < latency_n and time.perf_counter() < deadline:
        t = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        lat.append((time.perf_counter() - t) * 1000)
    conn.close()
    # Throughput: load from a separate process so the client does not share the test's GIL.
    procs, conns = 1, 4
    started = time.perf_counter()
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--rps-worker", host, path, str(seconds), str(conns)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(procs)
    ]
    total = sum(int(c.communicate(timeout=seconds + 60)[0].strip() or 0) for c in children)
    elapsed = time.perf_counter() - started
    return {
        "p50_ms": percentile(lat, 0.50),
        "p99_ms": percentile(lat, 0.99),
        "rps": total / min(elapsed, seconds + 0.5) if total else 0.0,
        "rps_connections": procs * conns,
        "rps_seconds": seconds,
    }


def run(quick: bool = False) -> dict[str, Any]:
    results: dict[str, Any] = {
        "component": "registry",
        "quick": quick,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "goals": GOALS,
    }
    results["import_ms"] = import_time_ms(3 if quick else 9)
    results["in_process"] = in_process(300 if quick else 3000)
    from devstack import RegistryStack

    with RegistryStack() as reg:
        results["http"] = over_http(reg.registry_url, 2.0 if quick else 8.0, 200 if quick else 2000)
    results["meets_goals"] = {
        "import_ms": results["import_ms"]["median"] <= GOALS["import_ms"],
        "inprocess_p50_ms": results["in_process"]["p50_ms"] <= GOALS["inprocess_p50_ms"],
        "http_rps": results["http"]["rps"] >= GOALS["http_rps"],
    }
    return results


def report(results: dict[str, Any]) -> str:
    imp, inp, web = results["import_ms"], results["in_process"], results["http"]
    return "\n".join(
        [
            "registry benchmark",
            f"  cold import of main     median {imp['median']:.1f} ms "
            f"(min {imp['min']:.1f}, max {imp['max']:.1f}; goal <= {GOALS['import_ms']:.0f} ms)",
            f"  cached GET in-process   p50 {inp['p50_ms']:.3f} ms  p99 {inp['p99_ms']:.3f} ms "
            f"(core alone p50 {inp['core_p50_ms']:.3f} ms; "
            f"goal p50 <= {GOALS['inprocess_p50_ms']} ms)",
            f"  cached GET over HTTP    p50 {web['p50_ms']:.3f} ms  p99 {web['p99_ms']:.3f} ms",
            f"  throughput over HTTP    {web['rps']:.0f} req/s with {web['rps_connections']} "
            f"keep-alive connections (goal >= {GOALS['http_rps']:.0f})",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--rps-worker"]:
        host, path, seconds, conns = argv[1:5]
        _rps_worker(host, path, float(seconds), int(conns))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer samples")
    args = parser.parse_args(argv)
    results = run(quick=args.quick)
    print(report(results))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(RESULTS)
    print(f"  written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # devstack, when run as a script
    sys.exit(main())
