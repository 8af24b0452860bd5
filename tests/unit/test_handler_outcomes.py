"""The outcome vocabulary: one table, matching docs/design.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tally_handler.outcomes import HANDLING, Outcome

DESIGN = Path(__file__).resolve().parents[2] / "docs" / "design.md"


def documented_outcomes() -> dict[str, bool]:
    """outcome -> acknowledged, from the design's "Outcomes" table."""
    section = DESIGN.read_text(encoding="utf-8").split("## Outcomes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z-]+)` \| ([^|]+) \|", section, re.MULTILINE)
    return {name: "yes" in acknowledged for name, acknowledged in rows}


def test_every_outcome_has_a_handling() -> None:
    assert set(HANDLING) == set(Outcome)


def test_vocabulary_matches_the_design() -> None:
    documented = documented_outcomes()
    assert documented, "the design's Outcomes table was not found"
    assert {str(o) for o in Outcome} == set(documented)
    for outcome in Outcome:
        assert outcome.acknowledged is documented[outcome], outcome


@pytest.mark.parametrize(
    ("outcome", "status", "severity"),
    [
        (Outcome.RECORDED, 200, "INFO"),
        (Outcome.COMPLETED, 200, "NOTICE"),
        (Outcome.FAILED, 200, "NOTICE"),
        (Outcome.RECONCILED, 200, "NOTICE"),
        (Outcome.AFTER_COMPLETION, 200, "INFO"),
        (Outcome.UNEXPECTED, 200, "INFO"),
        (Outcome.IGNORED, 200, "INFO"),
        (Outcome.UNKNOWN_WORKFLOW, 200, "INFO"),
        (Outcome.REJECTED, 200, "WARNING"),
        (Outcome.DEFERRED, 503, "WARNING"),
        (Outcome.STALLED, 200, "WARNING"),
    ],
)
def test_handling(outcome: Outcome, status: int, severity: str) -> None:
    assert (outcome.http_status, outcome.severity) == (status, severity)
    assert outcome.acknowledged is (status == 200)


def test_outcomes_are_their_strings() -> None:
    assert Outcome("after-completion") is Outcome.AFTER_COMPLETION
    assert f"{Outcome.UNKNOWN_WORKFLOW}" == "unknown-workflow"
