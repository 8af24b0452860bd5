"""Spec validation (schema + semantic checks), normalization, canonical JSON and globs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tally_registry import errors, spec

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = ROOT / "functions" / "registry"


def make(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "workflow": "wf",
        "version": "1.0.0",
        "description": "test",
        "expected_outputs": [
            {"path": "calls.vcf.gz"},
            {"pattern": "shards/part-*.parquet", "count": 16},
        ],
    }
    doc.update(over)
    return doc


def outputs(*entries: dict[str, Any]) -> dict[str, Any]:
    return make(expected_outputs=list(entries))


def problems_at(doc: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in spec.validate(doc):
        out.setdefault(p["pointer"], []).append(p["message"])
    return out


def test_sample_specs_in_repo_are_valid() -> None:
    files = sorted((ROOT / "workflows").glob("*/*.json"))
    assert len({f.parent.name for f in files}) >= 2
    assert any(
        e.get("pattern") for f in files for e in json.loads(f.read_text())["expected_outputs"]
    )
    for f in files:
        doc = json.loads(f.read_text())
        assert spec.validate(doc) == [], f
        assert (doc["workflow"], doc["version"]) == (f.parent.name, f.stem)


def test_valid_spec_has_no_problem() -> None:
    assert spec.validate(make(deadline_minutes=30)) == []


@pytest.mark.parametrize(
    ("entry", "pointer", "needle"),
    [
        ({"path": "/abs/x"}, "/expected_outputs/0/path", "absolute"),
        ({"path": "a/../../x"}, "/expected_outputs/0/path", "'..'"),
        ({"path": ".."}, "/expected_outputs/0/path", "'..'"),
        ({"path": "a/./b"}, "/expected_outputs/0/path", "'.' segment"),
        ({"path": "a//b"}, "/expected_outputs/0/path", "empty segment"),
        ({"path": "a/"}, "/expected_outputs/0/path", "empty segment"),
        ({"path": ""}, "/expected_outputs/0/path", "cannot be empty"),
        ({"path": "a\nb"}, "/expected_outputs/0/path", "control characters"),
        ({"path": "output.json"}, "/expected_outputs/0/path", "manifest"),
        ({"path": "_FAILED"}, "/expected_outputs/0/path", "failure marker"),
        ({"path": "_tally/x"}, "/expected_outputs/0/path", "_tally/"),
        ({"pattern": "_tally/*", "count": 1}, "/expected_outputs/0/pattern", "_tally/"),
        ({"pattern": "/s/*", "count": 1}, "/expected_outputs/0/pattern", "absolute"),
        ({"pattern": "../*", "count": 1}, "/expected_outputs/0/pattern", "'..'"),
        ({"pattern": "s/[a-", "count": 1}, "/expected_outputs/0/pattern", "unclosed"),
        ({"pattern": "s/[]", "count": 1}, "/expected_outputs/0/pattern", "unclosed"),
        ({"pattern": "s/[z-a]", "count": 1}, "/expected_outputs/0/pattern", "reversed range"),
        ({"pattern": "**", "count": 1}, "/expected_outputs/0/pattern", "'output.json'"),
        ({"pattern": "s/[a/b]", "count": 1}, "/expected_outputs/0/pattern", "cannot contain '/'"),
        ({"pattern": "plain.txt", "count": 1}, "/expected_outputs/0/pattern", "no wildcard"),
        ({"pattern": "*.json", "count": 1}, "/expected_outputs/0/pattern", "'output.json'"),
        ({"pattern": "_FAI*", "count": 1}, "/expected_outputs/0/pattern", "'_FAILED'"),
        ({"pattern": "s/*"}, "/expected_outputs/0", "needs 'count'"),
        ({"pattern": "s/*", "count": 0}, "/expected_outputs/0/count", "minimum"),
        ({"pattern": "s/*", "count": 2.5}, "/expected_outputs/0/count", "integer"),
        ({"pattern": "s/*", "count": True}, "/expected_outputs/0/count", "integer"),
        ({"path": "a", "count": 2}, "/expected_outputs/0", "'count' belongs to a 'pattern'"),
        ({"path": "a", "pattern": "b*", "count": 1}, "/expected_outputs/0", "exactly one"),
        ({}, "/expected_outputs/0", "exactly one"),
        ({"path": "a", "required": "yes"}, "/expected_outputs/0/required", "boolean"),
        ({"path": "a", "colour": "red"}, "/expected_outputs/0", "'colour' was unexpected"),
        ("calls.vcf", "/expected_outputs/0", "is an object"),
    ],
)
def test_each_refusal_names_its_pointer(entry: Any, pointer: str, needle: str) -> None:
    found = problems_at(outputs(entry))
    assert pointer in found, found
    assert any(needle in m for m in found[pointer]), found[pointer]


@pytest.mark.parametrize(
    ("over", "pointer", "needle"),
    [
        ({"workflow": "a/b"}, "/workflow", "only letters"),
        ({"workflow": "wf é"}, "/workflow", "only letters"),
        ({"workflow": "ｗｆ"}, "/workflow", "only letters"),  # fullwidth letters
        ({"workflow": "wf\u200b"}, "/workflow", "only letters"),  # zero-width space
        ({"workflow": ".."}, "/workflow", "not names"),
        ({"version": ""}, "/version", "cannot be empty"),
        ({"version": "1" * 101}, "/version", "too long"),
        ({"version": 1}, "/version", "string"),
        ({"expected_outputs": []}, "/expected_outputs", "at least one"),
        ({"expected_outputs": {}}, "/expected_outputs", "array"),
        ({"deadline_minutes": 0}, "/deadline_minutes", "minimum"),
        ({"deadline_minutes": "10"}, "/deadline_minutes", "integer"),
        ({"extra": 1}, "", "'extra' was unexpected"),
    ],
)
def test_top_level_refusals(over: dict[str, Any], pointer: str, needle: str) -> None:
    found = problems_at(make(**over))
    assert pointer in found, found
    assert any(needle in m for m in found[pointer]), found[pointer]


def test_missing_fields_and_non_objects() -> None:
    assert problems_at({"workflow": "wf"}) == {
        "": ["'version' is required", "'expected_outputs' is required"]
    }
    assert problems_at([]) == {"": ["[] is not of type 'object'"]}


def test_duplicates_and_overlaps_are_refused() -> None:
    found = problems_at(
        outputs(
            {"path": "a.txt"},
            {"path": "a.txt", "required": False},
            {"pattern": "s/*.p", "count": 2},
            {"pattern": "s/*.p", "count": 3},
            {"path": "s/1.p"},
        )
    )
    assert any(
        "duplicate path 'a.txt' (also entry 0)" in m for m in found["/expected_outputs/1/path"]
    )
    assert any("duplicate pattern" in m for m in found["/expected_outputs/3/pattern"])
    assert any("also matches pattern" in m for m in found["/expected_outputs/4/path"])


def test_every_problem_is_listed_in_pointer_order() -> None:
    entries = [{"path": f"f{i}"} for i in range(12)]
    entries[2] = {"path": "/abs"}
    entries[11] = {"path": "../up"}
    doc = make(workflow="bad name", expected_outputs=entries, deadline_minutes=-1)
    pointers = [p["pointer"] for p in spec.validate(doc)]
    assert pointers == [
        "/deadline_minutes",
        "/expected_outputs/2/path",
        "/expected_outputs/11/path",
        "/workflow",
    ]


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        (
            "shards/part-*.parquet",
            ["shards/part-0.parquet", "shards/part-.parquet"],
            ["shards/x/part-1.parquet", "shards/part-1.parquetx", "xshards/part-1.parquet"],
        ),
        ("a/?.txt", ["a/1.txt"], ["a/12.txt", "a//.txt"]),
        ("*/x", ["a/x", "b/x"], ["a/b/x", "x"]),
        ("[ab]-[0-9].csv", ["a-1.csv", "b-9.csv"], ["c-1.csv", "a-x.csv"]),
        ("[!ab]*", ["c", "cd"], ["a", "b1", "/c"]),
        ("[]]x*", ["]x1"], ["x1"]),
        ("a.b+(c)*", ["a.b+(c)1"], ["aXb+(c)1"]),
        ("dir/[[]*", ["dir/[1"], ["dir/1"]),
        ("[^ab]?", ["cd"], ["ad", "/d"]),
        ("a/**/b", ["a/b", "a/x/b", "a/x/y/b"], ["ab", "a/xb", "x/a/b"]),
        ("**/*.bam", ["x.bam", "a/x.bam", "a/b/x.bam"], ["x.bami"]),
        ("logs/**", ["logs/a", "logs/a/b", "logs/"], ["logs", "xlogs/a"]),
        ("a**b", ["ab", "a/x/b"], ["a/x/c"]),
    ],
)
def test_glob_dialect(pattern: str, matches: list[str], misses: list[str]) -> None:
    rx = spec.compile_glob(pattern)
    for name in matches:
        assert rx.match(name), name
    for name in misses:
        assert not rx.match(name), name


GLOB_CHARS = "ab/*?[]!^-.x"


@settings(max_examples=400, deadline=None)
@given(
    st.text(alphabet=GLOB_CHARS, min_size=1, max_size=8),
    st.lists(st.text(alphabet="ab/.x-[]^!", max_size=6), min_size=1, max_size=6),
)
def test_glob_dialect_agrees_with_the_event_handler(pattern: str, paths: list[str]) -> None:
    """Whatever the registry accepts, the handler matches the same way (one shared contract)."""
    handler_spec = pytest.importorskip("tally_handler.spec")
    try:
        ours = spec.compile_glob(pattern)
    except errors.GlobError:
        return
    theirs = handler_spec.compile_glob(pattern)
    for path in paths:
        assert bool(ours.match(path)) == bool(theirs.fullmatch(path)), (pattern, path)


def test_normalize_fills_defaults_and_canonical_json_is_stable() -> None:
    doc = make()
    doc["expected_outputs"][1]["count"] = 16.0
    doc["$schema"] = "../../functions/registry/spec.schema.json"
    norm = spec.normalize(doc)
    assert "$schema" not in norm
    assert all(e["required"] is True for e in norm["expected_outputs"])
    assert norm["expected_outputs"][1]["count"] == 16
    assert isinstance(norm["expected_outputs"][1]["count"], int)
    reordered = json.loads(json.dumps(norm))
    reordered = dict(reversed(list(reordered.items())))
    assert spec.canonical_json(reordered) == spec.canonical_json(norm)
    explicit = copy.deepcopy(make())
    for e in explicit["expected_outputs"]:
        e["required"] = True
    assert spec.canonical_json(spec.normalize(explicit)) == spec.canonical_json(norm)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
        (b'{"a": NaN}', "NaN is not valid JSON"),
        (b'{"a": Infinity}', "Infinity is not valid JSON"),
        (b'{"a": 1', "invalid JSON at line 1"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"description": "\\ud800"}', "unpaired surrogate"),
    ],
)
def test_loads_strict_refuses(body: bytes, needle: str) -> None:
    with pytest.raises(errors.JsonError, match=needle):
        spec.loads_strict(body)


def test_openapi_embeds_the_spec_schema() -> None:
    """openapi.json's Spec components are spec.schema.json with $refs rewritten: no drift."""
    schema = json.loads((REGISTRY / "spec.schema.json").read_text())
    components = json.loads((REGISTRY / "openapi.json").read_text())["components"]["schemas"]
    refs = {
        "#/$defs/name": "#/components/schemas/Name",
        "#/$defs/relative_name": "#/components/schemas/RelativeName",
        "#/$defs/expected_output": "#/components/schemas/ExpectedOutput",
    }

    def rewrite(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: refs.get(v, v) if k == "$ref" else rewrite(v) for k, v in o.items()}
        if isinstance(o, list):
            return [rewrite(x) for x in o]
        return o

    defs = rewrite(schema.pop("$defs"))
    top = rewrite({k: v for k, v in schema.items() if k not in ("$schema", "$id")})
    assert components["Spec"] == top
    assert components["ExpectedOutput"] == defs["expected_output"]
    assert components["RelativeName"] == defs["relative_name"]
    name = dict(components["Name"])
    name.pop("description")
    assert name == defs["name"]


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(spec.load_schema())


@pytest.mark.parametrize(
    ("pattern", "least"),
    [
        ("**/a", 1),
        ("a/**/b", 3),
        ("s/*.parquet", 10),
        ("?é[abc]*", 4),
        ("[!x]**", 1),
        ("[]a]?", 2),
    ],
)
def test_shortest_match_of_a_glob_in_bytes(pattern: str, least: int) -> None:
    assert spec.min_match_bytes(pattern) == least


def test_configuration_checks_are_left_out_for_stored_specs() -> None:
    doc = outputs({"path": "output.json"}, {"path": "x" * 1024})
    assert spec.validate(doc, None) == []
    assert len(spec.validate(doc)) == 2
