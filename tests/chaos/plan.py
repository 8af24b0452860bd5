"""The chaos run's plan: everything a seed decides, made before anything is written.

Workflow versions (their specs), runs (which objects each writes, in which order, how often each
notification is duplicated, which runs fail, stay incomplete or lose their last notification),
malformed messages and outage windows all come from one ``random.Random(seed)``, and so do the
real faults (issue 13): SIGKILLs of handler instances, outputs rewritten or deleted before and
after completion, late optional outputs, deleted and edited manifests, foreign `output.json`
objects, outages longer than the push retry span, versions registered after their outputs landed.
Only timing (which delivery a fault, a kill or an outage catches) depends on the machine: the
report says what happened.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

FAILURE_MARKER = "_FAILED"
SHARD_PREFIX = "shards/part-"
SHARD_SUFFIX = ".parquet"
SHARD_PATTERN = f"{SHARD_PREFIX}*{SHARD_SUFFIX}"
WORKFLOW_NAMES = ("align", "call", "quant")
MAX_OUTPUTS = 50


class RunKind(StrEnum):
    COMPLETE = "complete"  # every output written: announced COMPLETE
    FAILED = "failed"  # some outputs, then the failure marker: announced FAILED
    INCOMPLETE = "incomplete"  # an output missing, or one shard too many: never announced


class Target(StrEnum):
    REGISTRY = "registry"
    BIGQUERY = "bigquery"


class After(StrEnum):
    """A change to a complete run once its closer is written (the workflow, or a user, again)."""

    REWRITE = "rewrite"  # an expected output written again (new generation)
    DELETE_REWRITE = "delete-rewrite"  # an expected output deleted, written again a little later
    LATE_OPTIONAL = "late-optional"  # the optional output, not written before, added late
    DELETE_OPTIONAL = "delete-optional"  # the optional output, written before, deleted
    LATE_UNEXPECTED = "late-unexpected"  # an object the spec does not expect (no revision)
    DELETE_MANIFEST = "delete-manifest"  # a user deletes output.json once it is there
    EDIT_MANIFEST = "edit-manifest"  # a user edits output.json once it is there

    @property
    def changes_outputs(self) -> bool:
        """Whether it may cause a new revision (one at most: a rewrite after a deletion makes
        the run complete again once)."""
        return self in (
            After.REWRITE,
            After.DELETE_REWRITE,
            After.LATE_OPTIONAL,
            After.DELETE_OPTIONAL,
        )

    @property
    def on_manifest(self) -> bool:
        return self in (After.DELETE_MANIFEST, After.EDIT_MANIFEST)


@dataclass(frozen=True)
class PostAction:
    kind: After
    path: str  # the run-relative object it touches
    wait_announced: bool  # after the run's announcement is seen (else right after the closer)
    delay: float  # seconds after that moment
    gap: float = 0.0  # DELETE_REWRITE: seconds between the deletion and the rewrite


class KillKind(StrEnum):
    AT_RANDOM = "at-random"  # SIGKILL one instance at a seeded moment of a wave
    AFTER_PUBLISH = "after-publish"  # SIGKILL the busy instances as a completion appears


@dataclass(frozen=True)
class Kill:
    kind: KillKind
    wave: int  # AT_RANDOM: the wave it happens in
    delay: float  # AT_RANDOM: seconds after the wave starts
    slot: int  # AT_RANDOM: which instance (modulo the instances serving)
    nth: int  # AFTER_PUBLISH: the nth completion message of the storm triggers it


@dataclass(frozen=True)
class LongOutage:
    """An outage longer than the push retry span: messages are dead-lettered (replayed in the
    repair). It opens as its wave starts and closes once a message was dead-lettered during it,
    at the earliest after the retry span, at the latest after `cap` seconds. A registry outage
    starts with a SIGKILL of every serving instance: the instances that take over have cold
    spec caches, so every delivery needs the registry."""

    target: Target
    wave: int
    cap: float


@dataclass(frozen=True)
class VersionPlan:
    workflow: str
    version: str
    exact: tuple[str, ...]  # required exact paths
    shards: int  # required count of SHARD_PATTERN (0: no pattern)
    optional: tuple[str, ...]  # optional exact paths
    late: bool = False  # registered only after its runs' outputs landed

    @property
    def size(self) -> int:
        return len(self.exact) + self.shards + len(self.optional)

    def shard_paths(self, count: int | None = None) -> list[str]:
        return [f"{SHARD_PREFIX}{i:05d}{SHARD_SUFFIX}" for i in range(count or self.shards)]

    def required_paths(self) -> list[str]:
        return [*self.exact, *self.shard_paths()]

    def spec(self) -> dict[str, Any]:
        outputs: list[dict[str, Any]] = [{"path": p} for p in self.exact]
        if self.shards:
            outputs.append({"pattern": SHARD_PATTERN, "count": self.shards})
        outputs += [{"path": p, "required": False} for p in self.optional]
        return {
            "workflow": self.workflow,
            "version": self.version,
            "description": f"chaos: {len(self.exact)} exact, {self.shards} shards",
            "expected_outputs": outputs,
        }

    def expects(self, path: str) -> bool:
        """Independent of the handler's glob code: '*' never crosses '/'."""
        if path in self.exact or path in self.optional:
            return True
        middle = path[len(SHARD_PREFIX) : -len(SHARD_SUFFIX)]
        return (
            self.shards > 0
            and path.startswith(SHARD_PREFIX)
            and path.endswith(SHARD_SUFFIX)
            and "/" not in middle
        )

    def is_shard(self, path: str) -> bool:
        return self.expects(path) and path.startswith(SHARD_PREFIX)


@dataclass
class RunPlan:
    index: int
    version: VersionPlan
    run_id: str
    kind: RunKind
    wave: int
    writes: list[str]  # paths written once, in a shuffled order, before the closer
    overwrites: list[str]  # paths written a second time (new generation), before the closer
    closer: str | None  # written last, once every other write of the run is done
    suppressed: bool = False  # every notification of the closer is dropped (never sent)
    marker_text: str = ""
    copies: dict[str, int] = field(default_factory=dict)  # object path -> extra publishes (0-2)
    pre_deletes: list[str] = field(default_factory=list)  # deleted, then written again, before
    post: list[PostAction] = field(default_factory=list)  # after the closer (complete runs)
    foreign_manifest: bool = False  # the workflow writes its own output.json (moved in repair)

    @property
    def output_changes(self) -> int:
        """Changes after completion that may each cause one more revision."""
        return sum(1 for a in self.post if a.kind.changes_outputs)

    @property
    def prefix_parts(self) -> tuple[str, str, str]:
        return (self.version.workflow, self.version.version, self.run_id)

    def prefix(self) -> str:
        return "/".join(self.prefix_parts) + "/"

    def all_paths(self) -> list[str]:
        return self.writes + ([self.closer] if self.closer else [])

    @property
    def writes_count(self) -> int:
        return len(self.all_paths()) + len(self.overwrites)


@dataclass(frozen=True)
class Malformed:
    tag: str
    case: str
    data: bytes
    attributes: dict[str, str]


@dataclass(frozen=True)
class Window:
    target: Target
    wave: int
    delay: float  # seconds after the wave starts (registry windows: when triggered)
    duration: float


@dataclass
class Plan:
    seed: int
    token: str  # unique per platform session: names never collide with earlier runs
    versions: list[VersionPlan]
    runs: list[RunPlan]
    malformed: dict[int, list[Malformed]]  # wave -> messages
    windows: list[Window]
    waves: int
    duplicate_deferred: dict[tuple[int, str], bool]  # (run, path): duplicates sent a wave later
    kills: list[Kill] = field(default_factory=list)
    long_outages: list[LongOutage] = field(default_factory=list)

    @property
    def root(self) -> str:
        return f"chaos-{self.token}-"

    def runs_in_wave(self, wave: int) -> list[RunPlan]:
        return [r for r in self.runs if r.wave == wave]

    def first_runs(self) -> set[int]:
        """The first run of each version: the deliveries that need the registry."""
        first: dict[str, int] = {}
        for run in self.runs:
            if run.version.late:
                continue  # unknown to the registry when its notifications arrive
            first.setdefault(run.version.workflow + "/" + run.version.version, run.index)
        return set(first.values())

    def late_versions(self, wave: int | None = None) -> list[VersionPlan]:
        """Versions registered after their outputs landed (those whose runs are in `wave`)."""
        found: dict[tuple[str, str], VersionPlan] = {}
        for run in self.runs:
            if run.version.late and (wave is None or run.wave == wave):
                found[(run.version.workflow, run.version.version)] = run.version
        return list(found.values())

    def all_versions(self) -> list[VersionPlan]:
        return [*self.versions, *self.late_versions()]

    def workflows(self) -> list[str]:
        return sorted({v.workflow for v in self.all_versions()})

    def registry_waves(self) -> set[int]:
        return {w.wave for w in self.windows if w.target is Target.REGISTRY}

    def all_malformed(self) -> list[Malformed]:
        return [m for wave in sorted(self.malformed) for m in self.malformed[wave]]


def _size(rng: random.Random) -> int:
    """1 to 50 outputs, skewed towards small runs (mean about 9), as real workflows are."""
    return 1 + int((MAX_OUTPUTS - 1) * rng.random() ** 5)


def _version(rng: random.Random, workflow: str, version: str, size: int, style: str) -> VersionPlan:
    optional: tuple[str, ...] = ()
    if style != "exact" and size >= 3:
        optional = ("logs/stderr.txt",)
    room = size - len(optional)
    shards = 0
    if style == "sharded" and room >= 2:
        shards = rng.randint(1, max(1, room - 1))
    folders = ("", "qc/", "calls/", "deep/nested/dir/")
    exact = tuple(
        sorted(
            f"{rng.choice(folders)}out-{i:03d}.{rng.choice(('txt', 'bam', 'tsv'))}"
            for i in range(room - shards)
        )
    )
    return VersionPlan(workflow, version, exact, shards, optional)


def make_versions(rng: random.Random, token: str, count: int) -> list[VersionPlan]:
    """Exact-only, sharded and mixed versions (the first three in that order, with 5 to 30
    outputs), one of 1 output and one of 50; the others sized like runs, in a seeded order."""
    styles = ("exact", "sharded", "mixed")
    sizes = [rng.randint(5, 30) for _ in range(3)] + [1, MAX_OUTPUTS]
    sizes += [_size(rng) for _ in range(count - len(sizes))]
    tail = sizes[3:]
    rng.shuffle(tail)
    sizes = sizes[:3] + tail
    per_workflow: dict[str, int] = {}
    versions = []
    for i, size in enumerate(sizes):
        name = f"chaos-{token}-{WORKFLOW_NAMES[i % len(WORKFLOW_NAMES)]}"
        minor = per_workflow.get(name, 0)
        per_workflow[name] = minor + 1
        style = styles[i] if i < 3 else rng.choice(styles)
        versions.append(_version(rng, name, f"1.{minor}.0", size, style))
    return versions


def quota(rng: random.Random, n: int, share: float, least: int) -> list[bool]:
    """n flags, max(least, share * n) of them set, in a seeded order: small runs get some too."""
    chosen = min(n, max(least, round(share * n)))
    flags = [True] * chosen + [False] * (n - chosen)
    rng.shuffle(flags)
    return flags


def run_kinds(rng: random.Random, n: int) -> list[RunKind]:
    """8 % failed (at least 3), 4 % incomplete (at least 2), the rest complete."""
    failed = min(n, max(3, round(0.08 * n)))
    incomplete = min(n - failed, max(2, round(0.04 * n)))
    kinds = [RunKind.FAILED] * failed + [RunKind.INCOMPLETE] * incomplete
    kinds += [RunKind.COMPLETE] * (n - len(kinds))
    rng.shuffle(kinds)
    return kinds


def _complete_writes(rng: random.Random, v: VersionPlan) -> tuple[list[str], str]:
    optional = [p for p in v.optional if rng.random() < 0.7]
    required = v.required_paths()
    rng.shuffle(required)
    closer = required.pop()
    writes = required + optional
    rng.shuffle(writes)
    return writes, closer


def _failed_writes(rng: random.Random, v: VersionPlan) -> tuple[list[str], str]:
    required = v.required_paths()
    keep = rng.randint(0, len(required) - 1)  # at least one required output is missing
    writes = rng.sample(required, keep)
    return writes, FAILURE_MARKER


def _incomplete_writes(rng: random.Random, v: VersionPlan) -> tuple[list[str], str | None]:
    """A required output never written, or one shard more than the spec's exact count.

    The extra shard is written with the others before the closer, an exact path: a pattern
    counts objects, not names, so the run must never hold an exact path set and exactly `count`
    shards at any moment (it would be complete then, and rightly announced)."""
    required = v.required_paths()
    rng.shuffle(required)
    if v.shards and v.exact and rng.random() < 0.5:
        closer = rng.choice(v.exact)
        writes = [p for p in required if p != closer] + [v.shard_paths(v.shards + 1)[-1]]
        rng.shuffle(writes)
        return writes, closer
    required.pop()  # never written
    if not required:  # a one-output version: the run holds only an unexpected object
        required = ["extra/partial.txt"]
    return required, None


Duplicates = tuple[int, int, int]  # weights of 0, 1 and 2 extra publishes of a notification
DUPLICATES: Duplicates = (65, 22, 13)  # about one extra publish per two notifications


@dataclass(frozen=True)
class Extras:
    overwrite: bool
    unexpected: bool
    suppress: bool


def make_run(
    rng: random.Random,
    index: int,
    version: VersionPlan,
    wave: int,
    kind: RunKind,
    extras: Extras,
    duplicates: Duplicates = DUPLICATES,
) -> RunPlan:
    if kind is RunKind.FAILED:
        writes, closer = _failed_writes(rng, version)
    elif kind is RunKind.INCOMPLETE:
        writes, closer = _incomplete_writes(rng, version)
    else:
        writes, closer = _complete_writes(rng, version)
    run = RunPlan(index, version, f"run-{index:05d}", kind, wave, writes, [], closer)
    if writes and extras.overwrite:
        run.overwrites = rng.sample(writes, min(len(writes), rng.randint(1, 2)))
    if extras.unexpected:
        run.writes.insert(rng.randint(0, len(run.writes)), f"extra/unexpected-{index}.txt")
    run.suppressed = extras.suppress and closer is not None and kind is not RunKind.INCOMPLETE
    if kind is RunKind.FAILED:
        run.marker_text = f"chaos: step {rng.randint(1, 9)} of run {index} ran out of memory"
    for path in run.all_paths():
        run.copies[path] = rng.choices((0, 1, 2), weights=duplicates)[0]
    return run


def malformed_messages(rng: random.Random, token: str, count: int) -> list[Malformed]:
    """Bad messages on object-events: each must be logged `rejected` under its message id."""
    cases: list[tuple[str, bytes, dict[str, str]]] = [
        ("data is not JSON", b"<xml>not json</xml>", {"payloadFormat": "JSON_API_V1"}),
        ("no attributes", b"", {}),
        ("data is a JSON array", b"[1, 2, 3]", {"payloadFormat": "JSON_API_V1"}),
        (
            "generation is not a number",
            b'{"bucket": "tally-outputs", "name": "x/1/r/a", "generation": "soon"}',
            {"payloadFormat": "JSON_API_V1", "eventType": "OBJECT_FINALIZE"},
        ),
        (
            "unknown event type",
            b"",
            {
                "payloadFormat": "NONE",
                "eventType": "OBJECT_EXPLODED",
                "bucketId": "tally-outputs",
                "objectId": "x/1/r/a",
                "objectGeneration": "1",
            },
        ),
        (
            "bucket disagrees with its attribute",
            b'{"bucket": "elsewhere", "name": "x/1/r/a", "generation": "1"}',
            {
                "payloadFormat": "JSON_API_V1",
                "eventType": "OBJECT_FINALIZE",
                "bucketId": "tally-outputs",
            },
        ),
        ("unknown request", b"{}", {"tally-request": "explode"}),
        ("unsupported payload format", b"{}", {"payloadFormat": "XML_V9"}),
        (
            "event time is not a time",
            b"",
            {
                "payloadFormat": "NONE",
                "eventType": "OBJECT_FINALIZE",
                "bucketId": "tally-outputs",
                "objectId": "x/1/r/a",
                "objectGeneration": "1",
                "eventTime": "yesterday",
            },
        ),
    ]
    messages = []
    for i in range(count):
        name, data, attributes = cases[i % len(cases)] if i < len(cases) else rng.choice(cases)
        tag = f"{token}-{i}"
        messages.append(Malformed(tag, name, data, {**attributes, "chaos-malformed": tag}))
    return messages


def make_windows(
    rng: random.Random, waves: int, intro_waves: list[int], count: int
) -> list[Window]:
    """Outage windows, each at a seeded offset after the start of its wave.

    Registry windows (0.5 to 1.5 s) open in waves that introduce a workflow version, when the
    bridge starts delivering the new version's first notification (the storm triggers them):
    the handler caches specs, so only a version's first deliveries need the registry. Five
    attempts span about a second, so those deliveries are deferred, and the longer windows
    dead-letter some (replayed after the storm, as an operator would). BigQuery windows, in
    seeded waves: two thirds short (0.5 to 3 s: the handler's client retries inside its 8 s
    deadline), one third long (8.5 to 10 s: inserts fail past the deadline, deliveries are
    refused and redelivered)."""
    windows = []
    for wave in sorted(set(intro_waves))[:count]:
        delay, duration = 0.0, rng.uniform(0.5, 1.5)
        windows.append(Window(Target.REGISTRY, wave, round(delay, 2), round(duration, 2)))
    for i in range(count):
        wave = rng.randrange(waves)
        if i % 3 == 2:
            delay, duration = rng.uniform(0.0, 3.0), rng.uniform(8.5, 10.0)
        else:
            delay, duration = rng.uniform(0.0, 3.0), rng.uniform(0.5, 3.0)
        windows.append(Window(Target.BIGQUERY, wave, round(delay, 2), round(duration, 2)))
    return windows


def _closest(rng: random.Random, known: list[VersionPlan]) -> VersionPlan:
    """A known version whose size is closest to a size drawn like a run's."""
    target = _size(rng)
    best = min(abs(v.size - target) for v in known)
    return rng.choice([v for v in known if abs(v.size - target) == best])


def make_plan(seed: int, runs: int, token: str, duplicates: Duplicates = DUPLICATES) -> Plan:
    rng = random.Random(seed)
    wave_size = max(10, runs // 20)
    waves = max(1, -(-runs // wave_size))
    versions = make_versions(rng, token, max(5, min(40, runs // 25)))
    intro = [(i * waves) // len(versions) for i in range(len(versions))]
    kinds = run_kinds(rng, runs)
    extras = [
        Extras(*flags)
        for flags in zip(
            quota(rng, runs, 0.15, 3),
            quota(rng, runs, 0.08, 2),
            quota(rng, runs, 0.05, 3),
            strict=True,
        )
    ]
    plan_runs: list[RunPlan] = []
    for wave in range(waves):
        fresh = [v for i, v in enumerate(versions) if intro[i] == wave]
        known = [v for i, v in enumerate(versions) if intro[i] <= wave]
        for slot in range(min(wave_size, runs - len(plan_runs))):
            # A version's first run lands in the wave that introduces it, first in that wave:
            # its first deliveries need the registry (the handler caches specs).
            version = fresh[slot] if slot < len(fresh) else _closest(rng, known)
            index = len(plan_runs)
            run = make_run(rng, index, version, wave, kinds[index], extras[index], duplicates)
            plan_runs.append(run)
    malformed_all = malformed_messages(rng, token, max(9, runs // 50))
    malformed: dict[int, list[Malformed]] = {}
    for message in malformed_all:
        malformed.setdefault(rng.randrange(waves), []).append(message)
    deferred = {
        (run.index, path): rng.random() < 0.5 for run in plan_runs for path in run.all_paths()
    }
    windows = make_windows(rng, waves, intro, max(3, waves // 2))
    plan = Plan(seed, token, versions, plan_runs, malformed, windows, waves, deferred)
    # The real faults draw from their own generator: the plan above is the one earlier seeds made.
    add_real_faults(random.Random(f"{seed}/real-faults"), plan, intro)
    return plan


# -- real faults (issue 13) ------------------------------------------------------------------------
MANIFEST_NAME = "output.json"
FOREIGN_MANIFEST = b'{"workflow": "its own summary", "note": "not a tally manifest"}\n'
MOVED_MANIFEST = "moved-away/output.json"  # where the repair moves a foreign output.json


def _plain(run: RunPlan, first_runs: set[int]) -> bool:
    """A complete run with nothing special yet: it may take one real fault."""
    return (
        run.kind is RunKind.COMPLETE
        and not run.suppressed
        and not run.post
        and not run.foreign_manifest
        and not run.version.late
        and run.index not in first_runs
    )


def _post_action(rng: random.Random, run: RunPlan, kind: After) -> PostAction | None:
    version = run.version
    written_optional = [p for p in version.optional if p in run.writes]
    unwritten_optional = [p for p in version.optional if p not in run.writes]
    required = [p for p in run.all_paths() if p in version.required_paths()]
    path: str | None
    if kind is After.REWRITE or kind is After.DELETE_REWRITE:
        path = rng.choice(required) if required else None
    elif kind is After.LATE_OPTIONAL:
        path = unwritten_optional[0] if unwritten_optional else None
    elif kind is After.DELETE_OPTIONAL:
        path = written_optional[0] if written_optional else None
    elif kind is After.LATE_UNEXPECTED:
        path = f"extra/late-{run.index}.txt"
    else:
        path = MANIFEST_NAME
    if path is None:
        return None
    # Manifest edits need the manifest; output changes race the announcement half the time.
    wait = kind.on_manifest or rng.random() < 0.5
    return PostAction(
        kind, path, wait, round(rng.uniform(0.0, 1.5), 2), round(rng.uniform(0.3, 2.5), 2)
    )


def add_real_faults(rng: random.Random, plan: Plan, intro: list[int]) -> None:
    runs, waves = plan.runs, plan.waves
    first = plan.first_runs()
    n = len(runs)
    # Deleted and written again before completion (the run completes with the new generation).
    for run in runs:
        if run.kind is not RunKind.INCOMPLETE and run.writes and rng.random() < 0.06:
            candidates = [p for p in run.writes if p not in run.overwrites]
            if candidates:
                run.pre_deletes = [rng.choice(candidates)]
    # Changes after completion: every kind at least once, then in a seeded mix.
    kinds = list(After)
    wanted = max(len(kinds) + 3, round(0.15 * n))
    plain = [r for r in runs if _plain(r, first)]
    rng.shuffle(plain)
    i = 0
    for run in plain:
        if i >= wanted:
            break
        kind = kinds[i % len(kinds)] if i < 2 * len(kinds) else rng.choice(kinds)
        action = _post_action(rng, run, kind)
        if action is None:
            continue
        run.post.append(action)
        if rng.random() < 0.25:  # a second change, of another kind, to some of them
            second = _post_action(rng, run, rng.choice(kinds))
            if second is not None and second.path != action.path:
                run.post.append(second)
        i += 1
    # Foreign output.json: written by the workflow among its outputs; moved away in the repair.
    plain = [r for r in runs if _plain(r, first)]
    for run in rng.sample(plain, min(len(plain), max(2, round(0.02 * n)))):
        run.foreign_manifest = True
        run.writes.insert(rng.randint(0, len(run.writes)), MANIFEST_NAME)
    # Versions registered after their outputs landed: a few runs each get a version of their own.
    plain = [r for r in runs if _plain(r, first) or (r.kind is RunKind.FAILED and not r.suppressed)]
    plain = [r for r in plain if r.index not in first and not r.post and not r.foreign_manifest]
    for k, run in enumerate(rng.sample(plain, min(len(plain), max(2, n // 150)))):
        version = run.version
        run.version = VersionPlan(
            version.workflow, f"9.{k}.0", version.exact, version.shards, version.optional, True
        )
    # SIGKILLs: at seeded moments, and as completions are published (between publish and mark).
    kills = [
        Kill(KillKind.AT_RANDOM, rng.randrange(waves), round(rng.uniform(0.2, 4.0), 2), k, 0)
        for k in range(max(3, n // 60))
    ]
    announced = sum(1 for r in runs if r.kind is not RunKind.INCOMPLETE)
    for nth in sorted(rng.sample(range(1, max(3, announced)), min(max(2, n // 120), announced))):
        kills.append(Kill(KillKind.AFTER_PUBLISH, 0, 0.0, 0, nth))
    plan.kills = kills
    # Outages longer than the retry span: a registry one as a new version arrives, and BigQuery.
    fresh_waves = sorted({w for w in intro if w > 0}) or [0]
    used = {w.wave for w in plan.windows if w.target is Target.REGISTRY}
    free = [w for w in fresh_waves if w not in used] or fresh_waves
    long_registry = rng.sample(free, min(len(free), max(1, waves // 10)))
    plan.long_outages = [LongOutage(Target.REGISTRY, w, 30.0) for w in sorted(long_registry)]
    long_bigquery = rng.sample(range(waves), min(waves, max(1, waves // 10)))
    plan.long_outages += [LongOutage(Target.BIGQUERY, w, 120.0) for w in sorted(long_bigquery)]
