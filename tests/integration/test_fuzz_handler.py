"""Fuzzing the event handler over HTTP (strategies in tests/chaos/fuzz.py): Pub/Sub push
envelopes, Storage notifications and CloudEvents in binary and structured mode; valid, subtly
invalid and random. No 5xx; valid deliveries acknowledged, subtly invalid ones `rejected`; every
delivery in the event log. Derandomized and bounded for `make test` (TALLY_FUZZ_EXAMPLES, default
250); `make chaos` runs the same property with a larger budget and a seed.
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.chaos.fuzz import (
    Example,
    _applicable,
    examples,
    invalid_examples,
    run_fuzz,
    valid_examples,
)

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("TALLY_FUZZ_EXAMPLES", "250"))


def test_fuzzed_deliveries_never_get_a_5xx_and_are_all_logged(stack, unique):
    report = run_fuzz(stack, EXAMPLES, seed=None, tag=unique, derandomize=True)
    print(
        f"\n{report.examples} requests in {report.seconds:.0f} s: {dict(report.by_kind)},"
        f" statuses {dict(report.statuses)}, outcomes {dict(report.outcomes)}"
    )
    assert report.examples >= EXAMPLES // 2
    assert not report.problems, report.problems
    assert not report.missing_ids, f"not in the event log: {report.missing_ids[:20]}"
    assert report.rejected_rows >= report.rejected > 0
    assert set(report.by_kind) == {"valid", "invalid", "random"}


# -- the strategies themselves (no server) --------------------------------------------------------
@settings(max_examples=60, derandomize=True, deadline=None)
@given(example=valid_examples("t"))
def test_valid_examples_parse_as_deliveries(example: Example):
    from tally_handler.delivery import parse_delivery

    body, headers = example.render("fuzz-t-1")
    delivery = parse_delivery(body, headers, 5)
    assert delivery.delivery_id == "fuzz-t-1"
    assert delivery.notification is not None


@settings(max_examples=150, derandomize=True, deadline=None)
@given(example=invalid_examples("t"))
def test_every_mutation_makes_a_delivery_malformed(example: Example):
    from tally_handler.delivery import MalformedDelivery, parse_delivery

    body, headers = example.render("fuzz-t-1")
    with pytest.raises(MalformedDelivery) as caught:
        parse_delivery(body, headers, 5)
    assert not caught.value.internal, caught.value.reason
    if example.id_kept:
        assert caught.value.delivery.delivery_id == "fuzz-t-1", example.mutation


@settings(max_examples=30, derandomize=True, deadline=None)
@given(data=st.data())
def test_each_form_has_many_mutations(data):
    example = data.draw(valid_examples("t"))
    assert len(_applicable(example)) >= 10
    assert json.dumps(example.body) if not isinstance(example.body, bytes) else True
    assert data.draw(examples("t")).kind in ("valid", "invalid", "random")
