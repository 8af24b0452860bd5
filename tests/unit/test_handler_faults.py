"""Test-only fault injection: parsing and seeded, thread-safe draws."""

from __future__ import annotations

import threading

import pytest
from tally_handler.faults import Faults, InjectedFault, Step

SETTING = (
    "after_listing=0.05,after_claim=0.05,after_publish=0.05,after_runs_row=0.05,after_mark=0.05,"
    "before_logging=0.05;seed=7"
)


def test_off_when_unset() -> None:
    for text in (None, "", "   "):
        faults = Faults.parse(text)
        assert not faults.probabilities
        for step in Step:
            faults.maybe_fail(step)  # never raises


def test_parse_the_documented_example() -> None:
    faults = Faults.parse(SETTING)
    assert faults.seed == 7
    assert dict(faults.probabilities) == {step: 0.05 for step in Step}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("after_lunch=0.1", "unknown fault step 'after_lunch'; the steps are after_listing"),
        ("after_claim", "step=probability"),
        ("after_claim=lots", "not a number"),
        ("after_claim=1.5", "between 0 and 1"),
        ("after_claim=-0.1", "between 0 and 1"),
        ("after_claim=0.1,after_claim=0.2", "given twice"),
        ("after_claim=0.1;seed=x", "not an integer"),
        ("after_claim=0.1;speed=3", "only one is seed"),
    ],
)
def test_parse_errors_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match="fault") as caught:
        Faults.parse(text)
    assert problem in str(caught.value)


def test_certain_and_impossible_faults() -> None:
    faults = Faults.parse("after_claim=1,after_mark=0")
    with pytest.raises(InjectedFault) as caught:
        faults.maybe_fail("after_claim")
    assert caught.value.step is Step.AFTER_CLAIM
    assert "after_claim" in str(caught.value)
    faults.maybe_fail(Step.AFTER_MARK)
    faults.maybe_fail(Step.AFTER_PUBLISH)  # not configured


def draws(faults: Faults, n: int) -> list[bool]:
    fired = []
    for _ in range(n):
        try:
            faults.maybe_fail(Step.AFTER_LISTING)
            fired.append(False)
        except InjectedFault:
            fired.append(True)
    return fired


def test_seeded_draws_are_reproducible_and_near_the_probability() -> None:
    first = draws(Faults.parse("after_listing=0.2;seed=3"), 5000)
    assert first == draws(Faults.parse("after_listing=0.2;seed=3"), 5000)
    assert first != draws(Faults.parse("after_listing=0.2;seed=4"), 5000)
    assert 800 < sum(first) < 1200


def test_draws_are_thread_safe() -> None:
    faults = Faults.parse("after_listing=0.5;seed=1")
    counts: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        fired = sum(draws(faults, 1000))
        with lock:
            counts.append(fired)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # the same 8,000 draws from one seeded generator, however the threads interleave
    assert sum(counts) == sum(draws(Faults.parse("after_listing=0.5;seed=1"), 8000))


def test_unknown_step_at_the_call_site_is_a_bug() -> None:
    with pytest.raises(ValueError, match="after_nap"):
        Faults.parse("after_claim=1").maybe_fail("after_nap")
