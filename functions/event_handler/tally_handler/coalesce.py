"""Coalesced whole-folder listings of a run, per instance: bounded listings for any N.

A run with a required glob pattern can only be counted over the whole folder, and correctness
needs, for every delivery, a listing that STARTS after the delivery's object was written and whose
verdict someone acts on (the listing that finds the run complete announces it; the claim makes
that one announcement). Listing once per delivery costs O(N^2) list entries per run. The gate
below lets one delivery's listing cover the others of its instance:

- at most one listing of a run in flight per instance;
- hand-over: a delivery waiting for a listing is released (``Covered``: it records its output and
  returns) as soon as a newer delivery of the same run arrives on the instance; the newest one
  owes the listing, which starts after it arrived, hence after every released object was written.
  If it fails, its own message is not acknowledged and Pub/Sub redelivers it: the redelivery
  lists (or hands over) after the released ones again;
- quiet: the newest delivery lists once no newer one arrived for ``quiet_s`` (while a run's
  outputs keep arriving nobody lists), and not sooner than the next listing is due;
- due: not sooner than an interval after the previous listing of the run on this instance
  started, growing with the time since the run's first listing here (half of it, 1 s to 8 s),
  and not sooner than the run may be complete at the pace that listing saw objects written
  lately (as many of its newest objects as the run missed: writers that slow down are
  followed), up to ``due_max_s``: a listing before then would likely find it incomplete.
  Unless the run went quiet here: the newest lists once no newer delivery came for 8 gaps
  between deliveries at that rate and this instance's share (1 s to 8 s; 1 s without a rate).
  So the newest delivery's wait, and the completion when the estimates miss, stay within about
  a second while the writes are steady, and a run that never goes quiet costs an instance
  about one listing per estimate, not one per interval;
- urgent: a delivery that may complete the run, as far as this instance can tell, skips the
  quiet window and the due time, so the run's last delivery lists at once. The estimate: the
  previous listing's matches plus the distinct outputs delivered here since (not listed by it),
  times this instance's share (matches gained per output delivered here, over at least
  ``SHARE_SAMPLE`` of them and the listings they took: with K instances about K; 1 until then.
  At its first listing every output delivered here so far counts, the ones that never reached
  the gate included: in a shuffled run most come before the exact paths exist, and a share
  counted over the few after them would make every later delivery urgent). A delivery that
  came during a listing is urgent only if it still may complete the run by that listing's
  count;
- behind: a delivery of an object written more than ``behind_s`` before it arrived says that
  the instance works through a backlog. The folder then holds more than the deliveries say, and
  the run never goes quiet here until the backlog drains, which may be long after its last write.
  So the quiet window does not apply: the first listing starts at once, the next one when due.
  Completion follows the last write, not the end of the backlog.
Each listing says which rule let it start (``Reason``: first, urgent, due, quiet), and the
delivery's events row keeps it (``listing_reason``): a run's list entries by reason are a query.
Urgency, intervals and the backlog rule only move costs and latency; the hand-over alone makes
the scheme correct.

Cloud Run gives no CPU outside requests, so the work is always done inside the request of the
delivery that owes it. ``Gate`` is the pure state machine (times are passed in);
``Coalescer`` wraps it with one condition variable, an injectable clock and wait.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "BEHIND_S",
    "DUE_MAX_S",
    "INTERVAL_ENV",
    "INTERVAL_GROWTH",
    "INTERVAL_S",
    "MAX_INTERVAL_S",
    "MAX_RUNS",
    "MAX_SHARE_RATIO",
    "QUIET_ENV",
    "QUIET_S",
    "SETTLE_GAPS",
    "SETTLE_S",
    "SHARE_SAMPLE",
    "STALE_S",
    "Coalescer",
    "Covered",
    "Gate",
    "ListNow",
    "Reason",
    "Step",
    "Wait",
    "Waiter",
]

QUIET_S = 0.2  # see docs/benchmarks.md ("Sharded runs")
INTERVAL_S = 1.0  # the least interval between listings of a run on an instance ...
INTERVAL_GROWTH = 0.5  # ... growing with the time since its first listing there ...
MAX_INTERVAL_S = 8.0  # ... up to this
MAX_SHARE_RATIO = 64.0
SHARE_SAMPLE = 8  # the fewest outputs delivered here that a share is taken over
BEHIND_S = 1.0  # a delivery this late after its object's write: the instance has a backlog
DUE_MAX_S = 600.0  # the longest the write rate defers a run's next listing on an instance
SETTLE_S = 1.0  # ... unless the run went quiet here: no newer delivery for 8 expected gaps,
SETTLE_GAPS = 8.0  # at least 1 s (also without a write rate), at most the greatest interval
STALE_S = 60.0  # a listing in flight longer than this is presumed lost; the next one may start
MAX_RUNS = 1000

QUIET_ENV = "TALLY_LISTING_QUIET_MS"  # benchmarks only: "off" turns coalescing off
INTERVAL_ENV = "TALLY_LISTING_INTERVAL_MS"


class Reason(StrEnum):
    """Why a delivery lists the whole folder (``events.listing_reason``)."""

    FIRST = "first"  # the run's first listing on this instance (not urgent)
    URGENT = "urgent"  # it may complete the run, by this instance's estimate
    DUE = "due"  # the interval or the write rate's estimate came
    QUIET = "quiet"  # no newer delivery for the settle time, before it was due


@dataclass(frozen=True, slots=True)
class ListNow:
    """This delivery lists the whole folder now, then calls ``finish`` with ``token``. Steps
    compare by decision: the token and the reason only explain it."""

    token: int = field(default=0, compare=False)
    reason: Reason = field(default=Reason.FIRST, compare=False)


@dataclass(frozen=True, slots=True)
class Covered:
    """A newer delivery of the run on this instance owes the listing: record and return."""


@dataclass(frozen=True, slots=True)
class Wait:
    until: float | None  # None: until the listing in flight finishes


Step = ListNow | Covered | Wait


@dataclass(slots=True)
class _Run:
    newest: int | None = None  # the token that owes the next listing
    newest_since: float = 0.0
    urgent: bool = False
    behind: bool = False  # the newest delivery came late: a backlog (see "behind")
    needed: int = 0
    lister: int | None = None  # the token whose listing is in flight
    listing_since: float = 0.0
    last_start: float | None = None
    first_start: float | None = None
    matched: int = 0  # matches counted by the last finished listing
    ratio: float = 1.0  # matches gained globally per output delivered here (this share's inverse)
    fresh_at_start: int = 0  # fresh outputs when the listing in flight started
    sample: int = 0  # outputs delivered here since the share was last taken ...
    sample_base: int = 0  # ... when the listings had counted this many matches
    delivered: int = 0  # outputs of the run delivered here so far, also before the gate
    rate: float | None = None  # the last listing's: objects written a second, lately
    listed: frozenset[str] = frozenset()  # what it listed: deliveries of those are not news
    fresh: set[str] = field(default_factory=set)  # outputs delivered since, not listed by it


class Gate:
    """The pure state machine of one instance: tokens are deliveries, times are seconds."""

    def __init__(
        self,
        quiet_s: float = QUIET_S,
        interval_s: float = INTERVAL_S,
        stale_s: float = STALE_S,
        max_runs: int = MAX_RUNS,
        growth: float = INTERVAL_GROWTH,
        max_interval_s: float = MAX_INTERVAL_S,
        behind_s: float = BEHIND_S,
        due_max_s: float = DUE_MAX_S,
        settle_s: float = SETTLE_S,
        share_sample: int = SHARE_SAMPLE,
    ) -> None:
        self.quiet_s = quiet_s
        self.interval_s = interval_s
        self.growth = growth
        self.max_interval_s = max(max_interval_s, interval_s)
        self.stale_s = stale_s
        self.behind_s = behind_s
        self.due_max_s = max(due_max_s, max_interval_s)
        self.settle_s = max(settle_s, quiet_s)
        self.share_sample = share_sample
        self.max_runs = max_runs
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._tokens = 0
        self.listings = 0
        self.covered = 0

    def arrive(
        self,
        run: str,
        now: float,
        path: str = "",
        needed: int = 0,
        age: float = 0.0,
        delivered: int = 0,
    ) -> int:
        """A delivery of ``path`` needs a whole-folder listing of ``run``; ``needed``: the
        matches that complete it; ``age``: seconds since its object was written;
        ``delivered``: the run's outputs delivered on this instance so far, if known. Any older
        waiting delivery of the run is now covered."""
        self._tokens += 1
        state = self._runs.get(run)
        if state is None:
            state = self._runs[run] = _Run()
            self._evict()
        self._runs.move_to_end(run)
        if path and path not in state.listed:
            state.fresh.add(path)
        state.newest = self._tokens
        state.newest_since = now
        state.delivered = max(state.delivered, delivered)
        state.needed = needed
        state.behind = age > self.behind_s
        state.urgent = self._may_complete(state)
        return self._tokens

    def interval(self, run: str, now: float) -> float:
        """The least time between two listings of the run on this instance, as of ``now``."""
        state = self._runs.get(run)
        if state is None or state.first_start is None:
            return self.interval_s
        grown = self.growth * (now - state.first_start)
        return min(self.max_interval_s, max(self.interval_s, grown))

    def due(self, run: str, now: float) -> float:
        """The least time between the last listing's start and the next, as of ``now``: the
        interval, or longer while the write rate says the run cannot be complete yet."""
        state = self._runs[run]
        if not state.rate:
            return self.interval(run, now)
        rest_written_in = max(0, state.needed - state.matched) / state.rate
        return min(self.due_max_s, max(self.interval(run, now), rest_written_in))

    def settle(self, run: str) -> float:
        """How long the run's newest delivery here waits for a newer one before the run counts
        as quiet and it lists, due or not: 8 gaps between deliveries at the rate seen and this
        instance's share (rarer than 1 in 2,000 gaps of steady writes), 1 s to 8 s; 1 s
        without a rate."""
        state = self._runs[run]
        if not state.rate:
            return self.settle_s
        gap = state.ratio / state.rate
        return min(self.max_interval_s, max(self.settle_s, SETTLE_GAPS * gap))

    def step(self, run: str, token: int, now: float) -> Step:
        state = self._runs.get(run)
        if state is None:  # evicted while waiting (never while busy): listing is always safe
            state = self._runs[run] = _Run(newest=token, newest_since=now, urgent=True)
        if state.newest != token:
            self.covered += 1
            return Covered()
        if state.lister is not None and now - state.listing_since < self.stale_s:
            return Wait(state.listing_since + self.stale_s)
        earliest = now
        due_at = None  # when the next listing is due (not urgent, after a listing here)
        if not state.urgent:
            if not state.behind:  # a backlog never goes quiet
                earliest = state.newest_since + self.quiet_s
            if state.last_start is not None:
                due_at = state.last_start + self.due(run, now)
                earliest = max(earliest, due_at)
                # ... unless the run went quiet here
                earliest = min(earliest, state.newest_since + self.settle(run))
        if now < earliest:
            return Wait(earliest)
        if state.urgent:
            reason = Reason.URGENT
        elif due_at is None:
            reason = Reason.FIRST
        elif now >= due_at:
            reason = Reason.DUE
        else:
            reason = Reason.QUIET
        state.newest = None
        state.lister = token
        state.listing_since = now
        state.last_start = now
        if state.first_start is None:
            state.first_start = now
        # the share's denominator: outputs delivered since the last listing, all at the first
        fresh = len(state.fresh)
        state.fresh_at_start = fresh if state.listed else max(fresh, state.delivered)
        self.listings += 1
        return ListNow(token, reason)

    def finish(
        self,
        run: str,
        token: int,
        matched: int | None,
        listed: frozenset[str] = frozenset(),
        rate: float | None = None,
    ) -> None:
        """The listing of ``token`` is over: ``matched`` outputs of the patterns among the paths
        ``listed`` (None when it failed), written at ``rate`` objects a second lately. Urgency
        and timing only: never a reason to skip a listing (a listing of several pages is no
        snapshot; only one that STARTED after an object's write proves anything about the run
        at that time)."""
        state = self._runs.get(run)
        if state is None or state.lister != token:
            return
        state.lister = None
        if matched is not None:
            # the share over at least share_sample outputs: a listing or two after a few
            # deliveries (in-flight notifications, a burst after a stall) says little
            state.sample += state.fresh_at_start
            if state.sample >= self.share_sample and matched > state.sample_base:
                gained = (matched - state.sample_base) / state.sample
                state.ratio = min(MAX_SHARE_RATIO, max(1.0, gained))
                state.sample_base, state.sample = matched, 0
            state.matched = matched
            state.rate = rate
            state.listed = listed
            state.fresh -= listed
            # a delivery that came meanwhile was urgent by the estimate before this listing
            state.urgent = state.urgent and self._may_complete(state)

    @staticmethod
    def _may_complete(state: _Run) -> bool:
        return state.matched + state.ratio * len(state.fresh) >= state.needed

    def leave(self, run: str, token: int) -> None:
        """A waiting delivery gives up without listing (its request ends in an error): the
        ones it covered are covered by its redelivery, but the next arrival lists urgently."""
        state = self._runs.get(run)
        if state is not None and state.newest == token:
            state.newest = None

    def counted_complete(self, run: str) -> bool:
        """Whether the last listing here counted exactly the matches that complete the run."""
        state = self._runs.get(run)
        return state is not None and 0 < state.needed == state.matched

    def busy(self, run: str) -> bool:
        state = self._runs.get(run)
        return state is not None and (state.newest is not None or state.lister is not None)

    def _evict(self) -> None:
        if len(self._runs) <= self.max_runs:
            return
        for run in list(self._runs):
            if len(self._runs) <= self.max_runs:
                return
            if not self.busy(run):
                del self._runs[run]


Waiter = Callable[[threading.Condition, float | None], object]


class Coalescer:
    """The gate behind one lock: ``turn`` blocks until the delivery lists or is covered."""

    def __init__(
        self,
        gate: Gate | None = None,
        clock: Callable[[], float] = time.monotonic,
        wait: Waiter | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.gate = gate or Gate()
        self.clock = clock
        self.wall = wall  # against objects' write times (Storage's clock, as NTP keeps both)
        self._cond = threading.Condition()
        self._wait: Waiter = wait or (lambda cond, timeout: cond.wait(timeout))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Coalescer | None:
        """The defaults, or the benchmarks' settings; None when coalescing is off."""
        quiet = environ.get(QUIET_ENV, "").strip()
        if quiet == "off":
            return None
        interval = environ.get(INTERVAL_ENV, "").strip()
        return cls(
            Gate(
                quiet_s=float(quiet) / 1000 if quiet else QUIET_S,
                interval_s=float(interval) / 1000 if interval else INTERVAL_S,
            )
        )

    def turn(
        self,
        run: str,
        path: str,
        needed: int,
        written: float | None = None,
        delivered: int = 0,
    ) -> ListNow | None:
        """The step when this delivery lists now (call ``finish`` after), None when covered;
        ``written``: when its object was written (epoch seconds), if known; ``delivered``: the
        run's outputs delivered on this instance so far."""
        with self._cond:
            age = 0.0 if written is None else self.wall() - written
            token = self.gate.arrive(run, self.clock(), path, needed, age, delivered)
            self._cond.notify_all()  # the previous newest is covered now
            try:
                while True:
                    step = self.gate.step(run, token, self.clock())
                    if isinstance(step, ListNow):
                        return step
                    if isinstance(step, Covered):
                        return None
                    timeout = None if step.until is None else max(0.0, step.until - self.clock())
                    self._wait(self._cond, timeout)
            except BaseException:
                self.gate.leave(run, token)
                raise

    def counted_complete(self, run: str) -> bool:
        with self._cond:
            return self.gate.counted_complete(run)

    def finish(
        self,
        run: str,
        token: int,
        matched: int | None,
        listed: frozenset[str] = frozenset(),
        rate: float | None = None,
    ) -> None:
        with self._cond:
            self.gate.finish(run, token, matched, listed, rate)
            self._cond.notify_all()
