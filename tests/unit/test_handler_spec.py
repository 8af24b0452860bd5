"""Specs from the registry and path globs."""

from __future__ import annotations

import re
from typing import Any

import pytest
from tally_handler.spec import ExpectedPath, ExpectedPattern, Spec, SpecError, translate_glob

DOCUMENT = {
    "workflow": "variant-calling",
    "version": "2.1.0",
    "deadline_minutes": 90,
    "expected_outputs": [
        {"path": "summary.json", "description": "run summary"},
        {"path": "logs/stderr.txt", "required": False},
        {"path": "vcf/chr1.vcf.gz"},
        {"pattern": "shards/part-*.parquet", "count": 16},
        {"pattern": "qc/**/*.html", "count": 2, "required": False},
    ],
}


def test_from_json_reads_every_field() -> None:
    spec = Spec.from_json(DOCUMENT)
    assert (spec.workflow, spec.version, spec.deadline_minutes) == ("variant-calling", "2.1.0", 90)
    assert spec.exact[0] == ExpectedPath("summary.json", True, "run summary")
    assert spec.required_paths == ("summary.json", "vcf/chr1.vcf.gz")
    assert [p.pattern for p in spec.patterns] == ["shards/part-*.parquet", "qc/**/*.html"]
    assert [p.pattern for p in spec.required_patterns] == ["shards/part-*.parquet"]


def test_registry_wrapper_is_accepted() -> None:
    assert Spec.from_json({"spec": DOCUMENT}) == Spec.from_json(DOCUMENT)


def test_required_paths_are_in_listing_order() -> None:
    # code point order = UTF-8 byte order, as Cloud Storage lists
    names = ["é.txt", "z.txt", "A.txt", "a b", "a/b", "a-b", "\U0001f600", "\uffff", "a"]
    spec = Spec.from_json(
        {"workflow": "w", "version": "1", "expected_outputs": [{"path": n} for n in names]}
    )
    assert list(spec.required_paths) == sorted(names, key=lambda n: n.encode("utf-8"))


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("summary.json", "summary.json"),
        ("logs/stderr.txt", "logs/stderr.txt"),
        ("shards/part-0001.parquet", "shards/part-*.parquet"),
        ("shards/part-.parquet", "shards/part-*.parquet"),
        ("shards/x/part-1.parquet", None),
        ("qc/a.html", "qc/**/*.html"),
        ("qc/a/b/c.html", "qc/**/*.html"),
        ("summary.json.bak", None),
        ("output.json", None),
    ],
)
def test_expects(path: str, expected: str | None) -> None:
    found = Spec.from_json(DOCUMENT).expects(path)
    label = None if found is None else next(iter(found.label.values()))
    assert label == expected


def test_exact_path_wins_over_a_pattern() -> None:
    spec = Spec.from_json(
        {
            "workflow": "w",
            "version": "1",
            "expected_outputs": [{"pattern": "*.txt", "count": 1}, {"path": "a.txt"}],
        }
    )
    assert isinstance(spec.expects("a.txt"), ExpectedPath)
    assert isinstance(spec.expects("b.txt"), ExpectedPattern)


GLOBS = [
    # (glob, matching paths, non-matching paths)
    ("*.txt", ["a.txt", ".txt", "a b.txt"], ["a/b.txt", "a.txt.gz"]),
    ("?.txt", ["a.txt", "é.txt"], ["ab.txt", "/.txt"]),
    ("a/*/c", ["a/b/c", "a//c"], ["a/b/b/c", "a/c"]),
    ("a/**/c", ["a/c", "a/b/c", "a/b/b/c"], ["a/bc", "b/c"]),
    ("**/c", ["c", "a/c", "a/b/c"], ["ac", "c/d"]),
    ("a/**", ["a/", "a/b", "a/b/c"], ["a", "b/a"]),
    ("a**b", ["ab", "a/x/b"], ["a/x/c"]),
    ("[abc].txt", ["a.txt", "c.txt"], ["d.txt", "ab.txt"]),
    ("[!abc].txt", ["d.txt", "é.txt"], ["a.txt", "/.txt"]),
    ("[^a].txt", ["b.txt"], ["a.txt"]),
    ("[a-c]x", ["bx"], ["dx"]),
    ("[]]x", ["]x"], ["x"]),
    ("[!]]x", ["ax"], ["]x"]),
    ("a[/]b", [], ["a/b"]),
    ("100%.csv", ["100%.csv"], ["100x.csv"]),
    ("a#b?.txt", ["a#b1.txt"], ["a#b.txt"]),
    ("(x)+.txt", ["(x)+.txt"], ["xx.txt"]),
    ("[\\]x", ["\\x"], ["x"]),
    ("line\nbreak*", ["line\nbreak-1"], []),
]


@pytest.mark.parametrize(("glob", "good", "bad"), GLOBS)
def test_glob_semantics(glob: str, good: list[str], bad: list[str]) -> None:
    pattern = ExpectedPattern.compile(glob, 1)
    for path in good:
        assert pattern.matches(path), f"{glob!r} should match {path!r}"
    for path in bad:
        assert not pattern.matches(path), f"{glob!r} should not match {path!r}"


@pytest.mark.parametrize("glob", ["[abc", "a[", "[z-a]"])
def test_invalid_globs_are_refused(glob: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(glob))):
        translate_glob(glob)


def _spec(*outputs: Any, **extra: Any) -> dict[str, Any]:
    return {"workflow": "w", "version": "1", "expected_outputs": list(outputs), **extra}


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([], "JSON object"),
        ({"version": "1", "expected_outputs": []}, "'workflow'"),
        ({"workflow": "w", "version": 1, "expected_outputs": []}, "'version'"),
        ({"workflow": "w", "version": "1"}, "expected_outputs must be a list"),
        (_spec("a.txt"), "must be an object"),
        (_spec({"path": "a", "pattern": "b", "count": 1}), "exactly one of"),
        (_spec({"description": "x"}), "exactly one of"),
        (_spec({"path": ""}), "non-empty relative path"),
        (_spec({"path": "/abs"}), "non-empty relative path"),
        (_spec({"path": 3}), "non-empty relative path"),
        (_spec({"path": "a", "required": "yes"}), "required must be true or false"),
        (_spec({"path": "a", "description": 3}), "description must be a string"),
        (_spec({"pattern": "*.csv"}), "positive integer count"),
        (_spec({"pattern": "*.csv", "count": 0}), "positive integer count"),
        (_spec({"pattern": "*.csv", "count": True}), "positive integer count"),
        (_spec({"pattern": "*.csv", "count": 2.0}), "positive integer count"),
        (_spec({"pattern": "[x", "count": 1}), "unclosed"),
        (_spec({"path": "a"}, {"path": "a"}), "more than once"),
        (_spec({"pattern": "*.x", "count": 1}, {"pattern": "*.x", "count": 2}), "more than once"),
        (_spec(deadline_minutes=0), "deadline_minutes"),
        (_spec(deadline_minutes="60"), "deadline_minutes"),
    ],
)
def test_invalid_specs_say_what_is_wrong(document: Any, problem: str) -> None:
    with pytest.raises(SpecError) as caught:
        Spec.from_json(document)
    assert problem in str(caught.value)


def test_empty_spec_is_valid() -> None:
    spec = Spec.from_json(_spec())
    assert spec.required_paths == ()
    assert spec.expects("anything") is None
