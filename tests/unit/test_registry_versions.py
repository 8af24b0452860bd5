"""Version ordering: semver precedence, non-semver natural sort below it, a total order."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tally_registry.versions import highest, is_semver, sort_versions, version_key

NAMES = st.text(alphabet="abcXYZ0123456789._-", min_size=1, max_size=12)


def test_semver_precedence_follows_semver_org() -> None:
    # The example chain of semver.org 2.0, item 11, plus releases around it.
    chain = [
        "0.9.9",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.2.0",
        "1.10.0",
        "2.0.0",
    ]
    shuffled = chain[:]
    random.Random(7).shuffle(shuffled)
    assert sort_versions(shuffled) == chain


def test_non_semver_sorts_naturally_and_below_every_semver() -> None:
    names = ["v10", "v2", "latest", "0.0.1", "2024-01-05", "2024-01-10", "v1.2", "build9"]
    assert sort_versions(names) == [
        "2024-01-05",
        "2024-01-10",
        "build9",
        "latest",
        "v1.2",
        "v2",
        "v10",
        "0.0.1",
    ]


@pytest.mark.parametrize(
    ("name", "semver"),
    [("1.0.0", True), ("1.0.0-rc.1", True), ("01.0.0", False), ("1.0", False), ("v1.0.0", False)],
)
def test_is_semver(name: str, semver: bool) -> None:
    assert is_semver(name) is semver


def test_highest() -> None:
    assert highest(["1.0.0", "1.1.0", "1.1.0-rc.1", "zzz"]) == "1.1.0"
    assert highest(["b2", "b10"]) == "b10"
    assert highest([]) is None


@given(st.lists(NAMES, min_size=2, max_size=8, unique=True))
def test_order_is_total_and_strict(names: list[str]) -> None:
    keys = [version_key(n) for n in names]
    assert len(set(keys)) == len(names)  # distinct names never tie
    assert sort_versions(names) == sort_versions(list(reversed(names)))


@given(st.lists(NAMES, min_size=3, max_size=3, unique=True))
def test_order_is_transitive(names: list[str]) -> None:
    a, b, c = sort_versions(names)
    assert version_key(a) < version_key(b) < version_key(c)
    assert version_key(a) < version_key(c)
