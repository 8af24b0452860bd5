"""bench/sharded.py's separately measured configurations: kept by label, shown once."""

from __future__ import annotations

import json
from pathlib import Path

from bench.sharded import merge_extra, with_extra


def record(label: str, entries: int) -> dict[str, object]:
    return {"label": label, "list_entries": entries}


def test_a_new_measurement_replaces_the_one_of_the_same_label(tmp_path: Path) -> None:
    path = tmp_path / "extra.json"
    assert merge_extra(path, [record("a", 1)]) == [record("a", 1)]  # no file yet
    path.write_text(json.dumps([record("a", 1), record("b", 2)]))
    assert merge_extra(path, [record("a", 3)]) == [record("b", 2), record("a", 3)]


def test_the_page_shows_make_bench_first_and_only_what_it_did_not_run() -> None:
    bench = [record("a", 1)]
    extra = [record("a", 9), record("c", 3)]
    assert with_extra(bench, extra) == [record("a", 1), record("c", 3)]
    assert with_extra(None, extra) == extra


def timed(
    label: str, instances: int, latency: float, received: float, ms: float, behind: float
) -> dict[str, object]:
    return {
        "label": label,
        "n": 10_000,
        "order": "sorted",
        "pace": None,
        "instances": instances,
        "latency_s": latency,
        "completing": {"received_s": received, "ms": ms},
        "last_delivered_s": behind,
    }


def test_each_completion_miss_is_explained_by_what_its_run_measured() -> None:
    """A completing delivery that came after the last write from an instance behind the writers
    is the backlog; one that came in time but took long is set beside the same configuration on
    1 instance; runs that met the goal are named in no explanation."""
    from bench.sharded import _completion_paragraph

    assert _completion_paragraph([]) == []
    [_, text] = _completion_paragraph(
        [
            timed("met", 1, 0.9, 0.1, 700, 0.1),
            timed("late", 4, 5.3, 4.0, 1_600, 26.0),
            timed("long", 4, 2.8, -0.02, 3_300, 0.2),
        ]
    )
    assert "in 1 of 3 configurations, that delivery came +4.00 s" not in text  # unsigned span
    assert "in 1 of 3 configurations, that delivery came 4.00 s after the last write" in text
    assert "first delivered 26.00 s after its write" in text
    assert "long (2.80 s): its completing delivery arrived -0.02 s" in text
    assert "on 1 instance the same configuration's completing request took 0.70 s" in text
    assert "met (" not in text and "late (" not in text


def test_the_table_shows_each_runs_listings_by_reason() -> None:
    """From events.listing_reason; records from before it (or coalescing off) show "-"."""
    from bench.sharded import _listings, _reasons

    measured = {"listings": {"first": 4, "urgent": 2, "due": 3, "quiet": 1}}
    assert _listings(measured) == "10 (4 / 2 / 3 / 1)"  # first / urgent / due / quiet
    assert _listings({"listings": {"urgent": 1}}) == "1 (0 / 1 / 0 / 0)"
    assert _listings({}) == "-" and _listings({"listings": {}}) == "-"
    assert _reasons({"first": 4, "quiet": 3}) == "4 first, 0 urgent, 0 due, 3 quiet"
