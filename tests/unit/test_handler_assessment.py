"""completeness.assess: one listing against the spec, the only definition of "missing"."""

from __future__ import annotations

import pytest
from tally_handler.completeness import Complete, Entry, Failed, Incomplete, assess
from tally_handler.spec import ExpectedPath, ExpectedPattern, Spec

MANIFEST = "output.json"
MARKER = "_FAILED"

SPEC = Spec.from_json(
    {
        "workflow": "wf",
        "version": "1",
        "expected_outputs": [
            {"path": "a.txt"},
            {"path": "b/c.txt"},
            {"path": "log.txt", "required": False},
            {"pattern": "parts/*.csv", "count": 2},
            {"pattern": "extra/*", "count": 1, "required": False},
        ],
    }
)


def listing(*paths: str) -> list[Entry]:
    return [Entry(path, generation) for generation, path in enumerate(sorted(paths), start=1)]


def test_each_object_is_an_output_unexpected_or_tallys_own():
    found = assess(
        SPEC,
        listing("a.txt", "parts/1.csv", "stray.bin", MANIFEST, MARKER, "_tally/announcement.json"),
        MANIFEST,
        MARKER,
    )
    assert [(o.entry.path, o.expected.label) for o in found.outputs] == [
        ("a.txt", {"path": "a.txt"}),
        ("parts/1.csv", {"pattern": "parts/*.csv"}),
    ]
    assert [e.path for e in found.unexpected] == ["stray.bin"]
    assert found.manifest is not None and found.manifest.path == MANIFEST
    assert found.marker is not None and found.marker.path == MARKER
    assert found.missing_paths == ("b/c.txt",)


def test_every_pattern_is_counted_and_only_required_ones_are_unmet():
    found = assess(SPEC, listing("a.txt", "b/c.txt", "parts/1.csv"), MANIFEST, MARKER)
    assert [(p.expected.pattern, p.found, p.satisfied) for p in found.patterns] == [
        ("parts/*.csv", 1, False),
        ("extra/*", 0, False),
    ]
    assert [p.expected.pattern for p in found.unmet_patterns] == ["parts/*.csv"]
    assert found.pattern_outputs == 1
    assert not found.complete
    assert found.missing() == ["parts/*.csv (1 of 2)"]


def test_optional_outputs_never_count_as_missing():
    found = assess(
        SPEC, listing("a.txt", "b/c.txt", "parts/1.csv", "parts/2.csv"), MANIFEST, MARKER
    )
    assert found.complete and found.missing() == []
    assert isinstance(found.verdict(), Complete)


def test_too_many_pattern_matches_are_missing_too():
    found = assess(
        SPEC, listing("a.txt", "b/c.txt", *(f"parts/{i}.csv" for i in range(3))), MANIFEST, MARKER
    )
    assert not found.complete
    assert found.missing() == ["parts/*.csv (3 of 2)"]
    verdict = found.verdict()
    assert isinstance(verdict, Incomplete) and verdict.missing is None
    assert "delete the extra objects" in verdict.reason


def test_an_object_satisfies_one_expected_output_the_exact_path_first():
    spec = Spec(
        "wf",
        "1",
        (ExpectedPath("parts/0.csv"),),
        (ExpectedPattern.compile("parts/*.csv", 1),),
    )
    found = assess(spec, listing("parts/0.csv"), MANIFEST, MARKER)
    assert found.missing_paths == ()
    assert found.missing() == ["parts/*.csv (0 of 1)"]  # the exact path took the only object


def test_missing_lists_paths_then_patterns_and_stops_at_the_limit():
    spec = Spec.from_json(
        {
            "workflow": "wf",
            "version": "1",
            "expected_outputs": [
                *({"path": f"{i:02d}.txt"} for i in range(5)),
                {"pattern": "s/*", "count": 3},
            ],
        }
    )
    found = assess(spec, listing("01.txt"), MANIFEST, MARKER)
    assert found.missing() == ["00.txt", "02.txt", "03.txt", "04.txt", "s/* (0 of 3)"]
    assert found.missing(limit=2) == ["00.txt", "02.txt", "and 3 more"]
    assert found.missing(limit=5) == found.missing()


@pytest.mark.parametrize(
    ("start", "first"), [("", "a.txt"), ("a.txt", "a.txt"), ("a.z", "b/c.txt"), ("z", "a.txt")]
)
def test_the_verdict_names_the_first_missing_path_from_the_start_wrapping_around(start, first):
    verdict = assess(SPEC, listing("parts/1.csv"), MANIFEST, MARKER).verdict(start)
    assert isinstance(verdict, Incomplete)
    assert verdict.missing == first
    assert verdict.reason == f"expected output {first!r} is not in the run folder yet"


def test_the_failure_marker_fails_the_run_and_keeps_what_is_missing():
    verdict = assess(SPEC, listing("parts/1.csv", MARKER), MANIFEST, MARKER).verdict("b")
    assert isinstance(verdict, Failed)
    assert verdict.missing == ("b/c.txt", "a.txt")  # all of them, from the start wrapping around
    complete = listing("a.txt", "b/c.txt", "parts/1.csv", "parts/2.csv", MARKER)
    assert isinstance(assess(SPEC, complete, MANIFEST, MARKER).verdict(), Failed)


def test_a_pattern_short_of_its_count_says_how_many_it_found():
    verdict = assess(SPEC, listing("a.txt", "b/c.txt"), MANIFEST, MARKER).verdict()
    assert isinstance(verdict, Incomplete)
    assert verdict.reason == ("pattern 'parts/*.csv' matched 0 objects, the spec expects exactly 2")
