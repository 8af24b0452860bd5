"""The vocabulary of docs/design.md is the one source of names: every column of the BigQuery schema
files and views, every key of the manifest, the announcement record and its claim, and every
completion message attribute is listed there; every name listed is in use; a renamed name is gone
from where it was renamed."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tally_handler.completeness import Entry, Output
from tally_handler.layout import DEFAULT_TEMPLATE, Layout, RunOutput
from tally_handler.manifest import (
    Claim,
    ClaimStatus,
    Manifest,
    Prior,
    Record,
    Superseded,
    build_manifest,
    split_manifest,
)
from tally_handler.rows import SCHEMAS_DIR
from tally_handler.spec import ExpectedPath, ExpectedPattern

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT / "docs" / "design.md"
VIEWS = ROOT / "bigquery" / "views"
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")


# -- the vocabulary ------------------------------------------------------------------------------
def tables(section: str) -> Iterator[list[dict[str, str]]]:
    """The Markdown tables of one ``## section`` of docs/design.md, as rows keyed by header."""
    text = DESIGN.read_text(encoding="utf-8")
    found = re.search(rf"^## {section}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert found, f"docs/design.md has no section '## {section}'"
    block: list[list[str]] = []
    for line in [*found.group(1).splitlines(), ""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if len(block) > 2:
            header, rows = block[0], block[2:]  # block[1] is the |---| line
            yield [dict(zip(header, row, strict=True)) for row in rows]
        block = []


def backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def vocabulary() -> dict[str, str]:
    """Each name of the ``names`` column -> its row's meaning."""
    names: dict[str, str] = {}
    for table in tables("Vocabulary"):
        for row in table:
            for name in backticked(row.get("names", "")):
                assert name not in names, f"{name!r} is listed twice in the vocabulary"
                names[name] = row["meaning"]
    return names


def renamed() -> list[tuple[str, str, list[str]]]:
    """(old name, new name, places) of the vocabulary's table of renamed names."""
    rows = [row for table in tables("Vocabulary") for row in table if "old name" in row]
    return [
        (backticked(r["old name"])[0], backticked(r["new name"])[0], backticked(r["where"]))
        for r in rows
    ]


# -- the names in use ----------------------------------------------------------------------------
def schema_columns() -> dict[str, list[str]]:
    return {
        path.stem: [field["name"] for field in json.loads(path.read_text(encoding="utf-8"))]
        for path in sorted(SCHEMAS_DIR.glob("*.json"))
    }


def _top_level(sql: str) -> Iterator[tuple[int, str]]:
    """(index, character) of ``sql`` outside parentheses and quoted text."""
    depth, quote = 0, ""
    for index, char in enumerate(sql):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif depth == 0:
            yield index, char


def _final_select(query: str) -> tuple[list[str], str]:
    """The items of a query's last top-level SELECT, and the text from its FROM on."""
    top = {index for index, _ in _top_level(query)}
    masked = "".join(char if index in top else " " for index, char in enumerate(query))
    start = max(m.end() for m in re.finditer(r"\bSELECT\b", masked))
    end = re.compile(r"\bFROM\b").search(masked, start)
    assert end, f"no FROM after the final SELECT in {query[:80]!r}"
    commas = [i for i in sorted(top) if start <= i < end.start() and query[i] == ","]
    bounds = [start, *(i + 1 for i in commas)], [*commas, end.start()]
    items = [query[begin:stop].strip() for begin, stop in zip(*bounds, strict=True)]
    return items, query[end.start() :]


def _ctes(sql: str) -> dict[str, str]:
    """The WITH clause's named queries (their bodies without the parentheses)."""
    ctes: dict[str, str] = {}
    top = {index for index, _ in _top_level(sql)}
    for found in re.finditer(r"\b(\w+)\s+AS\s*\(", sql):
        open_at = found.end() - 1
        if found.start() not in top:
            continue  # CAST(x AS STRING) and the like
        depth = 0
        for index in range(open_at, len(sql)):
            depth += {"(": 1, ")": -1}.get(sql[index], 0)
            if depth == 0:
                ctes[found.group(1)] = sql[open_at + 1 : index]
                break
    return ctes


def view_columns(sql: str) -> list[str]:
    """The output columns of a view: the final SELECT's aliases (``SELECT * FROM cte`` resolved)."""
    sql = re.sub(r"--[^\n]*", "", sql)
    items, rest = _final_select(sql)
    if items == ["*"]:
        source = re.match(r"FROM\s+(\w+)", rest)
        ctes = _ctes(sql)
        assert source and source.group(1) in ctes, f"cannot resolve SELECT * {rest[:80]!r}"
        return view_columns(ctes[source.group(1)])
    columns = []
    for item in items:
        alias = re.search(r"\bAS\s+(\w+)$", item) or re.search(r"(?:^|\.)(\w+)$", item)
        assert alias, f"a view column without a name: {item!r}"
        columns.append(alias.group(1))
    return columns


def views() -> dict[str, list[str]]:
    return {
        path.stem: view_columns(path.read_text(encoding="utf-8"))
        for path in sorted(VIEWS.glob("*.sql"))
    }


def keys(document: Any) -> set[str]:
    """Every key of a JSON document, at any depth."""
    if isinstance(document, dict):
        return set(document) | {k for value in document.values() for k in keys(value)}
    if isinstance(document, list):
        return {k for item in document for k in keys(item)}
    return set()


RUN = Layout.parse(DEFAULT_TEMPLATE).run("outs", RunOutput("wf", "1.0", "r1", "x"))
CLAIM = Claim.at("m-1", "push:m-1", "2026-11-25T12:00:00Z")


def a_manifest() -> Manifest:
    """A manifest with every optional part filled: both kinds of expected output, an unexpected
    object, a superseded revision."""
    entry = Entry(
        "a.txt", 7, 5, "c", "m", "text/plain", "2026-11-25T11:00:00Z", "2026-11-25T11:00:00Z"
    )
    shard = Entry("s/1.csv", 8, 5, "c", "m", "text/csv", "2026-11-25T11:00:00Z", None)
    return build_manifest(
        RUN,
        revision=2,
        state="COMPLETE",
        outputs=[
            Output(entry, ExpectedPath("a.txt")),
            Output(shard, ExpectedPattern.compile("s/*.csv", 1)),
        ],
        unexpected=[Entry("stray", 1, 1, None, None, None, None, None)],
        failure_reason=None,
        claim=CLAIM,
        handler_version="0.1.0",
        supersedes=Superseded(1, RUN.idempotency_key),
    )


def places() -> dict[str, set[str]]:
    """Where names live, as the vocabulary's renamed table names the places."""
    manifest = a_manifest()
    _, lists = split_manifest(manifest, limit=0)
    assert lists is not None
    record = Record(
        2,
        ClaimStatus.PUBLISHED,
        CLAIM,
        manifest.to_bytes(),
        published_time="2026-11-25T12:00:01Z",
        history=(Prior(1, RUN.idempotency_key, "2026-11-25T11:00:01Z"),),
    )
    record_doc = json.loads(record.to_bytes())
    found = {
        "manifest": keys(manifest.to_json()) | keys(json.loads(lists)),
        "record": keys(record_doc),
        "claim": set(record_doc["claim"]),
        "history": keys(record_doc["history"]),
        "message": set(manifest.attributes()),
    }
    found |= {table: set(columns) for table, columns in schema_columns().items()}
    found |= {view: set(columns) for view, columns in views().items()}
    return found


# -- the checks ------------------------------------------------------------------------------------
def test_the_view_parser_reads_every_view() -> None:
    """Guards the parser itself: known columns come out, and nothing but names."""
    found = views()
    assert {"deliveries", "duplicate_notifications", "run_status", "completion_latency"} <= set(
        found
    )
    assert {"state", "first_event_time", "first_output_time", "completion_seconds"} <= set(
        found["run_status"]
    )
    assert found["completion_latency"][:3] == ["day", "workflow", "runs"]
    for view, columns in found.items():
        assert all(IDENTIFIER.match(c) for c in columns), (view, columns)
        assert len(columns) == len(set(columns)), f"{view} names a column twice"


@pytest.mark.parametrize("place", sorted(places()))
def test_every_name_in_use_is_in_the_vocabulary(place: str) -> None:
    missing = sorted(places()[place] - set(vocabulary()))
    assert not missing, (
        f"{place} uses names docs/design.md's Vocabulary does not list: {missing}; add each to the"
        " row of its concept (or use the name the vocabulary already has for it)"
    )


def test_every_name_in_the_vocabulary_is_in_use() -> None:
    in_use = set().union(*places().values())
    stale = sorted(set(vocabulary()) - in_use)
    assert not stale, f"docs/design.md's Vocabulary lists names nothing uses: {stale}"


def test_renamed_names_are_gone_from_where_they_were_renamed() -> None:
    found = places()
    rows = renamed()
    assert rows, "the Vocabulary has a table of renamed names"
    for old, new, where in rows:
        assert where, f"the rename {old} -> {new} says where (backticked places)"
        for place in where:
            assert place in found, f"unknown place {place!r} (one of {sorted(found)})"
            assert old not in found[place], f"{place} still uses {old!r} (now {new!r})"
            assert new in found[place], f"{place} does not use {new!r}"


def test_every_timestamp_is_named_for_its_instant() -> None:
    """One timestamp name per instant, always ``_time`` (Storage's own object times excepted)."""
    schema_types = {
        field["name"]: field["type"]
        for path in SCHEMAS_DIR.glob("*.json")
        for field in json.loads(path.read_text(encoding="utf-8"))
    }
    timestamps = {name for name, kind in schema_types.items() if kind == "TIMESTAMP"}
    timestamps |= {name for name in set().union(*places().values()) if name.endswith("_at")}
    wrong = sorted(name for name in timestamps if not name.endswith("_time"))
    assert not wrong, f"timestamps not named <instant>_time: {wrong}"
