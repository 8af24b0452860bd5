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
