"""The benchmarks' smoke run (`python -m bench --quick`) on the session's platform.

Asserts only that the benchmark runs and that tally announces each of its runs exactly once:
timings are figures for docs/benchmarks.md, never test assertions (the machine is shared).
"""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_quick_benchmark_runs_and_tally_announces_each_run_once(stack, tmp_path):
    from bench.__main__ import quick

    results = quick(stack, results_dir=tmp_path)

    assert json.loads((tmp_path / "quick.json").read_text())["quick"] is True
    records = results["e2e"]["records"]
    designs = {r["design"] for r in records}
    assert designs == {"tally", "scratch-file"}, designs
    tally = [r for r in records if r["design"] == "tally"]
    assert tally, "no tally run was measured"
    assert [r["announcements"] for r in tally] == [1] * len(tally)
    assert results["cpu"]["sizes"] and results["cold_start"]["functions"]
    sharded = results["sharded"]  # issue 14: a pattern of N outputs, coalesced listings
    assert sharded and [r["announcements"] for r in sharded] == [1] * len(sharded)
