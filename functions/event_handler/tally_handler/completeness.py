"""Is a run complete? Decided from listings of the run folder, never from a shared scratch file.

Listings are strongly consistent, so the delivery of the last expected output to be written sees
every other one: at least one delivery concludes ``Complete``, and the claim makes it one.

Cost. Proving a run incomplete needs only one required path found missing, and a delivery knows
its own output exists. So a ``Scan`` lists the run folder starting AT its own path (phase 1: from
``start_path`` to the end), then wraps around (phase 2: from the start up to ``start_path``), walks
the listing against the sorted required paths, and stops at the first required path proven
missing: an entry after it was listed without it, or the listing ended without it. Page sizes grow
8, 32, 128, 512, 1000 (the Storage maximum), so the usual delivery costs one small page and the
last one lists the whole folder in few pages. For N exact outputs arriving in random order this is
about 1.2 N list pages per run in total (tests/unit/test_handler_completeness.py simulates it).

A required glob pattern can only be counted over the whole folder, so its deliveries list the
whole folder once every exact path is present: prefer exact paths for large runs.

``Scan`` is a pure state machine: the adapter performs the ``ListRequest``s it asks for (offsets
and tokens relative to the run prefix) and feeds back the entries.

What a whole listing holds against the spec (present, missing, unexpected, pattern counts) is
``assess``'s ``Assessment``, the only definition of "missing": a Scan that lists everything ends
with it, and reconciliation and ``tally status`` read it too.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise

from tally_handler.errors import ListingOrderError, UnsatisfiableSpec
from tally_handler.layout import TALLY_FOLDER, OutputKind, classify
from tally_handler.spec import Expected, ExpectedPattern, Spec

__all__ = [
    "FIRST_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "PAGE_GROWTH",
    "RATE_MIN_OBJECTS",
    "Assessment",
    "Complete",
    "Entry",
    "Failed",
    "Incomplete",
    "ListRequest",
    "ListingOrderError",
    "Output",
    "PatternCount",
    "Result",
    "Scan",
    "affects_completeness",
    "assess",
    "check_satisfiable",
    "epoch_seconds",
    "evaluate",
    "in_range",
    "key_ranges",
    "missing_path",
    "sampled_split_points",
    "split_points",
    "write_rate",
]

FIRST_PAGE_SIZE = 8
PAGE_GROWTH = 4
MAX_PAGE_SIZE = 1000  # Cloud Storage's maximum maxResults
RATE_MIN_OBJECTS = 16  # a write rate over fewer objects is noise (parallel writers)


@dataclass(frozen=True, slots=True)
class Entry:
    """One listed object of a run folder (its latest generation: listings show no others)."""

    path: str  # relative to the run folder
    generation: int
    # The object metadata delivery.Notification also holds (as an event gives it): each is parsed
    # from its own payload.
    size: int | None = None
    crc32c: str | None = None
    md5: str | None = None
    content_type: str | None = None
    time_created: str | None = None
    updated: str | None = None


@dataclass(frozen=True, slots=True)
class ListRequest:
    """One list page of the run folder; offsets are relative to the run prefix.

    ``start_offset`` is inclusive and ``end_offset`` exclusive, as in the Storage JSON API; send
    both again with ``page_token`` (Storage requires the same filters on every page).
    """

    start_offset: str | None
    end_offset: str | None
    max_results: int
    page_token: str | None = None


# Output, Complete and the manifest's Superseded are small frozen records of unrelated things:
# the same shape, not the same logic (duplicates D39).
@dataclass(frozen=True, slots=True)
class Output:
    """An output of a run and the expected output it satisfies."""

    entry: Entry
    expected: Expected


@dataclass(frozen=True, slots=True)
class Complete:
    outputs: tuple[Output, ...]
    unexpected: tuple[Entry, ...]  # listed in the manifest; never block completion
    manifest: Entry | None = None  # the object where tally's manifest belongs, if listed


@dataclass(frozen=True, slots=True)
class Incomplete:
    reason: str  # a sentence for the event log's detail
    missing: str | None = None  # the first required path found missing; None for a pattern count


@dataclass(frozen=True, slots=True)
class Failed:
    """The run folder holds the failure marker: the run is announced FAILED, complete or not."""

    marker: Entry  # the adapter reads its content (the workflow's reason)
    outputs: tuple[Output, ...]
    unexpected: tuple[Entry, ...]
    missing: tuple[str, ...]  # required paths absent (all of them, as the whole folder was listed)
    manifest: Entry | None = None


Result = Complete | Incomplete | Failed


def missing_path(path: str) -> Incomplete:
    """The verdict once one required path is proven missing (by a walk, a probe or a listing)."""
    return Incomplete(f"expected output {path!r} is not in the run folder yet", path)


# Shaped like outcomes.Handling (two fields and a derived property), unrelated: kept apart.
@dataclass(frozen=True, slots=True)
class PatternCount:
    """A pattern of the spec and how many listed outputs it matched; it wants exactly ``count``."""

    expected: ExpectedPattern
    found: int

    @property
    def satisfied(self) -> bool:
        return self.found == self.expected.count

    def describe(self) -> str:
        return f"{self.expected.pattern} ({self.found} of {self.expected.count})"


@dataclass(frozen=True, slots=True)
class Assessment:
    """A run folder's listing against its spec: the one definition of present and missing, used by
    the handler's verdicts, reconciliation's ``stalled`` detail and ``tally status``.

    Each listed object is an output (of the one expected output ``Spec.expects`` names: an exact
    path first, else the first matching pattern), unexpected, the manifest, the failure marker, or
    tally's own (``_tally/``, left out). A required pattern must match exactly ``count`` objects:
    fewer is not complete yet, more breaks the workflow's contract and is not complete either.
    """

    outputs: tuple[Output, ...]
    unexpected: tuple[Entry, ...]  # listed in the manifest; never block completion
    missing_paths: tuple[str, ...]  # required exact paths not listed, in listing order
    patterns: tuple[PatternCount, ...]  # every pattern of the spec, required or not, spec order
    manifest: Entry | None = None
    marker: Entry | None = None  # the failure marker

    @property
    def unmet_patterns(self) -> tuple[PatternCount, ...]:
        """Required patterns whose count is off (too few or too many)."""
        return tuple(p for p in self.patterns if p.expected.required and not p.satisfied)

    @property
    def complete(self) -> bool:
        """Every required output is there (the failure marker aside: ``verdict`` weighs it)."""
        return not self.missing_paths and not self.unmet_patterns

    @property
    def pattern_outputs(self) -> int:
        """Outputs counted by required patterns (the coalescing gate's progress)."""
        return sum(p.found for p in self.patterns if p.expected.required)

    def missing(self, limit: int | None = None) -> list[str]:
        """What the run still lacks, for people: required paths, then patterns off their count
        ("parts/*.csv (1 of 3)"); past ``limit`` items the rest is "and N more"."""
        missing = [*self.missing_paths, *(p.describe() for p in self.unmet_patterns)]
        if limit is not None and len(missing) > limit:
            return [*missing[:limit], f"and {len(missing) - limit} more"]
        return missing

    def verdict(self, start_path: str = "", *, exhaustive: bool = True) -> Result:
        """Failed if the marker is listed, else Complete or the first reason it is not. Missing
        paths are reported from ``start_path`` on, wrapping around, as a Scan finds them; not
        ``exhaustive``, a missing path wins over the marker, as a Scan that stops at it."""
        split = bisect_left(self.missing_paths, start_path)
        missing = (*self.missing_paths[split:], *self.missing_paths[:split])
        if missing and not exhaustive:
            return missing_path(missing[0])
        if self.marker is not None:
            return Failed(self.marker, self.outputs, self.unexpected, missing, self.manifest)
        if missing:
            return missing_path(missing[0])
        for unmet in self.unmet_patterns:
            pattern, found, count = unmet.expected.pattern, unmet.found, unmet.expected.count
            if found < count:
                return Incomplete(
                    f"pattern {pattern!r} matched {found} objects, the spec expects exactly {count}"
                )
            return Incomplete(
                f"pattern {pattern!r} matched {found} objects, the spec says exactly {count}:"
                " delete the extra objects or fix the spec's count"
            )
        return Complete(self.outputs, self.unexpected, self.manifest)


def split_points(paths: Sequence[str], per_range: int = MAX_PAGE_SIZE) -> tuple[str, ...]:
    """Key-range boundaries for listing a folder in parallel next time: every ``per_range``-th
    path of the previous (sorted) listing, so each range holds about one page then."""
    return tuple(paths[i] for i in range(per_range, len(paths), per_range))


def sampled_split_points(
    sample: Sequence[str], total: int, per_range: int = MAX_PAGE_SIZE
) -> tuple[str, ...]:
    """Boundaries for a folder never listed here, of about ``total`` names: every so many of a
    sorted ``sample`` of them (the outputs delivered here), so that each range holds about one
    page if the sample is spread like the folder. Any boundaries are safe: the ranges cover the
    whole key space; a poor sample only costs more pages in one range."""
    if total <= per_range or len(sample) < 2:
        return ()
    return split_points(sample, max(1, round(per_range * len(sample) / total)))


def key_ranges(splits: Sequence[str]) -> list[tuple[str | None, str | None]]:
    """(start inclusive, end exclusive) ranges that cover the whole key space, in order."""
    bounds: list[str | None] = [None, *splits, None]
    return list(pairwise(bounds))


def in_range(entries: Sequence[Entry], start: str | None, end: str | None) -> list[Entry]:
    """A range's own entries (a listing that ignores the offsets returns more)."""
    return [
        e for e in entries if (start is None or e.path >= start) and (end is None or e.path < end)
    ]


def affects_completeness(spec: Spec, path: str) -> bool:
    """Whether an object at ``path`` can turn an incomplete run complete (only required outputs
    can): deliveries of other objects need no scan."""
    expected = spec.expects(path)
    return expected is not None and expected.required


def check_satisfiable(spec: Spec, manifest_name: str, failure_marker: str) -> None:
    """Raise UnsatisfiableSpec when the spec requires a name tally reserves (O(log N))."""
    reserved = _reserved_required_path(spec.required_paths, manifest_name, failure_marker)
    if reserved is not None:
        raise UnsatisfiableSpec(
            f"spec {spec.workflow}/{spec.version} requires {reserved!r}, a name tally "
            "reserves (manifest, failure marker or _tally/): no run of it can complete;"
            " register a new version that renames that output (the registry refuses such"
            " specs when it shares the handler's TALLY_MANIFEST_NAME and TALLY_FAILURE_MARKER)"
        )


def _reserved_required_path(
    required: tuple[str, ...], manifest_name: str, failure_marker: str
) -> str | None:
    """A required path the run can never satisfy, found in O(log N): runs scan it per delivery."""

    def has(path: str) -> bool:
        index = bisect_left(required, path)
        return index < len(required) and required[index] == path

    under_tally = bisect_left(required, TALLY_FOLDER)
    if under_tally < len(required) and required[under_tally].startswith(TALLY_FOLDER):
        return required[under_tally]
    return next((name for name in (manifest_name, failure_marker) if has(name)), None)


@dataclass(slots=True)
class _Phase:
    start: str | None  # inclusive
    end: str | None  # exclusive
    lo: int  # the phase's required paths: spec.required_paths[lo:hi]
    hi: int


class Scan:
    """Decide a run's completeness from list pages, starting at ``start_path``.

    ``exhaustive`` lists the whole folder without stopping at the first missing path (for the
    failure marker's own delivery, which is then implied, and for reconciliation), so a failure
    marker is found even in a run that will never be complete.
    """

    def __init__(
        self,
        spec: Spec,
        start_path: str,
        manifest_name: str,
        failure_marker: str,
        *,
        exhaustive: bool = False,
    ) -> None:
        self.spec = spec
        self.manifest_name = manifest_name
        self.failure_marker = failure_marker
        self.exhaustive = exhaustive or start_path == failure_marker
        self._required = spec.required_paths
        check_satisfiable(spec, manifest_name, failure_marker)
        split = bisect_left(self._required, start_path)
        self._phases = [_Phase(start_path or None, None, split, len(self._required))]
        if start_path:
            self._phases.append(_Phase(None, start_path, 0, split))
        self._phase = 0
        self._cursor = split  # next required path of the current phase not yet listed
        self._page_token: str | None = None
        self._last_path: str | None = None
        self._listed: list[list[Entry]] = [[] for _ in self._phases]
        self.result: Result | None = None
        self.pages = 0

    def next_request(self) -> ListRequest | None:
        if self.result is not None:
            return None
        phase = self._phases[self._phase]
        size = min(FIRST_PAGE_SIZE * PAGE_GROWTH**self.pages, MAX_PAGE_SIZE)
        return ListRequest(phase.start, phase.end, size, self._page_token)

    def feed(self, entries: Sequence[Entry], next_page_token: str | None) -> None:
        """Feed the page answering ``next_request()``."""
        if self.result is not None:
            raise RuntimeError("the scan is finished; read scan.result")
        self.pages += 1
        phase = self._phases[self._phase]
        past_end = self._walk(entries, phase)
        if self.result is not None:
            return
        if next_page_token and not past_end:
            self._page_token = next_page_token
            return
        if not self.exhaustive and self._cursor < phase.hi:
            self._missing(self._required[self._cursor])  # the phase ended without it
            return
        self._phase += 1
        self._page_token = None
        self._last_path = None
        if self._phase < len(self._phases):
            self._cursor = self._phases[self._phase].lo
            return
        self.result = evaluate(
            self.spec,
            [entry for listed in reversed(self._listed) for entry in listed],
            self.manifest_name,
            self.failure_marker,
            start_path=self._phases[0].start or "",
        )

    def _walk(self, entries: Sequence[Entry], phase: _Phase) -> bool:
        """Walk one page against the phase's required paths; True when it ran past the phase."""
        listed = self._listed[self._phase]
        for entry in entries:
            path = entry.path
            if phase.start is not None and path < phase.start:
                continue  # the listing ignored startOffset (some emulators do)
            if phase.end is not None and path >= phase.end:
                return True  # the listing ignored endOffset: the phase is over anyway
            if self._last_path is not None and path <= self._last_path:
                raise ListingOrderError(
                    f"listing returned {path!r} after {self._last_path!r}; Storage lists in "
                    "lexicographic order, so the adapter must feed pages as they come"
                )
            self._last_path = path
            listed.append(entry)
            if not self.exhaustive and self._cursor < phase.hi:
                wanted = self._required[self._cursor]
                if wanted < path:
                    self._missing(wanted)  # listed past it: it is not there
                    return False
                if wanted == path:
                    self._cursor += 1
        return False

    def _missing(self, path: str) -> None:
        self.result = missing_path(path)


def assess(
    spec: Spec, entries: Sequence[Entry], manifest_name: str, failure_marker: str
) -> Assessment:
    """Weigh a whole run folder's entries (sorted by path) against the spec's expected outputs."""
    outputs: list[Output] = []
    unexpected: list[Entry] = []
    marker: Entry | None = None
    manifest: Entry | None = None
    found: Counter[ExpectedPattern] = Counter()
    for entry in entries:
        kind = classify(entry.path, manifest_name, failure_marker)
        if kind is OutputKind.FAILURE_MARKER:
            marker = entry
        elif kind is OutputKind.MANIFEST:
            manifest = entry
        elif kind is OutputKind.OUTPUT:
            expected = spec.expects(entry.path)
            if expected is None:
                unexpected.append(entry)
            else:
                outputs.append(Output(entry, expected))
                if isinstance(expected, ExpectedPattern):
                    found[expected] += 1
    present = {output.entry.path for output in outputs}
    return Assessment(
        outputs=tuple(outputs),
        unexpected=tuple(unexpected),
        missing_paths=tuple(path for path in spec.required_paths if path not in present),
        patterns=tuple(PatternCount(pattern, found[pattern]) for pattern in spec.patterns),
        manifest=manifest,
        marker=marker,
    )


def evaluate(
    spec: Spec,
    entries: Sequence[Entry],
    manifest_name: str,
    failure_marker: str,
    *,
    start_path: str = "",
) -> Result:
    """The verdict on a whole run folder's entries (sorted by path)."""
    return assess(spec, entries, manifest_name, failure_marker).verdict(start_path)


def epoch_seconds(text: str | None) -> float | None:
    """Seconds since the epoch of a Storage time; None when absent or unreadable (then the gate
    goes without: the times only move costs and latency)."""
    try:
        value = datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def write_rate(entries: list[Entry], newest: int | None = None) -> float | None:
    """Objects written per second over the ``newest`` listed objects (at least RATE_MIN_OBJECTS,
    whose creation times rarely share a millisecond; None: all),
    by their creation times; None when unknown. The gate asks it over as many objects as the
    run still misses: the rest may take as long as the latest as many writes took, which follows
    writers that slow down (a platform under load) where a whole-span average would promise
    objects that are not coming, and the gate would list again too soon."""
    created = (epoch_seconds(entry.time_created) for entry in entries)
    times = sorted(t for t in created if t is not None)
    recent = times[-max(RATE_MIN_OBJECTS, newest or len(times)) :]
    span = recent[-1] - recent[0] if len(recent) > 1 else 0.0
    return (len(recent) - 1) / span if span > 0 else None
