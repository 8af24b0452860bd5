"""The coalescing gate (tally_handler/coalesce.py): explicit times and events, never sleeps."""

from __future__ import annotations

import threading

import pytest
from tally_handler.coalesce import (
    DUE_MAX_S,
    SHARE_SAMPLE,
    Coalescer,
    Covered,
    Gate,
    ListNow,
    Reason,
    Wait,
)
from tally_handler.completeness import (
    Entry,
    in_range,
    key_ranges,
    sampled_split_points,
    split_points,
)

RUN = "b/wf/1/r"


def test_a_lone_delivery_lists_once_the_run_is_quiet() -> None:
    gate = Gate(quiet_s=0.2, interval_s=1.0)
    token = gate.arrive(RUN, 10.0, "shards/0", needed=5)
    assert gate.step(RUN, token, 10.0) == Wait(10.2)
    assert gate.step(RUN, token, 10.2) == ListNow()


def test_an_older_waiting_delivery_is_covered_by_a_newer_one() -> None:
    gate = Gate(quiet_s=0.2)
    first = gate.arrive(RUN, 0.0, "shards/0", needed=5)
    assert isinstance(gate.step(RUN, first, 0.0), Wait)
    second = gate.arrive(RUN, 0.1, "shards/1", needed=5)
    assert gate.step(RUN, first, 0.1) == Covered()
    assert gate.step(RUN, second, 0.1) == Wait(pytest.approx(0.3))
    assert gate.step(RUN, second, 0.31) == ListNow()
    assert (gate.listings, gate.covered) == (1, 1)


def test_one_listing_in_flight_and_the_next_starts_after_it() -> None:
    gate = Gate(quiet_s=0.0, interval_s=0.0)
    lister = gate.arrive(RUN, 0.0, "shards/0", needed=5)
    assert gate.step(RUN, lister, 0.0) == ListNow()
    waiting = gate.arrive(RUN, 0.5, "shards/1", needed=5)
    assert isinstance(gate.step(RUN, waiting, 0.5), Wait)  # the listing is in flight
    gate.finish(RUN, lister, matched=1)
    assert gate.step(RUN, waiting, 0.6) == ListNow()  # started after it joined


def test_the_interval_spaces_listings_of_a_run() -> None:
    gate = Gate(quiet_s=0.1, interval_s=1.0)
    first = gate.arrive(RUN, 0.0, "shards/0", needed=9)
    assert gate.step(RUN, first, 0.1) == ListNow()
    gate.finish(RUN, first, matched=1)
    second = gate.arrive(RUN, 0.2, "shards/1", needed=9)
    assert gate.step(RUN, second, 0.3) == Wait(1.1)
    assert gate.step(RUN, second, 1.1) == ListNow()


def test_a_delivery_that_may_complete_the_run_lists_at_once() -> None:
    gate = Gate(quiet_s=5.0, interval_s=5.0)
    first = gate.arrive(RUN, 0.0, "shards/0", needed=3)
    assert gate.step(RUN, first, 5.0) == ListNow()
    gate.finish(RUN, first, matched=2)  # 2 of 3: one more output can complete it
    last = gate.arrive(RUN, 5.1, "shards/2", needed=3)
    assert gate.step(RUN, last, 5.1) == ListNow()


def test_duplicates_do_not_count_twice_towards_urgency() -> None:
    gate = Gate(quiet_s=1.0)
    gate.arrive(RUN, 0.0, "shards/0", needed=2)
    token = gate.arrive(RUN, 0.0, "shards/0", needed=2)
    assert isinstance(gate.step(RUN, token, 0.0), Wait)


def test_a_failed_listing_lets_the_next_delivery_list() -> None:
    gate = Gate(quiet_s=0.0, interval_s=0.0)
    lister = gate.arrive(RUN, 0.0, "a", needed=5)
    assert gate.step(RUN, lister, 0.0) == ListNow()
    gate.finish(RUN, lister, matched=None)
    nxt = gate.arrive(RUN, 0.1, "b", needed=5)
    assert gate.step(RUN, nxt, 0.1) == ListNow()


def test_a_listing_presumed_lost_after_the_stale_time() -> None:
    gate = Gate(quiet_s=0.0, interval_s=0.0, stale_s=30.0)
    lister = gate.arrive(RUN, 0.0, "a", needed=5)
    gate.step(RUN, lister, 0.0)
    waiting = gate.arrive(RUN, 1.0, "b", needed=5)
    assert gate.step(RUN, waiting, 1.0) == Wait(30.0)
    assert gate.step(RUN, waiting, 30.0) == ListNow()


def test_runs_are_independent_and_idle_ones_are_evicted() -> None:
    gate = Gate(quiet_s=0.0, max_runs=2)
    tokens = {run: gate.arrive(run, 0.0, "a", needed=5) for run in ("r1", "r2")}
    assert all(gate.step(run, t, 0.0) == ListNow() for run, t in tokens.items())
    gate.finish("r1", tokens["r1"], 1)
    gate.arrive("r3", 0.0, "a", needed=5)  # r1 is idle: evicted; r2 is listing: kept
    assert not gate.busy("r1") and gate.busy("r2") and gate.busy("r3")


def test_a_waiter_evicted_meanwhile_lists() -> None:
    gate = Gate(quiet_s=1.0)
    token = gate.arrive(RUN, 0.0, "a", needed=5)
    gate._runs.clear()
    assert gate.step(RUN, token, 0.0) == ListNow()


class ManualClock:
    """Time moves only when a waiter waits (to its deadline); events come from the test."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float | None] = []

    def __call__(self) -> float:
        return self.now


def test_coalescer_hands_over_between_threads_without_sleeping() -> None:
    clock = ManualClock()
    first_waits = threading.Event()
    waits: list[float | None] = []

    def wait(condition: threading.Condition, timeout: float | None) -> None:
        waits.append(timeout)
        first_waits.set()
        condition.wait()  # woken by the newer arrival's notify, never by time

    coalescer = Coalescer(Gate(quiet_s=0.2), clock, wait)
    outcome: list[int | None] = []
    thread = threading.Thread(target=lambda: outcome.append(coalescer.turn(RUN, "a", 9)))
    thread.start()
    assert first_waits.wait(5)
    # the newer delivery arrives; its own quiet wait must not block the test: make it urgent
    assert coalescer.turn(RUN, "b", 2) is not None
    thread.join(5)
    assert outcome == [None]  # covered
    assert waits == [pytest.approx(0.2)]


def test_coalescer_lists_after_the_quiet_wait_and_releases_on_finish() -> None:
    clock = ManualClock()

    def wait(_condition: threading.Condition, timeout: float | None) -> None:
        assert timeout is not None
        clock.now += timeout

    coalescer = Coalescer(Gate(quiet_s=0.2, interval_s=1.0), clock, wait)
    first = coalescer.turn(RUN, "a", 9)
    assert first is not None and clock.now == pytest.approx(0.2)
    assert first.reason is Reason.FIRST
    coalescer.finish(RUN, first.token, matched=1)
    second = coalescer.turn(RUN, "b", 9)
    assert second is not None and clock.now == pytest.approx(1.2)  # the interval
    assert second.reason is Reason.DUE


def test_a_waiter_that_fails_leaves_the_gate() -> None:
    def wait(_condition: threading.Condition, _timeout: float | None) -> None:
        raise KeyboardInterrupt

    coalescer = Coalescer(Gate(quiet_s=1.0), lambda: 0.0, wait)
    with pytest.raises(KeyboardInterrupt):
        coalescer.turn(RUN, "a", 9)
    assert not coalescer.gate.busy(RUN)


def test_from_env() -> None:
    assert Coalescer.from_env({"TALLY_LISTING_QUIET_MS": "off"}) is None
    made = Coalescer.from_env({"TALLY_LISTING_QUIET_MS": "50", "TALLY_LISTING_INTERVAL_MS": "9"})
    assert made is not None and (made.gate.quiet_s, made.gate.interval_s) == (0.05, 0.009)


def test_key_ranges_cover_the_folder_in_order() -> None:
    paths = [f"p{i:04d}" for i in range(2500)]
    splits = split_points(paths, 1000)
    assert splits == ("p1000", "p2000")
    ranges = key_ranges(splits)
    assert ranges == [(None, "p1000"), ("p1000", "p2000"), ("p2000", None)]
    entries = [Entry(p, 1) for p in paths]
    joined = [e for start, end in ranges for e in in_range(entries, start, end)]
    assert joined == entries
    assert key_ranges(()) == [(None, None)]


def test_a_first_listing_splits_the_folder_at_the_outputs_delivered_so_far() -> None:
    folder = sorted(["_SUCCESS", "metrics.json", *(f"shards/part-{i:05d}" for i in range(10_000))])
    delivered = folder[::4]  # this instance's share of the deliveries, spread over the folder
    ranges = key_ranges(sampled_split_points(delivered, total=len(folder)))
    sizes = [
        len([p for p in folder if (s is None or p >= s) and (e is None or p < e)])
        for s, e in ranges
    ]
    assert sum(sizes) == len(folder)  # the ranges cover the folder, whatever the sample
    assert len(ranges) <= 11 and max(sizes) <= 1004  # about a page each: in parallel
    assert sampled_split_points(delivered, total=900) == ()  # one page: one range
    assert sampled_split_points(delivered[:1], total=len(folder)) == ()  # nothing to split at


def test_deliveries_of_listed_outputs_do_not_make_the_run_urgent() -> None:
    """A backlog (deliveries of outputs the last listing already counted) is no news."""
    gate = Gate(quiet_s=1.0)
    lister = gate.arrive(RUN, 0.0, "s/0", needed=3)
    assert gate.step(RUN, lister, 1.0) == ListNow()
    gate.finish(RUN, lister, matched=2, listed=frozenset({"s/0", "s/1"}))
    late = gate.arrive(RUN, 1.1, "s/1", needed=3)
    assert isinstance(gate.step(RUN, late, 1.1), Wait)
    new = gate.arrive(RUN, 1.2, "s/2", needed=3)
    assert gate.step(RUN, new, 1.2) == ListNow()


def test_the_interval_grows_with_the_runs_listing_history() -> None:
    gate = Gate(quiet_s=0.0, interval_s=1.0, growth=0.5, max_interval_s=8.0)
    token = gate.arrive(RUN, 0.0, "s/0", needed=10**6)
    assert gate.step(RUN, token, 0.0) == ListNow()
    gate.finish(RUN, token, matched=1, listed=frozenset({"s/0"}))
    assert gate.interval(RUN, 1.0) == 1.0
    assert gate.interval(RUN, 6.0) == 3.0
    assert gate.interval(RUN, 100.0) == 8.0


def test_an_instance_that_sees_a_share_of_the_deliveries_scales_its_estimate() -> None:
    """4 instances: the matches grow by about 4 per output delivered here."""
    gate = Gate(quiet_s=0.0, interval_s=0.0)
    first = gate.arrive(RUN, 0.0, "s/0", needed=100)
    assert gate.step(RUN, first, 0.0) == ListNow()
    gate.finish(RUN, first, matched=4, listed=frozenset({f"s/{i}" for i in range(4)}))
    for i in range(4, 11):
        gate.arrive(RUN, 0.1, f"s/{i}", needed=100)
    second = gate.arrive(RUN, 0.1, "s/11", needed=100)
    assert gate.step(RUN, second, 0.1) == ListNow()  # 8 fresh outputs delivered here
    gate.finish(RUN, second, matched=36, listed=frozenset({f"s/{i}" for i in range(36)}))
    late = gate.arrive(RUN, 0.2, "s/99", needed=40)
    assert gate._runs[RUN].ratio == 4.0 and gate._runs[RUN].urgent  # 36 + 4 x 1 >= 40
    assert gate.step(RUN, late, 0.2) == ListNow()


def test_a_share_is_taken_over_at_least_eight_outputs() -> None:
    """A listing right after another one, a delivery or two apart (a burst after a stall, or
    notifications still in flight at a first listing), says little about the share: traced at
    N = 10,000 over 4 instances, such pairs gave shares of 17 to 37 and made each next delivery
    urgent. The share waits until SHARE_SAMPLE outputs were delivered here."""
    gate = Gate(quiet_s=0.0, interval_s=0.0)
    token = gate.arrive(RUN, 0.0, "s/0", needed=10_000)
    assert gate.step(RUN, token, 0.0) == ListNow()
    gate.finish(RUN, token, matched=30, listed=frozenset(f"s/{i}" for i in range(30)))
    assert gate._runs[RUN].ratio == 1.0  # 30 over 1 output: not yet a share
    for i in range(30, 30 + SHARE_SAMPLE - 1):  # 7 more: 8 in all since the share's start
        token = gate.arrive(RUN, 1.0, f"s/{i}", needed=10_000)
    assert gate.step(RUN, token, 1.0) == ListNow()
    gate.finish(RUN, token, matched=64, listed=frozenset(f"s/{i}" for i in range(64)))
    assert gate._runs[RUN].ratio == 64 / SHARE_SAMPLE  # every match over every output: 8
    token = gate.arrive(RUN, 2.0, "s/64", needed=10_000)
    assert gate.step(RUN, token, 2.0) == ListNow()
    gate.finish(RUN, token, matched=100, listed=frozenset(f"s/{i}" for i in range(100)))
    assert gate._runs[RUN].ratio == 64 / SHARE_SAMPLE  # 36 over 1 output: kept


def test_a_delivery_that_came_during_a_listing_is_urgent_by_its_result() -> None:
    """Urgency estimated before a listing is stale once it is over: the delivery that came
    meanwhile lists at once only if the run may still be complete by the new count (in the
    derived cloud model every urgent listing was followed by a second one straight away)."""
    gate = Gate(quiet_s=0.0, interval_s=1.0)
    token = gate.arrive(RUN, 0.0, "s/0", needed=100, delivered=10)
    assert gate.step(RUN, token, 0.0) == ListNow()
    gate.finish(RUN, token, matched=40, listed=frozenset(f"s/{i}" for i in range(40)))
    assert gate._runs[RUN].ratio == 4.0  # 4 instances
    for i in range(40, 54):
        gate.arrive(RUN, 1.0, f"s/{i}", needed=100)
    lister = gate.arrive(RUN, 1.0, "s/54", needed=100)
    assert gate.step(RUN, lister, 1.0) == ListNow()  # 40 + 4 x 15: urgent
    meanwhile = gate.arrive(RUN, 1.1, "s/55", needed=100)
    assert gate._runs[RUN].urgent  # 40 + 4 x 16, by the count before the listing
    gate.finish(RUN, lister, matched=70, listed=frozenset(f"s/{i}" for i in range(70)))
    assert not gate._runs[RUN].urgent  # 70 of 100, nothing new since: by its own count
    assert isinstance(gate.step(RUN, meanwhile, 1.1), Wait)


def test_a_first_listing_shares_its_matches_over_every_output_delivered_here() -> None:
    """Shuffled writes over 4 instances: the exact paths came last, so this instance's first 2,450
    deliveries never reached the gate, and its first listing counts 9,820 of 10,000 after 13
    that did. Its share is 9,820 over 2,450, about 4: the next few outputs do not make the run
    urgent (over the 13 it would be 64, the cap, and each delivery would list at once: 31.7
    list entries per output measured at N = 10,000, 50 writes/s)."""
    gate = Gate(quiet_s=0.2, interval_s=1.0)
    token = 0
    for i in range(13):
        token = gate.arrive(RUN, 0.01 * i, f"s/{i}", needed=10_000, delivered=2_438 + i)
    assert gate.step(RUN, token, 0.5) == ListNow()
    gate.finish(
        RUN, token, matched=9_820, listed=frozenset(f"s/{i}" for i in range(9_820)), rate=50.0
    )
    assert gate._runs[RUN].ratio == pytest.approx(9_820 / 2_450)
    for i in range(9_820, 9_823):
        token = gate.arrive(RUN, 1.0, f"s/{i}", needed=10_000, delivered=2_451)
        assert not gate._runs[RUN].urgent  # 9,820 + 4 x 3 of 10,000
    assert isinstance(gate.step(RUN, token, 1.0), Wait)
    without = Gate(quiet_s=0.2, interval_s=1.0)  # the gate's own count only: the cap
    token = 0
    for i in range(13):
        token = without.arrive(RUN, 0.01 * i, f"s/{i}", needed=10_000)
    assert without.step(RUN, token, 0.5) == ListNow()
    without.finish(RUN, token, matched=9_820, listed=frozenset({"s/0"}), rate=50.0)
    assert without._runs[RUN].ratio == 64.0


def test_the_gate_in_the_cloud_model_lists_a_fast_run_once_per_instance() -> None:
    """bench/sharded_sim.py drives this gate: a burst of 1,000 outputs over 2 instances costs
    about one listing per instance, and the run completes within a second of the last write."""
    from bench.sharded_sim import simulate

    result = simulate(1000, 2, None)
    assert result.listings <= 4
    assert result.completion_s < 1.0


def test_a_backlog_lists_on_the_interval_without_waiting_for_quiet() -> None:
    """Deliveries of objects written seconds ago (an instance behind its writers) keep coming
    every 50 ms: a run that waited for quiet would list only when the backlog drained."""
    gate = Gate(quiet_s=0.2, interval_s=1.0, growth=0.5, max_interval_s=8.0, behind_s=1.0)
    first = gate.arrive(RUN, 0.0, "s/0", needed=1000, age=5.0)
    assert gate.step(RUN, first, 0.0) == ListNow()  # at once: no quiet window
    gate.finish(RUN, first, matched=100, listed=frozenset({"s/0"}))
    token = gate.arrive(RUN, 0.05, "s/1", needed=1000, age=5.0)
    assert gate.step(RUN, token, 0.05) == Wait(1.0)  # the interval since the last start
    on_time = gate.arrive(RUN, 1.0, "s/2", needed=1000, age=5.0)
    assert gate.step(RUN, on_time, 1.0) == ListNow()


def test_the_same_deliveries_on_time_wait_for_quiet() -> None:
    gate = Gate(quiet_s=0.2, interval_s=1.0, behind_s=1.0)
    first = gate.arrive(RUN, 0.0, "s/0", needed=1000, age=0.3)
    assert gate.step(RUN, first, 0.0) == Wait(0.2)


def test_a_backlog_lists_when_the_write_rate_says_the_run_may_be_complete() -> None:
    """900 of 1,000 missing, written at 50 a second: while the backlog's deliveries keep coming
    the next listing waits 18 s after that listing started (later than the greatest interval);
    then 100 missing: 2 s, but never sooner than the interval (by then 8 s: a run whose writers
    slow down would otherwise be listed every second near its end)."""
    gate = Gate(quiet_s=0.2, interval_s=1.0, growth=0.5, max_interval_s=8.0, behind_s=1.0)
    first = gate.arrive(RUN, 0.0, "s/0", needed=1000, age=5.0)
    assert gate.step(RUN, first, 0.0) == ListNow()
    counted = frozenset(f"s/{i}" for i in range(100))
    gate.finish(RUN, first, matched=100, listed=counted, rate=50.0)
    settle = gate.settle(RUN)  # 8 gaps at 50 a second, no share yet (1 output): the least
    assert settle == 1.0
    token = first
    for i in range(1, 36):  # a backlog of outputs it counted: a delivery every 0.5 s
        token = gate.arrive(RUN, 0.5 * i, f"s/{i}", needed=1000, age=5.0)
        assert gate.step(RUN, token, 0.5 * i) == Wait(min(18.0, 0.5 * i + settle)), i
    assert gate.step(RUN, token, 18.0) == ListNow()
    gate.finish(RUN, token, matched=900, listed=frozenset(f"s/{i}" for i in range(900)), rate=50.0)
    third = gate.arrive(RUN, 18.1, "s/36", needed=1000, age=5.0)
    assert gate.due(RUN, 18.1) == 8.0  # the interval, not the 2 s estimate
    assert gate.step(RUN, third, 18.1) == Wait(min(26.0, 18.1 + gate.settle(RUN)))
    gate.finish(RUN, third, matched=999, rate=1000.0)  # not its listing: ignored
    assert gate.due(RUN, 18.1) == 8.0
    slow = Gate(quiet_s=0.2, interval_s=1.0, growth=0.5, max_interval_s=8.0, behind_s=1.0)
    token = slow.arrive(RUN, 0.0, "s/0", needed=1000, age=5.0)
    assert slow.step(RUN, token, 0.0) == ListNow()
    slow.finish(RUN, token, matched=500, listed=frozenset({"s/0"}), rate=1e6)
    later = slow.arrive(RUN, 0.5, "s/1", needed=1000, age=5.0)
    assert slow.step(RUN, later, 0.5) == Wait(1.0)  # due at once: the least interval first


def test_coalescer_measures_a_deliverys_age_with_the_wall_clock() -> None:
    coalescer = Coalescer(Gate(quiet_s=0.2, behind_s=1.0), clock=lambda: 0.0, wall=lambda: 1_000.0)
    assert coalescer.turn(RUN, "s/0", 10, written=990.0) is not None  # 10 s old: lists at once


def test_a_backlog_far_from_complete_waits_for_its_estimate_up_to_the_cap() -> None:
    """9,900 missing at 15 a second: 660 s away. While the backlog goes on, the next listing
    waits for that (at most DUE_MAX_S); once no newer delivery came for the settle time (the
    backlog drained here), the newest lists."""
    counted = frozenset(f"s/{i}" for i in range(240))  # the backlog's outputs: no news
    gate = Gate(quiet_s=0.2, interval_s=1.0, growth=0.5, max_interval_s=8.0, behind_s=1.0)
    first = gate.arrive(RUN, 0.0, "s/0", needed=1000, age=5.0)
    assert gate.step(RUN, first, 0.0) == ListNow()
    gate.finish(RUN, first, matched=100, listed=counted, rate=300.0)
    assert gate.settle(RUN) == 1.0  # 8 gaps at 300/s (no share yet): the least
    soon = gate.arrive(RUN, 0.5, "s/1", needed=1000, age=5.0)
    assert gate.step(RUN, soon, 0.5) == Wait(min(3.0, 0.5 + gate.settle(RUN)))  # 900 at 300/s
    capped = Gate(quiet_s=0.2, interval_s=1.0, growth=0.5, max_interval_s=8.0, behind_s=1.0)
    token = capped.arrive(RUN, 0.0, "s/0", needed=10_000, age=5.0)
    assert capped.step(RUN, token, 0.0) == ListNow()
    capped.finish(RUN, token, matched=100, listed=counted, rate=15.0)
    for i in range(1, int(DUE_MAX_S / 0.25)):  # the backlog goes on, a delivery every 0.25 s
        token = capped.arrive(RUN, 0.25 * i, f"s/{i % 240}", needed=10_000, age=5.0)
        assert capped.step(RUN, token, 0.25 * i) == Wait(min(DUE_MAX_S, 0.25 * i + 1.0)), i
    assert capped.listings == 1
    assert capped.step(RUN, token, DUE_MAX_S) == ListNow()  # 660 s away: the cap
    drained = Gate(quiet_s=0.2, interval_s=1.0, growth=0.5, max_interval_s=8.0, behind_s=1.0)
    token = drained.arrive(RUN, 0.0, "s/0", needed=1000, age=5.0)
    assert drained.step(RUN, token, 0.0) == ListNow()
    drained.finish(RUN, token, matched=100, listed=counted, rate=15.0)
    for i, now in enumerate((0.5, 1.0, 1.5), start=1):
        token = drained.arrive(RUN, now, f"s/{i}", needed=1000, age=5.0)
    assert drained.step(RUN, token, 2.0) == Wait(1.5 + drained.settle(RUN))
    assert drained.step(RUN, token, 2.5) == ListNow()  # quiet for the settle time: it lists


def test_the_settle_time_is_eight_gaps_between_deliveries_here() -> None:
    gate = Gate(interval_s=1.0, max_interval_s=8.0)
    token = gate.arrive(RUN, 0.0, "s/0", needed=1000)
    assert gate.settle(RUN) == 1.0  # no rate yet: the least
    assert gate.step(RUN, token, 1.0) == ListNow()
    gate.finish(RUN, token, matched=10, listed=frozenset({"s/0"}), rate=1000.0)
    assert gate.settle(RUN) == 1.0  # 8 ms gaps: at least 1 s
    gate._runs[RUN].ratio = 4.0  # 4 instances: a delivery here every 4 writes
    gate._runs[RUN].rate = 25.0
    assert gate.settle(RUN) == pytest.approx(1.28)  # 8 x 160 ms
    gate._runs[RUN].rate = 0.5
    assert gate.settle(RUN) == 8.0  # 8 s gaps: the greatest interval


def test_deliveries_on_time_list_when_the_write_rate_says_the_run_may_be_complete() -> None:
    """Paced writes, one delivery every 0.5 s here (gaps over the quiet window): a listing that
    found 1 of 1,000 written at 25 a second is followed by the next one 40 s later, not every
    interval; a fresh output after that one (10 missing) makes it urgent."""
    gate = Gate(quiet_s=0.2, interval_s=1.0, growth=0.5, max_interval_s=8.0, behind_s=1.0)
    first = gate.arrive(RUN, 0.0, "s/0", needed=1000)
    assert gate.step(RUN, first, 0.2) == ListNow()
    gate.finish(RUN, first, matched=1, listed=frozenset({"s/0"}), rate=25.0)
    assert gate.settle(RUN) == 1.0  # 8 gaps of 40 ms: the least
    due_at = 0.2 + 999 / 25.0
    token = first
    for i in range(1, 80):  # a newer delivery every 0.5 s: each waits for the due time
        now = 0.2 + 0.5 * i
        token = gate.arrive(RUN, now, f"s/{i}", needed=1000)
        assert gate.step(RUN, token, now + 0.3) == Wait(min(due_at, now + 1.0)), i
    assert gate.listings == 1
    assert gate.step(RUN, token, due_at) == ListNow()  # due: 40 s after the last start
    gate.finish(RUN, token, matched=990, listed=frozenset(f"s/{i}" for i in range(990)), rate=25.0)
    late = gate.arrive(RUN, 41.0, "s/5", needed=1000)  # a duplicate: no news
    assert gate.due(RUN, 41.0) == 8.0  # 10 missing (0.4 s), but the interval: 8 s
    assert gate.step(RUN, late, 41.0) == Wait(41.0 + gate.settle(RUN))
    last = gate.arrive(RUN, 41.5, "s/999", needed=1000)
    assert gate.step(RUN, last, 41.5) == ListNow()  # 990 + a share of 12.5: it may be complete


def test_each_listing_says_which_rule_let_it_start() -> None:
    """first; due (the interval came while deliveries went on); quiet (no newer delivery for the
    settle time, long before the write rate says it is due); urgent (it may complete the run)."""
    gate = Gate(quiet_s=0.2, interval_s=1.0, growth=0.0, settle_s=1.0)

    def listing(path: str, arrived: float, at: float, needed: int = 1_000, **finish) -> ListNow:
        token = gate.arrive(RUN, arrived, path, needed=needed)
        step = gate.step(RUN, token, at)
        assert isinstance(step, ListNow) and step.token == token, step
        gate.finish(RUN, token, matched=int(path[2:]) + 1, listed=frozenset({path}), **finish)
        return step

    assert listing("s/0", 0.0, 0.2).reason is Reason.FIRST
    for i in range(1, 12):  # a delivery every 0.1 s: never quiet, the interval (1 s) comes
        gate.arrive(RUN, 0.1 * i, f"s/{i}", needed=1_000)
    assert listing("s/12", 1.2, 1.4, rate=10.0).reason is Reason.DUE
    assert gate.due(RUN, 1.5) == pytest.approx(98.7)  # 987 missing at 10 a second
    assert listing("s/13", 1.5, 2.5).reason is Reason.QUIET  # 1 s without a newer delivery
    assert listing("s/14", 2.6, 2.6, needed=15).reason is Reason.URGENT
