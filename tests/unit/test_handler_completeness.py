"""Completeness from listings: the Scan state machine against an in-memory bucket.

``FakeBucket`` is a test double of Cloud Storage's listing semantics (names in UTF-8 byte order,
prefix, inclusive startOffset, exclusive endOffset, maxResults, page tokens); it is no part of
the handler.
"""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tally_handler.completeness import (
    FIRST_PAGE_SIZE,
    MAX_PAGE_SIZE,
    Complete,
    Entry,
    Failed,
    Incomplete,
    ListingOrderError,
    ListRequest,
    Result,
    Scan,
    affects_completeness,
)
from tally_handler.spec import Spec

MANIFEST = "output.json"
MARKER = "_FAILED"
PREFIX = "wf/1.0/run-1/"


class FakeBucket:
    def __init__(
        self,
        *,
        ignore_offsets: bool = False,
        short_pages: random.Random | None = None,
    ) -> None:
        self._keys: list[bytes] = []  # sorted UTF-8 names: Storage's order
        self._objects: dict[str, Entry] = {}
        self.ignore_offsets = ignore_offsets
        self.short_pages = short_pages
        self.pages = 0
        self.entries = 0  # entries returned over all pages: the cost model counts them

    def write(self, name: str, size: int = 1) -> Entry:
        previous = self._objects.get(name)
        generation = previous.generation + 1 if previous else 1
        entry = Entry(name, generation, size, "crc", "md5", "text/plain", None, None)
        if previous is None:
            key = name.encode("utf-8")
            self._keys.insert(bisect_left(self._keys, key), key)
        self._objects[name] = entry
        return entry

    def delete(self, name: str) -> None:
        del self._objects[name]
        self._keys.remove(name.encode("utf-8"))

    def list(self, prefix: str, request: ListRequest) -> tuple[list[Entry], str | None]:
        self.pages += 1
        base = prefix.encode("utf-8")
        lo = bisect_left(self._keys, base)
        hi = bisect_left(self._keys, base + b"\xff")  # UTF-8 never holds 0xFF
        if request.start_offset is not None and not self.ignore_offsets:
            lo = max(lo, bisect_left(self._keys, base + request.start_offset.encode()))
        if request.end_offset is not None and not self.ignore_offsets:
            hi = min(hi, bisect_left(self._keys, base + request.end_offset.encode()))
        if request.page_token is not None:  # "after:<name>", so an empty page has a token too
            after = request.page_token.removeprefix("after:").encode()
            lo = max(lo, bisect_right(self._keys, after))
        size = request.max_results
        if self.short_pages is not None:
            size = self.short_pages.randint(0, size)  # Storage may return short pages
        keys = self._keys[lo : min(lo + size, hi)]
        entries = [self._relative(key.decode(), prefix) for key in keys]
        self.entries += len(entries)
        if lo + size >= hi:
            return entries, None
        last = keys[-1] if keys else self._keys[lo - 1] if lo else b""
        return entries, "after:" + last.decode()

    def _relative(self, name: str, prefix: str) -> Entry:
        entry = self._objects[name]
        return Entry(entry.path[len(prefix) :], *_fields(entry)[1:])


def _fields(entry: Entry) -> tuple[Any, ...]:
    return tuple(getattr(entry, name) for name in entry.__slots__)


def scan_run(
    bucket: FakeBucket, spec: Spec, start: str, *, prefix: str = PREFIX, exhaustive: bool = False
) -> Scan:
    scan = Scan(spec, start, MANIFEST, MARKER, exhaustive=exhaustive)
    while (request := scan.next_request()) is not None:
        scan.feed(*bucket.list(prefix, request))
    assert scan.result is not None
    return scan


def spec_of(*outputs: dict[str, Any]) -> Spec:
    return Spec.from_json({"workflow": "wf", "version": "1.0", "expected_outputs": list(outputs)})


def exact_spec(paths: list[str]) -> Spec:
    return spec_of(*({"path": path} for path in paths))


# -- the scale claim: ~1 list page per delivery -----------------------------------------------


@pytest.mark.parametrize(
    ("n", "seed"), [(10_000, 20261125), (1_000, 1), (1_000, 2), (100, 3), (10, 4), (2, 5), (1, 6)]
)
def test_sequential_run_costs_about_one_page_per_delivery(n: int, seed: int) -> None:
    rng = random.Random(seed)
    paths = [f"out/{i:05d}.bin" for i in range(n)]
    spec = exact_spec(paths)
    bucket = FakeBucket()
    bucket.write("wf/1.0/run-10/out/00000.bin")  # a sibling run sharing the name prefix
    order = paths[:]
    rng.shuffle(order)
    completed = []
    for index, path in enumerate(order):
        bucket.write(PREFIX + path)
        scan = scan_run(bucket, spec, path)
        if isinstance(scan.result, Complete):
            completed.append(index)
            assert len(scan.result.outputs) == n
        else:
            assert isinstance(scan.result, Incomplete)
            assert scan.result.missing is not None
    pages, entries = bucket.pages, bucket.entries
    print(f"N={n} seed={seed}: {pages} list pages ({pages / n:.3f}/delivery), {entries} entries")
    assert completed == [n - 1], f"seed={seed}: only the last delivery sees the whole run"
    slack = 0 if n >= 1000 else 10  # tiny runs pay the empty wrap-around page
    assert pages <= 1.2 * n + slack, f"seed={seed}: {pages} pages for {n} outputs"


@pytest.mark.parametrize("seed", range(8))
def test_concurrent_deliveries_complete_exactly_when_they_see_everything(seed: int) -> None:
    """Deliveries run late, duplicated and interleaved with writes: a delivery concludes
    Complete exactly when the whole set was present at its scan, and at least one does."""
    rng = random.Random(seed)
    paths = [f"p{i:03d}" for i in range(60)]
    spec = exact_spec(paths)
    bucket = FakeBucket(short_pages=random.Random(seed))
    written: set[str] = set()
    pending: list[str] = []
    completes = 0
    for path in rng.sample(paths, len(paths)):
        bucket.write(PREFIX + path)
        written.add(path)
        pending += [path] * rng.randint(1, 3)  # at-least-once: duplicates
        rng.shuffle(pending)
        while pending and rng.random() < 0.5:
            completes += _deliver(bucket, spec, pending.pop(), written, seed)
    while pending:
        completes += _deliver(bucket, spec, pending.pop(), written, seed)
    assert completes >= 1, f"seed={seed}"


def _deliver(bucket: FakeBucket, spec: Spec, path: str, written: set[str], seed: int) -> int:
    scan = scan_run(bucket, spec, path)
    complete = isinstance(scan.result, Complete)
    assert complete == (len(written) == len(spec.exact)), f"seed={seed} delivery of {path}"
    return int(complete)


def test_page_sizes_grow_geometrically_up_to_the_storage_maximum() -> None:
    spec = exact_spec([f"{i:05d}" for i in range(3000)])
    bucket = FakeBucket()
    for path in spec.required_paths:
        bucket.write(PREFIX + path)
    scan = Scan(spec, "01000", MANIFEST, MARKER)
    requests = []
    while (request := scan.next_request()) is not None:
        requests.append(request)
        scan.feed(*bucket.list(PREFIX, request))
    sizes = [request.max_results for request in requests]
    assert sizes[:6] == [FIRST_PAGE_SIZE, 32, 128, 512, MAX_PAGE_SIZE, MAX_PAGE_SIZE]
    assert isinstance(scan.result, Complete)
    # phase 1 from the delivery's own path, then the wrap-around up to it
    assert (requests[0].start_offset, requests[0].end_offset, requests[0].page_token) == (
        "01000",
        None,
        None,
    )
    assert all(r.start_offset == "01000" for r in requests if r.end_offset is None)
    wrapped = [r for r in requests if r.end_offset is not None]
    assert wrapped
    assert all((r.start_offset, r.end_offset) == (None, "01000") for r in wrapped)
    assert wrapped[0].page_token is None
    assert all(r.page_token for r in wrapped[1:])


def test_a_missing_neighbour_stops_the_scan_after_one_small_page() -> None:
    spec = exact_spec([f"{i:05d}" for i in range(5000)])
    bucket = FakeBucket()
    for path in spec.required_paths:
        if path != "00003":
            bucket.write(PREFIX + path)
    scan = scan_run(bucket, spec, "00000")
    assert scan.result == Incomplete(
        "expected output '00003' is not in the run folder yet", "00003"
    )
    assert (scan.pages, bucket.entries) == (1, FIRST_PAGE_SIZE)


def test_missing_at_the_end_of_the_folder_is_proven_by_the_listing_ending() -> None:
    bucket = FakeBucket()
    for path in ("a", "b"):
        bucket.write(PREFIX + path)
    result = scan_run(bucket, exact_spec(["a", "b", "c"]), "a").result
    assert isinstance(result, Incomplete)
    assert result.missing == "c"


def test_missing_before_the_start_is_found_by_the_wrap_around() -> None:
    bucket = FakeBucket()
    for path in ("b", "c"):
        bucket.write(PREFIX + path)
    result = scan_run(bucket, exact_spec(["a", "b", "c"]), "b").result
    assert isinstance(result, Incomplete)
    assert result.missing == "a"


# -- what counts -------------------------------------------------------------------------------


def folder(*paths: str, bucket: FakeBucket | None = None) -> FakeBucket:
    bucket = bucket or FakeBucket()
    for path in paths:
        bucket.write(PREFIX + path)
    return bucket


def outputs_of(result: Result | None) -> dict[str, str]:
    assert isinstance(result, Complete | Failed), result
    return {o.entry.path: next(iter(o.expected.label.values())) for o in result.outputs}


PATTERN_SPEC = spec_of({"path": "summary.json"}, {"pattern": "shards/part-*.csv", "count": 3})


@pytest.mark.parametrize(
    ("shards", "verdict", "reason"),
    [
        (2, Incomplete, "matched 2 objects, the spec expects exactly 3"),
        (3, Complete, None),
        (4, Incomplete, "matched 4 objects, the spec says exactly 3: delete the extra"),
    ],
)
def test_patterns_need_their_exact_count(shards: int, verdict: type, reason: str | None) -> None:
    bucket = folder("summary.json", *(f"shards/part-{i}.csv" for i in range(shards)))
    bucket.write(PREFIX + "shards/nested/part-9.csv")  # "*" does not cross "/": unexpected
    result = scan_run(bucket, PATTERN_SPEC, "shards/part-0.csv").result
    assert isinstance(result, verdict)
    if reason is not None:
        assert isinstance(result, Incomplete)
        assert reason in result.reason
        assert result.missing is None
    else:
        assert isinstance(result, Complete)
        assert outputs_of(result)["shards/part-1.csv"] == "shards/part-*.csv"
        assert [e.path for e in result.unexpected] == ["shards/nested/part-9.csv"]


def test_optional_outputs_never_block_and_are_listed_when_present() -> None:
    spec = spec_of(
        {"path": "a"},
        {"path": "log.txt", "required": False},
        {"pattern": "qc/*.html", "count": 5, "required": False},
    )
    assert isinstance(scan_run(folder("a"), spec, "a").result, Complete)
    result = scan_run(folder("a", "log.txt", "qc/1.html"), spec, "a").result
    assert outputs_of(result) == {"a": "a", "log.txt": "log.txt", "qc/1.html": "qc/*.html"}
    assert not affects_completeness(spec, "log.txt")
    assert not affects_completeness(spec, "qc/1.html")
    assert affects_completeness(spec, "a")
    assert not affects_completeness(spec, "zzz")
    assert affects_completeness(PATTERN_SPEC, "shards/part-7.csv")


def test_unexpected_objects_are_listed_and_never_block() -> None:
    bucket = folder("a", "b", "stray.tmp", "z/zz")
    result = scan_run(bucket, exact_spec(["a", "b"]), "stray.tmp").result
    assert isinstance(result, Complete)
    assert [e.path for e in result.unexpected] == ["stray.tmp", "z/zz"]


def test_tally_objects_are_neither_outputs_nor_unexpected() -> None:
    bucket = folder("a", MANIFEST, "_tally/outputs-1.json")
    scan = scan_run(bucket, exact_spec(["a"]), "a")
    assert isinstance(scan.result, Complete)
    assert outputs_of(scan.result) == {"a": "a"}
    assert scan.result.unexpected == ()
    wildcard = spec_of({"pattern": "*", "count": 1})  # would match output.json if counted
    assert isinstance(scan_run(bucket, wildcard, "a").result, Complete)


def test_failure_marker_delivery_lists_everything_and_fails_the_run() -> None:
    bucket = folder("a", "stray", MARKER)
    scan = scan_run(bucket, exact_spec(["a", "b", "c"]), MARKER)
    assert isinstance(scan.result, Failed)
    assert scan.result.marker.path == MARKER
    assert scan.result.missing == ("b", "c")
    assert outputs_of(scan.result) == {"a": "a"}
    assert [e.path for e in scan.result.unexpected] == ["stray"]


def test_failure_marker_wins_over_a_complete_run() -> None:
    bucket = folder("a", "b", MARKER)
    result = scan_run(bucket, exact_spec(["a", "b"]), "b").result
    assert isinstance(result, Failed)
    assert result.missing == ()


def test_an_output_delivery_stops_at_a_missing_path_even_when_the_marker_exists() -> None:
    bucket = folder("a", MARKER)
    assert isinstance(scan_run(bucket, exact_spec(["a", "b"]), "a").result, Incomplete)
    exhaustive = scan_run(bucket, exact_spec(["a", "b"]), "a", exhaustive=True).result
    assert isinstance(exhaustive, Failed)


def test_overwrites_report_the_latest_generation() -> None:
    bucket = folder("a", "b")
    bucket.write(PREFIX + "a")
    bucket.write(PREFIX + "a")
    result = scan_run(bucket, exact_spec(["a", "b"]), "a").result
    assert isinstance(result, Complete)
    assert {o.entry.path: o.entry.generation for o in result.outputs} == {"a": 3, "b": 1}


def test_a_deleted_output_makes_the_run_incomplete_again() -> None:
    bucket = folder("a", "b")
    bucket.delete(PREFIX + "b")
    assert isinstance(scan_run(bucket, exact_spec(["a", "b"]), "a").result, Incomplete)


ODD = [
    "résumé.txt",
    "re\u0301sume\u0301.txt",  # combining accents: another name
    "a b/c d",
    "#hash?query%25",
    "\uffff",  # in UTF-16 order this would sort after the emoji; in UTF-8 it sorts before
    "\U0001f600.png",
    "Z",
    "a",
    "a/",
    "a!",
    "数据/结果.csv",
    "\u00a0nbsp",
    "x" * 900,
]


@pytest.mark.parametrize("start", ODD)
def test_odd_unicode_names(start: str) -> None:
    spec = exact_spec(ODD)
    bucket = FakeBucket()
    for path in ODD:
        if path != start:
            bucket.write(PREFIX + path)
    result = scan_run(bucket, spec, start).result
    assert isinstance(result, Incomplete)
    assert result.missing == start  # everything else is there; found in the wrap-around
    bucket.write(PREFIX + start)
    assert isinstance(scan_run(bucket, spec, start).result, Complete)


def test_listings_that_ignore_offsets_still_decide_correctly() -> None:
    spec = exact_spec([f"{i:03d}" for i in range(50)])
    bucket = FakeBucket(ignore_offsets=True)
    for path in spec.required_paths[:-1]:
        bucket.write(PREFIX + path)
    result = scan_run(bucket, spec, "020").result
    assert isinstance(result, Incomplete)
    assert result.missing == "049"
    bucket.write(PREFIX + "049")
    assert isinstance(scan_run(bucket, spec, "020").result, Complete)


def test_empty_start_path_lists_in_one_phase() -> None:
    scan = scan_run(folder("a", "b"), exact_spec(["a", "b"]), "")
    assert isinstance(scan.result, Complete)


def test_spec_without_required_outputs_is_complete_once_listed() -> None:
    assert isinstance(scan_run(folder("x"), spec_of(), "x").result, Complete)


# -- misuse --------------------------------------------------------------------------------------


def test_out_of_order_listing_is_refused() -> None:
    scan = Scan(exact_spec(["a", "b"]), "a", MANIFEST, MARKER)
    with pytest.raises(ListingOrderError, match="lexicographic order"):
        scan.feed([Entry("a", 1), Entry("a", 1)], "token")
    scan = Scan(exact_spec(["a", "b"]), "", MANIFEST, MARKER, exhaustive=True)
    scan.feed([Entry("b", 1)], "token")
    with pytest.raises(ListingOrderError, match="lexicographic order"):
        scan.feed([Entry("a", 1)], None)


def test_feeding_a_finished_scan_is_refused() -> None:
    scan = Scan(exact_spec(["a"]), "", MANIFEST, MARKER)
    scan.feed([Entry("a", 1)], None)
    assert scan.next_request() is None
    with pytest.raises(RuntimeError, match="finished"):
        scan.feed([], None)


@pytest.mark.parametrize("reserved", [MANIFEST, MARKER, "_tally/x"])
def test_specs_requiring_reserved_names_are_refused(reserved: str) -> None:
    with pytest.raises(ValueError, match="reserves"):
        Scan(exact_spec(["a", reserved]), "a", MANIFEST, MARKER)


# -- the verdict equals the brute-force verdict ---------------------------------------------------


def brute_force(
    spec: Spec, present: set[str], start: str, exhaustive: bool
) -> tuple[type, str | None, set[str]]:
    """(verdict, first missing path in scan order or the pattern count problem, output paths),
    straight from the definition."""
    exhaustive = exhaustive or start == MARKER
    required = sorted(spec.required_paths)
    rotated = [p for p in required if p >= start] + [p for p in required if p < start]
    missing = [p for p in rotated if p not in present]
    candidates = {p for p in present if p not in (MANIFEST, MARKER) and not p.startswith("_tally/")}
    outputs = {p for p in candidates if spec.expects(p) is not None}
    counts = {
        pattern: sum(1 for p in outputs if spec.expects(p) is pattern)
        for pattern in spec.required_patterns
    }
    marker = MARKER in present
    if missing and not (exhaustive and marker):
        return Incomplete, missing[0], set()
    if marker:
        return Failed, None, outputs
    for pattern, count in counts.items():
        if count != pattern.count:
            return Incomplete, f"pattern {pattern.pattern!r} matched {count} objects", set()
    return Complete, None, outputs


NAMES = st.text(alphabet="ab/é😀 .", min_size=1, max_size=4)


@st.composite
def cases(draw: Any) -> tuple[Spec, set[str], str, bool, int, bool]:
    universe = draw(st.lists(NAMES, min_size=1, max_size=12, unique=True))
    relative = [name for name in universe if not name.startswith("/")]
    exact = draw(st.lists(st.sampled_from(relative), unique=True, max_size=8)) if relative else []
    outputs = [{"path": p, "required": draw(st.booleans())} for p in exact]
    for pattern in draw(st.lists(st.sampled_from(["*", "a*", "**/b", "?", "*/*"]), unique=True)):
        count = draw(st.integers(min_value=1, max_value=3))
        outputs.append({"pattern": pattern, "count": count, "required": draw(st.booleans())})
    spec = spec_of(*outputs)
    present = set(draw(st.lists(st.sampled_from([*universe, MANIFEST, MARKER, "_tally/o"]))))
    start = draw(st.sampled_from(sorted(present)) if present else NAMES)
    return (
        spec,
        present,
        start,
        draw(st.booleans()),
        draw(st.integers(0, 2**32)),
        draw(st.booleans()),
    )


@settings(derandomize=True, max_examples=400, deadline=None, print_blob=True)
@given(case=cases())
def test_scan_verdict_equals_brute_force(case: tuple[Spec, set[str], str, bool, int, bool]) -> None:
    spec, present, start, exhaustive, page_seed, ignore_offsets = case
    bucket = FakeBucket(short_pages=random.Random(page_seed), ignore_offsets=ignore_offsets)
    folder(*present, bucket=bucket)
    bucket.write("wf/1.0/run-1x/a")  # a sibling folder sharing the prefix text
    scan = scan_run(bucket, spec, start, exhaustive=exhaustive)
    verdict, missing, outputs = brute_force(spec, present, start, exhaustive)
    assert type(scan.result) is verdict
    if isinstance(scan.result, Incomplete) and scan.result.missing is not None:
        assert scan.result.missing == missing
    elif isinstance(scan.result, Incomplete):
        assert missing is not None
        assert scan.result.reason.startswith(missing)
    else:
        assert isinstance(scan.result, Complete | Failed)
        listed = [output.entry.path for output in scan.result.outputs]
        assert listed == sorted(outputs, key=lambda path: path.encode("utf-8"))


def test_the_write_rate_of_a_listing_comes_from_its_objects_creation_times() -> None:
    from tally_handler.completeness import write_rate

    def entry(i: int, created: str | None) -> Entry:
        return Entry(f"s/{i}", 1, time_created=created)

    times = [f"2026-12-01T00:00:{s:02d}.000Z" for s in (0, 1, 2, 4)]
    assert write_rate([entry(i, t) for i, t in enumerate(times)]) == 0.75  # 3 gaps in 4 s
    assert write_rate([entry(0, times[0])]) is None  # one object: no rate
    assert write_rate([entry(0, times[0]), entry(1, times[0])]) is None  # no time between
    assert write_rate([entry(0, None), entry(1, "not a time"), entry(2, times[0])]) is None
    # 100 objects in the first second, then one every 2 s for 40 s: 10 missing may take 20 s
    # (the latest writes' pace, over 16 of them at least), not the whole span's 3 s (120
    # objects in 40 s): a gate trusting that would list again far too soon
    burst = [f"2026-12-01T00:00:00.{i * 10:03d}Z" for i in range(100)]
    trickle = [f"2026-12-01T00:00:{s:02d}.000Z" for s in range(2, 42, 2)]
    listed = [entry(i, t) for i, t in enumerate(burst + trickle)]
    assert write_rate(listed, newest=10) == 0.5
    assert write_rate(listed, newest=1) == 0.5  # the newest 16
    assert write_rate(listed) == pytest.approx(119 / 40)  # all of them
